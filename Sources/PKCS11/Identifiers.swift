import CPKCS11

// Typed wrappers over the raw `CK_ULONG`s of PKCS#11: a slot, a session, an object, a mechanism and an
// attribute type are different things and the compiler keeps them apart.

/// A slot on a module (`CK_SLOT_ID`). SoftHSM puts tokens on random slots: find tokens by label, not by slot.
public struct SlotID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public var description: String { String(self.rawValue) }
}

/// An open session (`CK_SESSION_HANDLE`).
public struct SessionHandle: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
}

/// An object on the token (`CK_OBJECT_HANDLE`). Handles are only meaningful within the module instance
/// that returned them; find keys again by label or id after a restart.
public struct ObjectHandle: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public var description: String { "object \(self.rawValue)" }
}

/// A mechanism type (`CK_MECHANISM_TYPE`).
public struct MechanismType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let ecKeyPairGen = MechanismType(rawValue: UInt(CKM_EC_KEY_PAIR_GEN))
    public static let ecdsa = MechanismType(rawValue: UInt(CKM_ECDSA))
    public static let aesKeyGen = MechanismType(rawValue: UInt(CKM_AES_KEY_GEN))
    public static let aesGCM = MechanismType(rawValue: UInt(CKM_AES_GCM))
    public static let aesKeyWrapPad = MechanismType(rawValue: UInt(CKM_AES_KEY_WRAP_PAD))
    public static let sha256 = MechanismType(rawValue: UInt(CKM_SHA256))

    public var name: String? {
        switch self {
        case .ecKeyPairGen: "CKM_EC_KEY_PAIR_GEN"
        case .ecdsa: "CKM_ECDSA"
        case .aesKeyGen: "CKM_AES_KEY_GEN"
        case .aesGCM: "CKM_AES_GCM"
        case .aesKeyWrapPad: "CKM_AES_KEY_WRAP_PAD"
        case .sha256: "CKM_SHA256"
        default: nil
        }
    }

    public var description: String {
        let hex = "0x" + String(self.rawValue, radix: 16, uppercase: true)
        return self.name.map { "\($0) (\(hex))" } ?? hex
    }
}

/// An attribute type (`CK_ATTRIBUTE_TYPE`).
public struct AttributeType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let `class` = AttributeType(rawValue: UInt(CKA_CLASS))
    public static let token = AttributeType(rawValue: UInt(CKA_TOKEN))
    public static let `private` = AttributeType(rawValue: UInt(CKA_PRIVATE))
    public static let label = AttributeType(rawValue: UInt(CKA_LABEL))
    public static let value = AttributeType(rawValue: UInt(CKA_VALUE))
    public static let keyType = AttributeType(rawValue: UInt(CKA_KEY_TYPE))
    public static let id = AttributeType(rawValue: UInt(CKA_ID))
    public static let sensitive = AttributeType(rawValue: UInt(CKA_SENSITIVE))
    public static let encrypt = AttributeType(rawValue: UInt(CKA_ENCRYPT))
    public static let decrypt = AttributeType(rawValue: UInt(CKA_DECRYPT))
    public static let wrap = AttributeType(rawValue: UInt(CKA_WRAP))
    public static let unwrap = AttributeType(rawValue: UInt(CKA_UNWRAP))
    public static let sign = AttributeType(rawValue: UInt(CKA_SIGN))
    public static let verify = AttributeType(rawValue: UInt(CKA_VERIFY))
    public static let derive = AttributeType(rawValue: UInt(CKA_DERIVE))
    public static let valueLength = AttributeType(rawValue: UInt(CKA_VALUE_LEN))
    public static let extractable = AttributeType(rawValue: UInt(CKA_EXTRACTABLE))
    public static let alwaysSensitive = AttributeType(rawValue: UInt(CKA_ALWAYS_SENSITIVE))
    public static let neverExtractable = AttributeType(rawValue: UInt(CKA_NEVER_EXTRACTABLE))
    public static let local = AttributeType(rawValue: UInt(CKA_LOCAL))
    public static let ecParams = AttributeType(rawValue: UInt(CKA_EC_PARAMS))
    public static let ecPoint = AttributeType(rawValue: UInt(CKA_EC_POINT))

    public var description: String {
        "attribute 0x" + String(self.rawValue, radix: 16, uppercase: true)
    }
}

/// An object class (`CK_OBJECT_CLASS`).
public struct ObjectClass: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let publicKey = ObjectClass(rawValue: UInt(CKO_PUBLIC_KEY))
    public static let privateKey = ObjectClass(rawValue: UInt(CKO_PRIVATE_KEY))
    public static let secretKey = ObjectClass(rawValue: UInt(CKO_SECRET_KEY))
}

/// A key type (`CK_KEY_TYPE`).
public struct KeyType: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let ec = KeyType(rawValue: UInt(CKK_EC))
    public static let aes = KeyType(rawValue: UInt(CKK_AES))
}
