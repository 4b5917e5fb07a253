import CPKCS11

/// One attribute and its value, as passed to the token.
public struct Attribute: Sendable {
    /// An attribute value, passed to the token as a `CK_BBOOL`, a `CK_ULONG` or a byte array.
    public enum Value: Sendable {
        /// A `CK_BBOOL`: one byte, `CK_TRUE` or `CK_FALSE`.
        case bool(Bool)
        /// A `CK_ULONG`, e.g. a length, an object class or a key type.
        case ulong(UInt)
        /// A byte array, e.g. a label's UTF-8 or a DER encoding.
        case bytes([UInt8])
    }

    /// Which attribute (`CKA_…`).
    public var type: AttributeType
    /// The value; its kind must be the one PKCS#11 gives the attribute, or the token may refuse the template (`CKR_ATTRIBUTE_VALUE_INVALID`).
    public var value: Value

    /// An attribute with a value; ``bool(_:_:)``, ``ulong(_:_:)`` and the other factories are shorter.
    public init(_ type: AttributeType, _ value: Value) {
        self.type = type
        self.value = value
    }

    /// A `CK_BBOOL` attribute, e.g. `.bool(.sign, true)`.
    public static func bool(_ type: AttributeType, _ value: Bool) -> Attribute { Attribute(type, .bool(value)) }
    /// A `CK_ULONG` attribute, e.g. `.ulong(.valueLength, 32)`.
    public static func ulong(_ type: AttributeType, _ value: UInt) -> Attribute { Attribute(type, .ulong(value)) }
    /// A byte-array attribute, e.g. `.bytes(.id, id)`.
    public static func bytes(_ type: AttributeType, _ value: [UInt8]) -> Attribute { Attribute(type, .bytes(value)) }
    /// A text attribute as its UTF-8 bytes, without a terminating NUL, e.g. `.string(.label, "countersign")`.
    public static func string(_ type: AttributeType, _ value: String) -> Attribute { Attribute(type, .bytes(Array(value.utf8))) }
    /// `CKA_CLASS` with the object class `value`.
    public static func objectClass(_ value: ObjectClass) -> Attribute { Attribute(.class, .ulong(value.rawValue)) }
    /// `CKA_KEY_TYPE` with the key type `value`.
    public static func keyType(_ value: KeyType) -> Attribute { Attribute(.keyType, .ulong(value.rawValue)) }

    fileprivate var encodedCount: Int {
        switch self.value {
        case .bool: MemoryLayout<CK_BBOOL>.size
        case .ulong: MemoryLayout<CK_ULONG>.size
        case .bytes(let bytes): bytes.count
        }
    }
}

/// An attribute template that owns the memory its `CK_ATTRIBUTE`s point into.
///
/// The C structures exist only for the duration of ``withUnsafeAttributes(_:)``: one buffer holds every value,
/// it is zeroed and freed when the call returns, and no `&var` pointer ever outlives the statement that made it.
public struct Template: Sendable, ExpressibleByArrayLiteral {
    /// The attributes, in the order they are passed to the token.
    public var attributes: [Attribute]

    /// A template of `attributes`, in that order.
    public init(_ attributes: [Attribute]) {
        self.attributes = attributes
    }

    /// A template written as an array literal, e.g. `[.objectClass(.secretKey), .string(.label, label)]`.
    public init(arrayLiteral elements: Attribute...) {
        self.attributes = elements
    }

    /// Adds an attribute at the end. It does not replace an attribute of the same type: give each type once.
    public mutating func append(_ attribute: Attribute) {
        self.attributes.append(attribute)
    }

    /// Lends `body` a `CK_ATTRIBUTE` array and its count.
    public func withUnsafeAttributes<Result>(
        _ body: (UnsafeMutablePointer<CK_ATTRIBUTE>?, CK_ULONG) throws -> Result
    ) rethrows -> Result {
        if self.attributes.isEmpty {
            return try body(nil, 0)
        }
        let alignment = MemoryLayout<CK_ULONG>.alignment
        // Each value starts on a CK_ULONG boundary so ulong values are aligned.
        let slots = self.attributes.map { ($0.encodedCount + alignment - 1) / alignment * alignment }
        let values = UnsafeMutableRawBufferPointer.allocate(byteCount: max(slots.reduce(0, +), 1), alignment: alignment)
        let structs = UnsafeMutablePointer<CK_ATTRIBUTE>.allocate(capacity: self.attributes.count)
        defer {
            explicitZero(values)
            values.deallocate()
            structs.deallocate()
        }
        var offset = 0
        for (index, attribute) in self.attributes.enumerated() {
            let pointer = values.baseAddress! + offset
            switch attribute.value {
            case .bool(let flag):
                pointer.storeBytes(of: CK_BBOOL(flag ? CK_TRUE : CK_FALSE), as: CK_BBOOL.self)
            case .ulong(let number):
                pointer.storeBytes(of: CK_ULONG(number), as: CK_ULONG.self)
            case .bytes(let bytes):
                bytes.withUnsafeBytes { if let source = $0.baseAddress { pointer.copyMemory(from: source, byteCount: $0.count) } }
            }
            (structs + index).initialize(
                to: CK_ATTRIBUTE(
                    type: CK_ATTRIBUTE_TYPE(attribute.type.rawValue),
                    pValue: pointer,
                    ulValueLen: CK_ULONG(attribute.encodedCount)
                )
            )
            offset += slots[index]
        }
        return try body(structs, CK_ULONG(self.attributes.count))
    }
}
