/// One canonical encoding of any `Encodable` value, for hashing a value rather than a text someone wrote about it.
///
/// Objects' members are sorted by their names' UTF-8 bytes and there is no whitespace (like `JSONEncoder` with
/// `.sortedKeys`), and, unlike `JSONEncoder`, what has no order is written in one order: a `Set`'s elements and a
/// `Dictionary`'s entries (as `[key, value]` pairs) are sorted by their own canonical encodings, so the bytes do
/// not depend on the process's hash seed. Arrays keep their order, which is theirs to mean. Since it runs the
/// value's own `encode(to:)` (synthesized where nothing says otherwise), every stored property is in the bytes
/// unless the type leaves it out on purpose.
public enum CanonicalEncoder {
    public static func encode(_ value: some Encodable) throws -> [UInt8] {
        var output = CanonicalJSON(reservingCapacity: 1024)
        try Node.of(value).write(to: &output)
        return output.bytes
    }
}

/// A collection whose order means nothing: encoded sorted.
protocol Unordered {
    var members: [any Encodable] { get }
}

extension Set: Unordered where Element: Encodable {
    var members: [any Encodable] { Array(self) }
}

extension Dictionary: Unordered where Key: Encodable, Value: Encodable {
    var members: [any Encodable] { self.map { Pair(key: $0.key, value: $0.value) } }

    private struct Pair: Encodable {
        let key: Key
        let value: Value

        func encode(to encoder: any Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(self.key)
            try container.encode(self.value)
        }
    }
}

/// An encoded value, built while `encode(to:)` runs (its containers fill boxes) and written once complete.
private enum Node {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array(Box<[Node]>)
    case object(Box<[String: Node]>)
    case deferred(NodeEncoder)

    static func of(_ value: any Encodable) throws -> Node {
        if let unordered = value as? any Unordered {
            var encoded: [([UInt8], Node)] = []
            for member in unordered.members {
                let node = try Node.of(member)
                var bytes = CanonicalJSON(reservingCapacity: 64)
                try node.write(to: &bytes)
                encoded.append((bytes.bytes, node))
            }
            return .array(Box(encoded.sorted { $0.0.lexicographicallyPrecedes($1.0) }.map(\.1)))
        }
        let encoder = NodeEncoder()
        try value.encode(to: encoder)
        return encoder.node ?? .object(Box([:]))
    }

    func write(to output: inout CanonicalJSON) throws {
        switch self {
        case .null: output.raw("null")
        case .bool(let value): output.raw(value ? "true" : "false")
        case .number(let text): output.raw(text)
        case .string(let text): output.string(text)
        case .array(let items):
            output.raw("[")
            for (index, item) in items.value.enumerated() {
                if index > 0 { output.raw(",") }
                try item.write(to: &output)
            }
            output.raw("]")
        case .object(let members):
            output.raw("{")
            for (index, name) in members.value.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }).enumerated() {
                if index > 0 { output.raw(",") }
                output.string(name)
                output.raw(":")
                try members.value[name]!.write(to: &output)
            }
            output.raw("}")
        case .deferred(let encoder):
            try (encoder.node ?? .object(Box([:]))).write(to: &output)
        }
    }
}

private final class Box<Value> {
    var value: Value
    init(_ value: Value) { self.value = value }
}

private final class NodeEncoder: Encoder {
    var codingPath: [any CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]
    var node: Node?

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if case .object(let box)? = self.node { return KeyedEncodingContainer(Keyed(box: box)) }
        let box = Box<[String: Node]>([:])
        self.node = .object(box)
        return KeyedEncodingContainer(Keyed(box: box))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .array(let box)? = self.node { return Unkeyed(box: box) }
        let box = Box<[Node]>([])
        self.node = .array(box)
        return Unkeyed(box: box)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { Single(encoder: self) }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let box: Box<[String: Node]>
        var codingPath: [any CodingKey] = []

        mutating func encodeNil(forKey key: Key) throws { self.box.value[key.stringValue] = .null }
        mutating func encode(_ value: Bool, forKey key: Key) throws { self.box.value[key.stringValue] = .bool(value) }
        mutating func encode(_ value: String, forKey key: Key) throws { self.box.value[key.stringValue] = .string(value) }
        mutating func encode(_ value: Double, forKey key: Key) throws { self.box.value[key.stringValue] = .number("\(value)") }
        mutating func encode(_ value: Float, forKey key: Key) throws { self.box.value[key.stringValue] = .number("\(value)") }
        mutating func encode(_ value: Int, forKey key: Key) throws { self.box.value[key.stringValue] = .number("\(value)") }
        mutating func encode(_ value: Int64, forKey key: Key) throws { self.box.value[key.stringValue] = .number("\(value)") }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { self.box.value[key.stringValue] = .number("\(value)") }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { self.box.value[key.stringValue] = try Node.of(value) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            let nested = Box<[String: Node]>([:])
            self.box.value[key.stringValue] = .object(nested)
            return KeyedEncodingContainer(Keyed<NestedKey>(box: nested))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let nested = Box<[Node]>([])
            self.box.value[key.stringValue] = .array(nested)
            return Unkeyed(box: nested)
        }

        mutating func superEncoder() -> any Encoder { self.superEncoder(named: "super") }
        mutating func superEncoder(forKey key: Key) -> any Encoder { self.superEncoder(named: key.stringValue) }

        private mutating func superEncoder(named name: String) -> any Encoder {
            let encoder = NodeEncoder()
            self.box.value[name] = .deferred(encoder)
            return encoder
        }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let box: Box<[Node]>
        var codingPath: [any CodingKey] = []
        var count: Int { self.box.value.count }

        mutating func encodeNil() throws { self.box.value.append(.null) }
        mutating func encode(_ value: Bool) throws { self.box.value.append(.bool(value)) }
        mutating func encode(_ value: String) throws { self.box.value.append(.string(value)) }
        mutating func encode(_ value: Double) throws { self.box.value.append(.number("\(value)")) }
        mutating func encode(_ value: Float) throws { self.box.value.append(.number("\(value)")) }
        mutating func encode(_ value: Int) throws { self.box.value.append(.number("\(value)")) }
        mutating func encode(_ value: Int64) throws { self.box.value.append(.number("\(value)")) }
        mutating func encode(_ value: UInt64) throws { self.box.value.append(.number("\(value)")) }
        mutating func encode<T: Encodable>(_ value: T) throws { self.box.value.append(try Node.of(value)) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let nested = Box<[String: Node]>([:])
            self.box.value.append(.object(nested))
            return KeyedEncodingContainer(Keyed<NestedKey>(box: nested))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let nested = Box<[Node]>([])
            self.box.value.append(.array(nested))
            return Unkeyed(box: nested)
        }

        mutating func superEncoder() -> any Encoder {
            let encoder = NodeEncoder()
            self.box.value.append(.deferred(encoder))
            return encoder
        }
    }

    struct Single: SingleValueEncodingContainer {
        let encoder: NodeEncoder
        var codingPath: [any CodingKey] = []

        mutating func encodeNil() throws { self.encoder.node = .null }
        mutating func encode(_ value: Bool) throws { self.encoder.node = .bool(value) }
        mutating func encode(_ value: String) throws { self.encoder.node = .string(value) }
        mutating func encode(_ value: Double) throws { self.encoder.node = .number("\(value)") }
        mutating func encode(_ value: Float) throws { self.encoder.node = .number("\(value)") }
        mutating func encode(_ value: Int) throws { self.encoder.node = .number("\(value)") }
        mutating func encode(_ value: Int64) throws { self.encoder.node = .number("\(value)") }
        mutating func encode(_ value: UInt64) throws { self.encoder.node = .number("\(value)") }
        mutating func encode<T: Encodable>(_ value: T) throws { self.encoder.node = try Node.of(value) }
    }
}
