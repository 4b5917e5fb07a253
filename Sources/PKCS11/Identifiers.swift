import CPKCS11

// Typed wrappers over the raw `CK_ULONG`s of PKCS#11: a slot, a session, an object, a mechanism and an
// attribute type are different things and the compiler keeps them apart.

/// A slot on a module (`CK_SLOT_ID`). SoftHSM puts tokens on random slots: find tokens by label, not by slot.
public struct SlotID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The `CK_SLOT_ID` as the module numbers it.
    public let rawValue: UInt
    /// Wraps a raw `CK_SLOT_ID`, e.g. one from `C_GetSlotList`.
    public init(rawValue: UInt) { self.rawValue = rawValue }
    /// The slot number in decimal.
    public var description: String { String(self.rawValue) }
}

/// An open session (`CK_SESSION_HANDLE`).
public struct SessionHandle: RawRepresentable, Hashable, Sendable {
    /// The `CK_SESSION_HANDLE` from `C_OpenSession`; valid until the session closes or the module is finalized.
    public let rawValue: UInt
    /// Wraps a raw `CK_SESSION_HANDLE`.
    public init(rawValue: UInt) { self.rawValue = rawValue }
}

/// An object on the token (`CK_OBJECT_HANDLE`). Handles are only meaningful within the module instance
/// that returned them; find keys again by label or id after a restart.
public struct ObjectHandle: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The `CK_OBJECT_HANDLE` the module assigned.
    public let rawValue: UInt
    /// Wraps a raw `CK_OBJECT_HANDLE`.
    public init(rawValue: UInt) { self.rawValue = rawValue }
    /// `object <number>`, for error messages.
    public var description: String { "object \(self.rawValue)" }
}

/// A mechanism type (`CK_MECHANISM_TYPE`).
public struct MechanismType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The `CK_MECHANISM_TYPE` value (`CKM_…`).
    public let rawValue: UInt
    /// Wraps any `CK_MECHANISM_TYPE`, including vendor-defined ones.
    public init(rawValue: UInt) { self.rawValue = rawValue }

    /// CKM_EC_KEY_PAIR_GEN: generates an EC key pair on the curve named by the public template's `CKA_EC_PARAMS`.
    public static let ecKeyPairGen = MechanismType(rawValue: UInt(CKM_EC_KEY_PAIR_GEN))
    /// CKM_ECDSA: ECDSA over input the caller already hashed; the signature is `r‖s` (64 bytes for P-256).
    public static let ecdsa = MechanismType(rawValue: UInt(CKM_ECDSA))
    /// CKM_AES_KEY_GEN: generates an AES key of `CKA_VALUE_LEN` bytes.
    public static let aesKeyGen = MechanismType(rawValue: UInt(CKM_AES_KEY_GEN))
    /// CKM_AES_GCM: AES in Galois/Counter Mode, with a `CK_GCM_PARAMS` giving the IV, additional data and tag length.
    public static let aesGCM = MechanismType(rawValue: UInt(CKM_AES_GCM))
    /// CKM_AES_KEY_WRAP_PAD: AES key wrap with padding. Modules disagree on the padding: the specification means RFC 3394 after
    /// PKCS #7 padding, SoftHSM2 implements RFC 5649 under this number; wrapped keys may not move between them.
    public static let aesKeyWrapPad = MechanismType(rawValue: UInt(CKM_AES_KEY_WRAP_PAD))
    /// CKM_SHA256: the SHA-256 digest.
    public static let sha256 = MechanismType(rawValue: UInt(CKM_SHA256))

    /// The specification name (`CKM_…`) of the mechanisms declared here, or `nil` for any other.
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

    /// The name and hex value, e.g. `CKM_ECDSA (0x1041)`, or only the hex value for a mechanism without a ``name``.
    public var description: String {
        let hex = "0x" + String(self.rawValue, radix: 16, uppercase: true)
        return self.name.map { "\($0) (\(hex))" } ?? hex
    }
}

/// An attribute type (`CK_ATTRIBUTE_TYPE`).
public struct AttributeType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The `CK_ATTRIBUTE_TYPE` value (`CKA_…`).
    public let rawValue: UInt
    /// Wraps any `CK_ATTRIBUTE_TYPE`, including vendor-defined ones.
    public init(rawValue: UInt) { self.rawValue = rawValue }

    /// CKA_CLASS: the object's class (`CK_OBJECT_CLASS`, see ``ObjectClass``).
    public static let `class` = AttributeType(rawValue: UInt(CKA_CLASS))
    /// CKA_TOKEN: true for a token object, stored on the token; false for a session object, destroyed when its session closes.
    public static let token = AttributeType(rawValue: UInt(CKA_TOKEN))
    /// CKA_PRIVATE: true if the object can be seen and used only after the user logs in.
    public static let `private` = AttributeType(rawValue: UInt(CKA_PRIVATE))
    /// CKA_LABEL: the object's description, chosen by the application (UTF-8).
    public static let label = AttributeType(rawValue: UInt(CKA_LABEL))
    /// CKA_VALUE: the object's value; for a secret or private key, the key material (not readable from a sensitive or unextractable key).
    public static let value = AttributeType(rawValue: UInt(CKA_VALUE))
    /// CKA_KEY_TYPE: the key's type (`CK_KEY_TYPE`, see ``KeyType``).
    public static let keyType = AttributeType(rawValue: UInt(CKA_KEY_TYPE))
    /// CKA_ID: the key's identifier, a byte string; by convention the halves of a key pair share it (Countersign sets both).
    public static let id = AttributeType(rawValue: UInt(CKA_ID))
    /// CKA_SENSITIVE: true if the key's value can never be revealed in plaintext outside the token.
    public static let sensitive = AttributeType(rawValue: UInt(CKA_SENSITIVE))
    /// CKA_ENCRYPT: true if the key may encrypt.
    public static let encrypt = AttributeType(rawValue: UInt(CKA_ENCRYPT))
    /// CKA_DECRYPT: true if the key may decrypt.
    public static let decrypt = AttributeType(rawValue: UInt(CKA_DECRYPT))
    /// CKA_WRAP: true if the key may wrap (encrypt) other keys.
    public static let wrap = AttributeType(rawValue: UInt(CKA_WRAP))
    /// CKA_UNWRAP: true if the key may unwrap (decrypt and import) other keys.
    public static let unwrap = AttributeType(rawValue: UInt(CKA_UNWRAP))
    /// CKA_SIGN: true if the key may sign.
    public static let sign = AttributeType(rawValue: UInt(CKA_SIGN))
    /// CKA_VERIFY: true if the key may verify signatures.
    public static let verify = AttributeType(rawValue: UInt(CKA_VERIFY))
    /// CKA_DERIVE: true if other keys may be derived from the key.
    public static let derive = AttributeType(rawValue: UInt(CKA_DERIVE))
    /// CKA_VALUE_LEN: the length of a secret key's value, in bytes (`CK_ULONG`).
    public static let valueLength = AttributeType(rawValue: UInt(CKA_VALUE_LEN))
    /// CKA_EXTRACTABLE: true if the key may leave the token wrapped; once false it cannot be set back to true.
    public static let extractable = AttributeType(rawValue: UInt(CKA_EXTRACTABLE))
    /// CKA_ALWAYS_SENSITIVE: read-only; true if the key's `CKA_SENSITIVE` has always been true.
    public static let alwaysSensitive = AttributeType(rawValue: UInt(CKA_ALWAYS_SENSITIVE))
    /// CKA_NEVER_EXTRACTABLE: read-only; true if the key's `CKA_EXTRACTABLE` has never been true.
    public static let neverExtractable = AttributeType(rawValue: UInt(CKA_NEVER_EXTRACTABLE))
    /// CKA_LOCAL: read-only; true if the key was generated on the token (`C_GenerateKey`, `C_GenerateKeyPair`), not imported.
    public static let local = AttributeType(rawValue: UInt(CKA_LOCAL))
    /// CKA_EC_PARAMS: the DER of the X9.62 parameters of an EC key, normally the named curve's OID.
    public static let ecParams = AttributeType(rawValue: UInt(CKA_EC_PARAMS))
    /// CKA_EC_POINT: an EC public key's point Q, DER-encoded as an OCTET STRING (some modules return the bare point).
    public static let ecPoint = AttributeType(rawValue: UInt(CKA_EC_POINT))

    /// `attribute 0x…` with the hex value; attribute types print without their name.
    public var description: String {
        "attribute 0x" + String(self.rawValue, radix: 16, uppercase: true)
    }
}

/// An object class (`CK_OBJECT_CLASS`).
public struct ObjectClass: RawRepresentable, Hashable, Sendable {
    /// The `CK_OBJECT_CLASS` value (`CKO_…`).
    public let rawValue: UInt
    /// Wraps any `CK_OBJECT_CLASS`, including vendor-defined ones.
    public init(rawValue: UInt) { self.rawValue = rawValue }

    /// CKO_PUBLIC_KEY: the public half of a key pair.
    public static let publicKey = ObjectClass(rawValue: UInt(CKO_PUBLIC_KEY))
    /// CKO_PRIVATE_KEY: the private half of a key pair.
    public static let privateKey = ObjectClass(rawValue: UInt(CKO_PRIVATE_KEY))
    /// CKO_SECRET_KEY: a symmetric key, e.g. AES.
    public static let secretKey = ObjectClass(rawValue: UInt(CKO_SECRET_KEY))
}

/// A key type (`CK_KEY_TYPE`).
public struct KeyType: RawRepresentable, Hashable, Sendable {
    /// The `CK_KEY_TYPE` value (`CKK_…`).
    public let rawValue: UInt
    /// Wraps any `CK_KEY_TYPE`, including vendor-defined ones.
    public init(rawValue: UInt) { self.rawValue = rawValue }

    /// CKK_EC: an elliptic-curve key (ECDSA, ECDH); the curve is in `CKA_EC_PARAMS`.
    public static let ec = KeyType(rawValue: UInt(CKK_EC))
    /// CKK_AES: an AES key.
    public static let aes = KeyType(rawValue: UInt(CKK_AES))
}
