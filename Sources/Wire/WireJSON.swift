import CanonicalJSON
import Foundation
import NIOCore

/// JSON bodies in and out of frames, with decoding failures turned into stable codes.
public enum WireJSON {
    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// Encodes `value` as a frame body: bodies that write their own canonical JSON do so (the same bytes,
    /// without Foundation's encoder); the rest go through `JSONEncoder`.
    public static func encode(_ value: some Encodable) -> ByteBuffer {
        if let canonical = value as? any CanonicalJSONEncodable {
            return ByteBuffer(bytes: canonical.canonicalJSONBytes)
        }
        do {
            return ByteBuffer(bytes: try Self.encoder.encode(value))
        } catch {
            // Every body type is plain data; failing to encode one is a programming error.
            preconditionFailure("cannot encode \(type(of: value)): \(error)")
        }
    }

    /// Decodes a frame body strictly (docs/protocol.md, "Parsing rules"): I-JSON only, every member once,
    /// integers from their digits, no member the body type does not define.
    ///
    /// The authorize request and its answer are first tried by their fast scanners, which accept only a
    /// subset of what the strict decoder accepts and read it to the same value (WireTests compare the two);
    /// everything else, and every refusal, comes from ``StrictJSONDecoder``.
    ///
    /// - Parameters:
    ///   - allowingUnknownMembers: `true` only for answers a newer server may extend; requests never.
    /// - Throws: ``WireError`` with `MALFORMED_JSON` for bytes that are not I-JSON, or `INVALID_REQUEST`
    ///   naming the field for anything else refused.
    public static func decode<Body: Decodable>(_ type: Body.Type, from buffer: ByteBuffer, allowingUnknownMembers: Bool = false) throws(WireError) -> Body {
        // An empty body means `{}`.
        guard buffer.readableBytes > 0 else { return try Self.decode(type, from: ByteBuffer(string: "{}")) }
        let decoder = StrictJSONDecoder(allowsUnknownMembers: allowingUnknownMembers)
        let result: Result<Body, StrictJSONError> = buffer.withUnsafeReadableBytes { bytes in
            if let scannable = Body.self as? any JSONScannable.Type, let value = scannable.scan(bytes: bytes) as? Body {
                return .success(value)
            }
            do throws(StrictJSONError) {
                return .success(try decoder.decode(type, from: bytes))
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let value):
            return value
        case .failure(let error):
            throw error.wireError
        }
    }
}

/// Validation of decoded bodies: each request type checks its own values after decoding.
public protocol ValidatedRequest: Decodable, Sendable {
    /// - Throws: ``WireError`` with `INVALID_REQUEST` and a sentence naming the field.
    func validate() throws(WireError)
}
