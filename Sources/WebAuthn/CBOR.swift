/// A CBOR value (RFC 8949): the part WebAuthn uses (attestation objects, COSE keys, extensions).
///
/// Read strictly: definite lengths only, no tags, no floating-point values, no duplicate map keys, at most 16
/// levels deep, at most 64 elements in an array or pairs in a map (WebAuthn's structures are small; a bound keeps a
/// hostile map's duplicate check cheap), and never a length beyond the bytes there are. Anything else is
/// ``CBORError``, never a guess.
public indirect enum CBOR: Sendable, Hashable {
    case unsigned(UInt64)
    /// The value `-1 - n`.
    case negative(UInt64)
    case bytes([UInt8])
    case text(String)
    case array([CBOR])
    /// Pairs in the order they were encoded.
    case map([Pair])
    case bool(Bool)
    case null

    public struct Pair: Sendable, Hashable {
        public var key: CBOR
        public var value: CBOR
    }

    /// The integer value, if it is one that fits.
    public var integer: Int64? {
        switch self {
        case .unsigned(let value): value <= UInt64(Int64.max) ? Int64(value) : nil
        case .negative(let value): value <= UInt64(Int64.max) ? -1 - Int64(value) : nil
        default: nil
        }
    }

    /// The value under `key` in a map.
    public subscript(key: CBOR) -> CBOR? {
        guard case .map(let pairs) = self else { return nil }
        return pairs.first { $0.key == key }?.value
    }

    public subscript(key: Int64) -> CBOR? {
        self[key >= 0 ? .unsigned(UInt64(key)) : .negative(UInt64(-1 - key))]
    }

    public subscript(key: String) -> CBOR? { self[.text(key)] }

    /// Decodes one value at the start of `bytes`.
    /// - Returns: the value and how many bytes it took.
    public static func decode(prefixOf bytes: some Collection<UInt8>) throws(CBORError) -> (value: CBOR, length: Int) {
        var reader = Reader(bytes: Array(bytes))
        let value = try reader.value(depth: 0)
        return (value, reader.offset)
    }

    /// Decodes `bytes`, which must hold exactly one value.
    public static func decode(_ bytes: some Collection<UInt8>) throws(CBORError) -> CBOR {
        let (value, length) = try Self.decode(prefixOf: bytes)
        guard length == bytes.count else { throw CBORError("\(bytes.count - length) byte(s) after the CBOR value") }
        return value
    }

    private struct Reader {
        static let maximumCount: UInt64 = 64
        let bytes: [UInt8]
        var offset = 0

        mutating func byte() throws(CBORError) -> UInt8 {
            guard self.offset < self.bytes.count else { throw CBORError("the CBOR value ends early") }
            defer { self.offset += 1 }
            return self.bytes[self.offset]
        }

        mutating func take(_ count: UInt64) throws(CBORError) -> [UInt8] {
            guard count <= UInt64(self.bytes.count - self.offset) else { throw CBORError("a CBOR length of \(count) goes past the end") }
            let end = self.offset + Int(count)
            defer { self.offset = end }
            return Array(self.bytes[self.offset..<end])
        }

        mutating func argument(_ info: UInt8) throws(CBORError) -> UInt64 {
            switch info {
            case 0..<24: return UInt64(info)
            case 24...27:
                var value: UInt64 = 0
                for _ in 0..<(1 << (info - 24)) { value = value << 8 | UInt64(try self.byte()) }
                return value
            case 31: throw CBORError("indefinite-length CBOR is not accepted")
            default: throw CBORError("reserved CBOR additional information \(info)")
            }
        }

        mutating func value(depth: Int) throws(CBORError) -> CBOR {
            guard depth < 16 else { throw CBORError("CBOR nested more than 16 levels") }
            let initial = try self.byte()
            let (major, info) = (initial >> 5, initial & 0x1F)
            if major == 7 {
                switch info {
                case 20: return .bool(false)
                case 21: return .bool(true)
                case 22: return .null
                default: throw CBORError("CBOR simple value or float \(info) is not accepted")
                }
            }
            let argument = try self.argument(info)
            switch major {
            case 0: return .unsigned(argument)
            case 1: return .negative(argument)
            case 2: return .bytes(try self.take(argument))
            case 3:
                guard let text = String(validating: try self.take(argument), as: UTF8.self) else { throw CBORError("a CBOR text string is not UTF-8") }
                return .text(text)
            case 4:
                // Each element takes at least a byte: a count beyond the bytes left is refused before any allocation.
                guard argument <= UInt64(self.bytes.count - self.offset) else { throw CBORError("a CBOR array of \(argument) goes past the end") }
                guard argument <= Self.maximumCount else { throw CBORError("a CBOR array of \(argument) elements is more than WebAuthn uses") }
                var elements: [CBOR] = []
                for _ in 0..<argument { elements.append(try self.value(depth: depth + 1)) }
                return .array(elements)
            case 5:
                guard argument <= UInt64(self.bytes.count - self.offset) / 2 else { throw CBORError("a CBOR map of \(argument) goes past the end") }
                guard argument <= Self.maximumCount else { throw CBORError("a CBOR map of \(argument) pairs is more than WebAuthn uses") }
                var pairs: [Pair] = []
                for _ in 0..<argument {
                    let key = try self.value(depth: depth + 1)
                    guard !pairs.contains(where: { $0.key == key }) else { throw CBORError("a CBOR map repeats a key") }
                    pairs.append(Pair(key: key, value: try self.value(depth: depth + 1)))
                }
                return .map(pairs)
            default:
                throw CBORError("CBOR tags are not accepted")
            }
        }
    }
}

/// Why bytes are not the CBOR WebAuthn uses.
public struct CBORError: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { self.reason }
}
