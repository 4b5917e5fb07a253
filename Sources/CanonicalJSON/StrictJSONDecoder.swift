/// Decodes `Decodable` values from bytes read by ``StrictJSONParser``, with nothing left to interpretation:
/// - integers are read from the number's digits exactly: a fraction or an exponent (`1000.0`, `1e3`) or a
///   value outside the field's type is refused, naming the field; there is no floating-point anywhere;
/// - a string holding U+0000 (NUL) is refused (C strings and logs would end it early);
/// - a member the type never reads is refused (`unknown member 'intent.shipping_address'`) unless
///   `allowsUnknownMembers`: what is not read cannot be checked or signed.
///
/// Errors are ``StrictJSONError``s: `malformed` for bytes that are not I-JSON, `invalid` for the rest.
public struct StrictJSONDecoder: Sendable {
    public var allowsUnknownMembers: Bool

    /// - Parameter allowsUnknownMembers: `false` for requests (refuse what the protocol does not define);
    ///   `true` for answers a newer server may extend.
    public init(allowsUnknownMembers: Bool = false) {
        self.allowsUnknownMembers = allowsUnknownMembers
    }

    /// - Throws: ``StrictJSONError``.
    public func decode<Value: Decodable>(_ type: Value.Type, from bytes: UnsafeRawBufferPointer) throws(StrictJSONError) -> Value {
        let (root, memberCount) = try StrictJSONParser.parse(bytes)
        return try self.decode(type, from: root, memberCount: memberCount)
    }

    /// - Throws: ``StrictJSONError``.
    public func decode<Value: Decodable>(_ type: Value.Type, from bytes: [UInt8]) throws(StrictJSONError) -> Value {
        let parsed: Result<Value, StrictJSONError> = bytes.withUnsafeBytes { buffer in
            do throws(StrictJSONError) { return .success(try self.decode(type, from: buffer)) } catch { return .failure(error) }
        }
        return try parsed.get()
    }

    private func decode<Value: Decodable>(_ type: Value.Type, from root: JSONValue, memberCount: Int) throws(StrictJSONError) -> Value {
        let reads = MemberReads(count: memberCount)
        let value: Value
        do {
            value = try Value(from: ValueDecoder(value: root, path: [], reads: reads))
        } catch let error as StrictJSONError {
            throw error
        } catch let error as DecodingError {
            throw Self.describe(error)
        } catch {
            throw StrictJSONError(.invalid, "the body does not have the expected shape")
        }
        if !self.allowsUnknownMembers, let unread = reads.firstUnread(), let path = Self.path(of: unread, in: root, at: []) {
            throw StrictJSONError(
                .invalid,
                "unknown member '\(JSONPath.render(path))': the protocol does not define it, and only what is defined is checked and signed; remove it"
            )
        }
        return value
    }

    private static func path(of ordinal: Int, in value: JSONValue, at path: [JSONPathComponent]) -> [JSONPathComponent]? {
        switch value {
        case .object(let members):
            for member in members {
                if member.ordinal == ordinal { return path + [.member(member.name)] }
                if let found = Self.path(of: ordinal, in: member.value, at: path + [.member(member.name)]) { return found }
            }
            return nil
        case .array(let elements):
            for (index, element) in elements.enumerated() {
                if let found = Self.path(of: ordinal, in: element, at: path + [.index(index)]) { return found }
            }
            return nil
        default:
            return nil
        }
    }

    /// Errors that `Decodable` implementations throw themselves (an enum's unknown raw value, …).
    private static func describe(_ error: DecodingError) -> StrictJSONError {
        func field(_ context: DecodingError.Context) -> String { JSONPath.render(codingPath: context.codingPath) }
        switch error {
        case .dataCorrupted(let context):
            return StrictJSONError(.invalid, "field '\(field(context))': \(context.debugDescription)")
        case .keyNotFound(let key, let context):
            return StrictJSONError(.invalid, "field '\(JSONPath.render(codingPath: context.codingPath + [key]))' is required")
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return StrictJSONError(.invalid, "field '\(field(context))' does not have the expected type")
        @unknown default:
            return StrictJSONError(.invalid, "the body does not have the expected shape")
        }
    }
}

/// Which members of the document a decoder has looked up. One per decode; the decoders share it.
private final class MemberReads {
    private var read: [Bool]

    init(count: Int) {
        self.read = Array(repeating: false, count: count)
    }

    func mark(_ ordinal: Int) {
        self.read[ordinal] = true
    }

    func firstUnread() -> Int? {
        self.read.firstIndex(of: false)
    }
}

private struct PathKey: CodingKey {
    var stringValue: String
    var intValue: Int?

    init(stringValue: String) {
        self.stringValue = stringValue
    }

    init(intValue: Int) {
        self.stringValue = "\(intValue)"
        self.intValue = intValue
    }
}

/// A decoder positioned at one value.
private struct ValueDecoder: Decoder {
    let value: JSONValue
    let path: [any CodingKey]
    let reads: MemberReads

    var codingPath: [any CodingKey] { self.path }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    var field: String { JSONPath.render(codingPath: self.path) }

    func mismatch(_ expected: String) -> StrictJSONError {
        let found =
            switch self.value {
            case .null: "null"
            case .bool: "true or false"
            case .number: "a number"
            case .string: "a string"
            case .array: "an array"
            case .object: "an object"
            }
        return StrictJSONError(
            .invalid, self.path.isEmpty ? "the body must be \(expected), not \(found)" : "field '\(self.field)' must be \(expected), not \(found)")
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = self.value else { throw self.mismatch("an object") }
        return KeyedDecodingContainer(ObjectContainer<Key>(members: members, decoder: self))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = self.value else { throw self.mismatch("an array") }
        return ArrayContainer(elements: elements, decoder: self)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        ScalarContainer(decoder: self)
    }

    // MARK: Scalars

    func decodeNil() -> Bool {
        self.value == .null
    }

    func decodeBool() throws -> Bool {
        guard case .bool(let value) = self.value else { throw self.mismatch("true or false") }
        return value
    }

    func decodeString() throws -> String {
        guard case .string(let value) = self.value else { throw self.mismatch("a string") }
        guard !value.utf8.contains(0) else {
            throw StrictJSONError(.invalid, "field '\(self.field)' holds U+0000 (NUL), which no field accepts")
        }
        return value
    }

    /// The integer written, from its digits: no fraction, no exponent, within `Integer`'s range.
    func decodeInteger<Integer: FixedWidthInteger>(_ type: Integer.Type) throws -> Integer {
        guard case .number(let text) = self.value else { throw self.mismatch("an integer") }
        var utf8 = text.utf8[...]
        let negative = utf8.first == UInt8(ascii: "-")
        if negative { utf8 = utf8.dropFirst() }
        var result: Integer = 0
        for byte in utf8 {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else {
                throw StrictJSONError(
                    .invalid, "field '\(self.field)' must be an integer without a fraction or an exponent, not \(text) (amounts are integer minor units)"
                )
            }
            let digit = Integer(byte - UInt8(ascii: "0"))
            let (shifted, overflowed) = result.multipliedReportingOverflow(by: 10)
            // Negative numbers are accumulated downwards so that the type's minimum is reachable.
            let (next, overflowed2) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            guard !overflowed, !overflowed2 else {
                throw StrictJSONError(.invalid, "field '\(self.field)' is out of range: \(text) is not within \(Integer.min)…\(Integer.max)")
            }
            result = next
        }
        return result
    }

    func refuseFraction() -> StrictJSONError {
        StrictJSONError(.invalid, "field '\(self.field)' would be a fractional number, which this protocol never uses")
    }

    func decode<Value: Decodable>(_ type: Value.Type) throws -> Value {
        try Value(from: self)
    }
}

private struct ScalarContainer: SingleValueDecodingContainer {
    let decoder: ValueDecoder

    var codingPath: [any CodingKey] { self.decoder.path }

    func decodeNil() -> Bool { self.decoder.decodeNil() }
    func decode(_ type: Bool.Type) throws -> Bool { try self.decoder.decodeBool() }
    func decode(_ type: String.Type) throws -> String { try self.decoder.decodeString() }
    func decode(_ type: Double.Type) throws -> Double { throw self.decoder.refuseFraction() }
    func decode(_ type: Float.Type) throws -> Float { throw self.decoder.refuseFraction() }
    func decode(_ type: Int.Type) throws -> Int { try self.decoder.decodeInteger(type) }
    func decode(_ type: Int8.Type) throws -> Int8 { try self.decoder.decodeInteger(type) }
    func decode(_ type: Int16.Type) throws -> Int16 { try self.decoder.decodeInteger(type) }
    func decode(_ type: Int32.Type) throws -> Int32 { try self.decoder.decodeInteger(type) }
    func decode(_ type: Int64.Type) throws -> Int64 { try self.decoder.decodeInteger(type) }
    func decode(_ type: UInt.Type) throws -> UInt { try self.decoder.decodeInteger(type) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try self.decoder.decodeInteger(type) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try self.decoder.decodeInteger(type) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try self.decoder.decodeInteger(type) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try self.decoder.decodeInteger(type) }
    func decode<Value: Decodable>(_ type: Value.Type) throws -> Value { try self.decoder.decode(type) }
}

private struct ObjectContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let members: [JSONMember]
    let decoder: ValueDecoder

    var codingPath: [any CodingKey] { self.decoder.path }
    var allKeys: [Key] { self.members.compactMap { Key(stringValue: $0.name) } }

    private func member(_ key: Key) -> JSONMember? {
        self.members.first { $0.name == key.stringValue }
    }

    /// A decoder for the member named by `key`, which counts as read: only members whose values are decoded
    /// (or found `null`) are known; one that is merely looked for is not.
    private func decoder(for key: Key) throws -> ValueDecoder {
        guard let member = self.member(key) else {
            throw StrictJSONError(.invalid, "field '\(JSONPath.render(codingPath: self.codingPath + [key]))' is required")
        }
        self.decoder.reads.mark(member.ordinal)
        return ValueDecoder(value: member.value, path: self.codingPath + [key], reads: self.decoder.reads)
    }

    func contains(_ key: Key) -> Bool { self.member(key) != nil }
    func decodeNil(forKey key: Key) throws -> Bool { try self.decoder(for: key).decodeNil() }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try self.decoder(for: key).decodeBool() }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try self.decoder(for: key).decodeString() }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { throw try self.decoder(for: key).refuseFraction() }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { throw try self.decoder(for: key).refuseFraction() }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try self.decoder(for: key).decodeInteger(type) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try self.decoder(for: key).decodeInteger(type) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try self.decoder(for: key).decodeInteger(type) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try self.decoder(for: key).decodeInteger(type) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try self.decoder(for: key).decodeInteger(type) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try self.decoder(for: key).decodeInteger(type) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try self.decoder(for: key).decodeInteger(type) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try self.decoder(for: key).decodeInteger(type) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try self.decoder(for: key).decodeInteger(type) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try self.decoder(for: key).decodeInteger(type) }
    func decode<Value: Decodable>(_ type: Value.Type, forKey key: Key) throws -> Value { try self.decoder(for: key).decode(type) }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try self.decoder(for: key).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try self.decoder(for: key).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        let key = PathKey(stringValue: "super")
        guard let member = self.members.first(where: { $0.name == key.stringValue }) else {
            throw StrictJSONError(.invalid, "field '\(JSONPath.render(codingPath: self.codingPath + [key]))' is required")
        }
        self.decoder.reads.mark(member.ordinal)
        return ValueDecoder(value: member.value, path: self.codingPath + [key], reads: self.decoder.reads)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        try self.decoder(for: key)
    }
}

private struct ArrayContainer: UnkeyedDecodingContainer {
    let elements: [JSONValue]
    let decoder: ValueDecoder
    var currentIndex = 0

    init(elements: [JSONValue], decoder: ValueDecoder) {
        self.elements = elements
        self.decoder = decoder
    }

    var codingPath: [any CodingKey] { self.decoder.path }
    var count: Int? { self.elements.count }
    var isAtEnd: Bool { self.currentIndex >= self.elements.count }

    /// The next element's decoder; the index moves on only when its value is taken.
    private func next() throws -> ValueDecoder {
        let path = self.codingPath + [PathKey(intValue: self.currentIndex)]
        guard !self.isAtEnd else {
            throw StrictJSONError(.invalid, "field '\(JSONPath.render(codingPath: path))' is required")
        }
        return ValueDecoder(value: self.elements[self.currentIndex], path: path, reads: self.decoder.reads)
    }

    private mutating func take<Value>(_ read: (ValueDecoder) throws -> Value) throws -> Value {
        let value = try read(try self.next())
        self.currentIndex += 1
        return value
    }

    mutating func decodeNil() throws -> Bool {
        guard try self.next().decodeNil() else { return false }
        self.currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try self.take { try $0.decodeBool() } }
    mutating func decode(_ type: String.Type) throws -> String { try self.take { try $0.decodeString() } }
    mutating func decode(_ type: Double.Type) throws -> Double { throw try self.next().refuseFraction() }
    mutating func decode(_ type: Float.Type) throws -> Float { throw try self.next().refuseFraction() }
    mutating func decode(_ type: Int.Type) throws -> Int { try self.take { try $0.decodeInteger(type) } }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try self.take { try $0.decodeInteger(type) } }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try self.take { try $0.decodeInteger(type) } }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try self.take { try $0.decodeInteger(type) } }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try self.take { try $0.decodeInteger(type) } }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try self.take { try $0.decodeInteger(type) } }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try self.take { try $0.decodeInteger(type) } }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try self.take { try $0.decodeInteger(type) } }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try self.take { try $0.decodeInteger(type) } }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try self.take { try $0.decodeInteger(type) } }
    mutating func decode<Value: Decodable>(_ type: Value.Type) throws -> Value { try self.take { try $0.decode(type) } }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try self.take { try $0.container(keyedBy: type) }
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try self.take { try $0.unkeyedContainer() }
    }

    mutating func superDecoder() throws -> any Decoder {
        try self.take { $0 }
    }
}

extension JSONPath {
    static func render(codingPath: [any CodingKey]) -> String {
        Self.render(codingPath.map { $0.intValue.map(JSONPathComponent.index) ?? .member($0.stringValue) })
    }
}
