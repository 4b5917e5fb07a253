import CPKCS11
import Crypto
import Synchronization

/// The two halves of a key pair generated on the token.
public struct KeyPairHandles: Sendable, Hashable {
    /// The public key object (`CKO_PUBLIC_KEY`); read it with ``PKCS11Session/p256PublicKey(_:)``.
    public var publicKey: ObjectHandle
    /// The private key object (`CKO_PRIVATE_KEY`); sign with it in ``PKCS11Session/signECDSA(digest:with:)``.
    public var privateKey: ObjectHandle
}

/// DER of the named curve prime256v1 / secp256r1 (OID 1.2.840.10045.3.1.7), the `CKA_EC_PARAMS` of a P-256 key.
let p256Parameters: [UInt8] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]

extension PKCS11Session {
    /// Generates an EC P-256 signing key pair on the token (`C_GenerateKeyPair`, `CKM_EC_KEY_PAIR_GEN`).
    ///
    /// The private key is a token object that is private, sensitive, never extractable and may only sign;
    /// its bytes never leave the token. Both halves carry `label` and `id`.
    /// - Parameters:
    ///   - label: `CKA_LABEL` of both halves.
    ///   - id: `CKA_ID` of both halves; find the pair again with it.
    /// - Returns: the handles of the public and private key.
    public func generateP256SigningKeyPair(label: String, id: [UInt8]) throws -> KeyPairHandles {
        try self.generateP256KeyPair(label: label, id: id, sensitive: true, extractable: false, persistent: true)
    }

    /// A P-256 signing key pair like ``generateP256SigningKeyPair(label:id:)`` that is a session object: it
    /// is never written to the token's storage and vanishes when the session that made it closes. For
    /// measurements (`countersign bench --baseline`), which must not change the token.
    public func generateSessionP256SigningKeyPair(label: String, id: [UInt8]) throws -> KeyPairHandles {
        try self.generateP256KeyPair(label: label, id: id, sensitive: true, extractable: false, persistent: false)
    }

    /// The key pair generation behind ``generateP256SigningKeyPair(label:id:)``; only tests ask for a private
    /// key that is not sensitive or is extractable (to show such keys are refused).
    func generateP256KeyPair(label: String, id: [UInt8], sensitive: Bool, extractable: Bool, persistent: Bool = true) throws -> KeyPairHandles {
        let generate = try self.module.function("C_GenerateKeyPair", \.C_GenerateKeyPair)
        let publicTemplate: Template = [
            .objectClass(.publicKey),
            .keyType(.ec),
            .bool(.token, persistent),
            .bool(.private, false),
            .bool(.verify, true),
            .bool(.encrypt, false),
            .bool(.wrap, false),
            .bytes(.ecParams, p256Parameters),
            .string(.label, label),
            .bytes(.id, id),
        ]
        let privateTemplate: Template = [
            .objectClass(.privateKey),
            .keyType(.ec),
            .bool(.token, persistent),
            .bool(.private, true),
            .bool(.sensitive, sensitive),
            .bool(.extractable, extractable),
            .bool(.sign, true),
            .bool(.decrypt, false),
            .bool(.unwrap, false),
            .bool(.derive, false),
            .string(.label, label),
            .bytes(.id, id),
        ]
        var mechanism = CK_MECHANISM(mechanism: CK_MECHANISM_TYPE(CKM_EC_KEY_PAIR_GEN), pParameter: nil, ulParameterLen: 0)
        var publicKey: CK_OBJECT_HANDLE = 0
        var privateKey: CK_OBJECT_HANDLE = 0
        try publicTemplate.withUnsafeAttributes { publicAttributes, publicCount in
            try privateTemplate.withUnsafeAttributes { privateAttributes, privateCount in
                try PKCS11Error.check(
                    "C_GenerateKeyPair",
                    self.module.objectStoreLock.withWriteLock {
                        generate(self.rawHandle, &mechanism, publicAttributes, publicCount, privateAttributes, privateCount, &publicKey, &privateKey)
                    }
                )
            }
        }
        return KeyPairHandles(publicKey: ObjectHandle(rawValue: UInt(publicKey)), privateKey: ObjectHandle(rawValue: UInt(privateKey)))
    }

    /// Reads a P-256 public key from the token (`CKA_EC_PARAMS` and `CKA_EC_POINT`).
    ///
    /// - Parameter object: a public key object (or a private key whose module exposes the point).
    /// - Throws: ``KeyError`` when the key is not on P-256 or its point is malformed.
    public func p256PublicKey(_ object: ObjectHandle) throws -> P256.Signing.PublicKey {
        let parameters = try self.attribute(.ecParams, of: object)
        guard parameters == p256Parameters else {
            throw KeyError(code: .unsupportedCurve, reason: "\(object) is not a P-256 key (CKA_EC_PARAMS \(hex(parameters)))")
        }
        let point = try self.attribute(.ecPoint, of: object)
        guard let uncompressed = uncompressedPoint(fromECPoint: point) else {
            throw KeyError(code: .malformedPublicKey, reason: "\(object) has a CKA_EC_POINT that is not an uncompressed P-256 point (\(point.count) bytes)")
        }
        do {
            return try P256.Signing.PublicKey(x963Representation: uncompressed)
        } catch {
            throw KeyError(code: .malformedPublicKey, reason: "\(object) has a CKA_EC_POINT that is not on the P-256 curve")
        }
    }

    /// Signs a SHA-256 digest with `CKM_ECDSA` (`C_SignInit` / `C_Sign`).
    ///
    /// `CKM_ECDSA` returns the raw `r‖s` (64 bytes for P-256), which is also the JWS ES256 signature format.
    /// - Parameters:
    ///   - digest: the SHA-256 of the message; the token signs it as given.
    ///   - privateKey: a P-256 private key on the token.
    public func signECDSA(digest: SHA256Digest, with privateKey: ObjectHandle) throws -> P256.Signing.ECDSASignature {
        let raw = try self.sign(mechanism: .ecdsa, data: Array(digest), with: privateKey, maximumLength: 132)
        guard raw.count == 64, let signature = try? P256.Signing.ECDSASignature(rawRepresentation: raw) else {
            throw KeyError(code: .malformedSignature, reason: "the token returned a \(raw.count)-byte ECDSA signature; a P-256 signature is 64 bytes r‖s")
        }
        return signature
    }

    /// Signs `data` with a parameterless mechanism (`C_SignInit` / `C_Sign`).
    ///
    /// `maximumLength` is the buffer offered first; a token that needs more says so (`CKR_BUFFER_TOO_SMALL`) and is
    /// asked once more with the length it named (up to 16 KiB), so the signing operation always ends.
    public func sign(mechanism type: MechanismType, data: [UInt8], with key: ObjectHandle, maximumLength: Int) throws -> [UInt8] {
        let signInit = try self.module.function("C_SignInit", \.C_SignInit)
        let sign = try self.module.function("C_Sign", \.C_Sign)
        var mechanism = CK_MECHANISM(mechanism: CK_MECHANISM_TYPE(type.rawValue), pParameter: nil, ulParameterLen: 0)
        var signature = [UInt8](repeating: 0, count: maximumLength)
        var length = CK_ULONG(maximumLength)
        var input = data
        try self.module.objectStoreLock.withReadLock { () throws(PKCS11Error) in
            try PKCS11Error.check("C_SignInit", signInit(self.rawHandle, &mechanism, CK_OBJECT_HANDLE(key.rawValue)))
            // Any C_Sign result but CKR_BUFFER_TOO_SMALL ends the operation. That one leaves it active, with the
            // length needed in `length`: the call is made again with room for it, which ends the operation, so a
            // pooled session never goes back with a signing operation open (its next C_SignInit would fail).
            var rv = sign(self.rawHandle, &input, CK_ULONG(input.count), &signature, &length)
            if rv == CK_RV(CKR_BUFFER_TOO_SMALL), Int(length) > signature.count, Int(length) <= 16_384 {
                signature = [UInt8](repeating: 0, count: Int(length))
                rv = sign(self.rawHandle, &input, CK_ULONG(input.count), &signature, &length)
            }
            try PKCS11Error.check("C_Sign", rv)
        }
        return Array(signature.prefix(Int(length)))
    }
}

/// `CKA_EC_POINT` is specified as a DER OCTET STRING around the X9.62 point; some modules return the bare
/// point. Both are accepted, nothing else.
func uncompressedPoint(fromECPoint value: [UInt8]) -> [UInt8]? {
    if value.count == 67, value[0] == 0x04, value[1] == 0x41, value[2] == 0x04 {
        return Array(value[2...])
    }
    if value.count == 65, value[0] == 0x04 {
        return value
    }
    return nil
}
