/// A value that writes its own canonical JSON: keys sorted by their UTF-8 bytes, no whitespace, integers
/// only, strings escaped exactly as Foundation's `JSONEncoder` escapes them with `.sortedKeys` and
/// `.withoutEscapingSlashes`, absent optionals left out.
///
/// The bytes equal `JSONEncoder`'s for the same value (tests compare the two for every conforming type), so
/// what is stored, hashed and signed does not depend on which of the two wrote it. Conforming types write
/// their fields in sorted key order themselves; this is the hot path of every decision, where Foundation's
/// encoder cost more than the signature.
public protocol CanonicalJSONEncodable: Encodable {
    func write(to json: inout CanonicalJSON)
}

extension CanonicalJSONEncodable {
    /// The canonical JSON of the value.
    public var canonicalJSONBytes: [UInt8] {
        var json = CanonicalJSON()
        self.write(to: &json)
        return json.bytes
    }
}

/// A canonical JSON writer. Objects are written field by field, in the order the caller gives, which must be
/// sorted; commas are placed by the writer.
public struct CanonicalJSON: Sendable {
    public private(set) var bytes: [UInt8]
    /// A value was just finished at the current depth, so the next field or element needs a comma.
    @usableFromInline
    var needsComma = false

    public init(reservingCapacity capacity: Int = 512) {
        self.bytes = []
        self.bytes.reserveCapacity(capacity)
    }

    // MARK: Structure

    /// Writes `{`, the fields `body` writes, and `}`.
    @inlinable
    public mutating func object(_ body: (inout CanonicalJSON) -> Void) {
        self.beginContainer(UInt8(ascii: "{"))
        body(&self)
        self.endContainer(UInt8(ascii: "}"))
    }

    /// Writes `[`, one element per value, and `]`.
    @inlinable
    public mutating func array<Element>(_ values: some Sequence<Element>, _ element: (inout CanonicalJSON, Element) -> Void) {
        self.beginContainer(UInt8(ascii: "["))
        for value in values {
            self.separate()
            element(&self, value)
            self.needsComma = true
        }
        self.endContainer(UInt8(ascii: "]"))
    }

    @usableFromInline
    mutating func beginContainer(_ byte: UInt8) {
        self.bytes.append(byte)
        self.needsComma = false
    }

    @usableFromInline
    mutating func endContainer(_ byte: UInt8) {
        self.bytes.append(byte)
        self.needsComma = true
    }

    @usableFromInline
    mutating func separate() {
        if self.needsComma { self.bytes.append(UInt8(ascii: ",")) }
    }

    /// Starts a field: a comma if one is due, then `"key":`. The key is written as given (plain ASCII).
    @usableFromInline
    mutating func key(_ key: StaticString) {
        self.separate()
        self.bytes.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { self.bytes.append(contentsOf: $0) }
        self.bytes.append(UInt8(ascii: "\""))
        self.bytes.append(UInt8(ascii: ":"))
    }

    // MARK: Fields (call in sorted key order; an absent optional writes nothing)

    public mutating func field(_ key: StaticString, _ value: String?) {
        guard let value else { return }
        self.key(key)
        self.string(value)
        self.needsComma = true
    }

    public mutating func field(_ key: StaticString, _ value: Int64?) {
        guard let value else { return }
        self.key(key)
        self.integer(value)
        self.needsComma = true
    }

    public mutating func field(_ key: StaticString, _ value: Int?) {
        self.field(key, value.map(Int64.init))
    }

    public mutating func field(_ key: StaticString, _ value: Bool?) {
        guard let value else { return }
        self.key(key)
        self.bytes.append(contentsOf: value ? Self.trueBytes : Self.falseBytes)
        self.needsComma = true
    }

    public mutating func field(_ key: StaticString, _ value: (some CanonicalJSONEncodable)?) {
        guard let value else { return }
        self.key(key)
        value.write(to: &self)
        self.needsComma = true
    }

    public mutating func field(_ key: StaticString, _ values: [String]?) {
        guard let values else { return }
        self.key(key)
        self.array(values) { json, value in json.string(value) }
    }

    public mutating func field<Element: CanonicalJSONEncodable>(_ key: StaticString, _ values: [Element]?) {
        guard let values else { return }
        self.key(key)
        self.array(values) { json, value in value.write(to: &json) }
    }

    /// A string-to-string map, its keys sorted by their UTF-8 bytes.
    public mutating func field(_ key: StaticString, _ map: [String: String]?) {
        guard let map else { return }
        self.key(key)
        self.beginContainer(UInt8(ascii: "{"))
        for (name, value) in map.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            self.separate()
            self.string(name)
            self.bytes.append(UInt8(ascii: ":"))
            self.string(value)
            self.needsComma = true
        }
        self.endContainer(UInt8(ascii: "}"))
    }

    // MARK: Scalars

    private static let trueBytes = Array("true".utf8)
    private static let falseBytes = Array("false".utf8)
    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// A JSON string: `"` and `\` escaped, control characters as `\b \t \n \f \r` or `\u00xx`, everything
    /// else (including `/` and non-ASCII) as its UTF-8 bytes.
    public mutating func string(_ value: String) {
        self.bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            var start = 0
            for index in 0..<utf8.count {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                self.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                start = index + 1
                self.bytes.append(UInt8(ascii: "\\"))
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): self.bytes.append(byte)
                case 0x08: self.bytes.append(UInt8(ascii: "b"))
                case 0x09: self.bytes.append(UInt8(ascii: "t"))
                case 0x0A: self.bytes.append(UInt8(ascii: "n"))
                case 0x0C: self.bytes.append(UInt8(ascii: "f"))
                case 0x0D: self.bytes.append(UInt8(ascii: "r"))
                default:
                    self.bytes.append(contentsOf: [
                        UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), Self.hexDigits[Int(byte >> 4)], Self.hexDigits[Int(byte & 0xF)],
                    ])
                }
            }
            self.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
        }
        self.bytes.append(UInt8(ascii: "\""))
    }

    /// Appends `text` as it is, for a writer that places its own punctuation (``CanonicalEncoder``).
    mutating func raw(_ text: String) {
        self.bytes.append(contentsOf: text.utf8)
    }

    /// A decimal integer.
    public mutating func integer(_ value: Int64) {
        if value < 0 { self.bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        // Int64's magnitude has at most 19 digits.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var position = 20
            repeat {
                position -= 1
                digits[position] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            self.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[position...]))
        }
    }
}
