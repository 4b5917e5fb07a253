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

    /// Decodes a frame body.
    ///
    /// - Throws: ``WireError`` with `MALFORMED_JSON` for bytes that are not JSON (or not UTF-8), or
    ///   `INVALID_REQUEST` naming the field for JSON of the wrong shape.
    public static func decode<Body: Decodable>(_ type: Body.Type, from buffer: ByteBuffer) throws(WireError) -> Body {
        if let scannable = Body.self as? any JSONScannable.Type,
            let value = buffer.withUnsafeReadableBytes({ scannable.scan(bytes: $0) }) as? Body
        {
            return value
        }
        // An empty body means `{}`.
        let bytes = buffer.readableBytes == 0 ? Data("{}".utf8) : Data(buffer.readableBytesView)
        do {
            return try JSONDecoder().decode(type, from: bytes)
        } catch let error as DecodingError {
            guard (try? JSONSerialization.jsonObject(with: bytes, options: [.fragmentsAllowed])) != nil else {
                throw WireError(.malformedJSON, "the body is not valid JSON")
            }
            if case .dataCorrupted(let context) = error, context.codingPath.isEmpty {
                // Foundation reports a number that does not fit the field's integer type without a path.
                // Every number in this protocol is an integer, so the first other number is the culprit.
                let path = Self.firstNonInteger(in: try? JSONSerialization.jsonObject(with: bytes, options: [.fragmentsAllowed]), path: "")
                throw WireError(.invalidRequest, "field '\(path ?? "(body)")' must be an integer (amounts are integer minor units)")
            }
            throw Self.describe(error)
        } catch let error as WireError {
            throw error
        } catch {
            throw WireError(.malformedJSON, "the body is not valid JSON")
        }
    }

    private static func firstNonInteger(in value: Any?, path: String) -> String? {
        switch value {
        case let object as [String: Any]:
            for key in object.keys.sorted() {
                if let found = Self.firstNonInteger(in: object[key], path: path.isEmpty ? key : "\(path).\(key)") { return found }
            }
            return nil
        case let array as [Any]:
            for (index, element) in array.enumerated() {
                if let found = Self.firstNonInteger(in: element, path: "\(path)[\(index)]") { return found }
            }
            return nil
        case let number as NSNumber:
            return Int64(exactly: number.doubleValue) == nil || number.stringValue.contains(".") || number.stringValue.contains("e") ? path : nil
        default:
            return nil
        }
    }

    static func describe(_ error: DecodingError) -> WireError {
        func path(_ context: DecodingError.Context, appending key: (any CodingKey)? = nil) -> String {
            let keys = context.codingPath + (key.map { [$0] } ?? [])
            let rendered = keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return rendered.hasPrefix(".") ? String(rendered.dropFirst()) : (rendered.isEmpty ? "(body)" : rendered)
        }
        switch error {
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            return WireError(.malformedJSON, "the body is not valid JSON")
        case .dataCorrupted(let context):
            return WireError(.invalidRequest, "field '\(path(context))': \(context.debugDescription)")
        case .keyNotFound(let key, let context):
            return WireError(.invalidRequest, "field '\(path(context, appending: key))' is required")
        case .typeMismatch(let expected, let context):
            return WireError(.invalidRequest, "field '\(path(context))' must be \(Self.name(of: expected))")
        case .valueNotFound(let expected, let context):
            return WireError(.invalidRequest, "field '\(path(context))' must be \(Self.name(of: expected)), not null")
        @unknown default:
            return WireError(.invalidRequest, "the body does not have the expected shape")
        }
    }

    private static func name(of type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type, is UInt32.Type, is UInt64.Type, is Int32.Type: "an integer"
        case is Bool.Type: "true or false"
        case is [Any].Type: "an array"
        default: type == [String: Any].self ? "an object" : "of type \(type)"
        }
    }
}

/// Validation of decoded bodies: each request type checks its own values after decoding.
public protocol ValidatedRequest: Decodable, Sendable {
    /// - Throws: ``WireError`` with `INVALID_REQUEST` and a sentence naming the field.
    func validate() throws(WireError)
}
