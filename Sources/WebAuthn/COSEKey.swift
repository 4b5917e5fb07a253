import Crypto

/// A credential public key in COSE form (RFC 9052/9053), as an authenticator gives it at registration: ES256
/// (P-256, `alg` -7) or EdDSA over Ed25519 (`alg` -8). Any other key is refused.
public enum COSEKey: Sendable {
    case es256(P256.Signing.PublicKey)
    case ed25519(Curve25519.Signing.PublicKey)

    /// The COSE algorithm: -7 (ES256) or -8 (EdDSA).
    public var algorithm: Int {
        switch self {
        case .es256: -7
        case .ed25519: -8
        }
    }

    public var algorithmName: String {
        switch self {
        case .es256: "ES256"
        case .ed25519: "EdDSA"
        }
    }

    /// Reads a COSE_Key map.
    public init(_ key: CBOR) throws(WebAuthnError) {
        let (kty, alg) = (key[1]?.integer, key[3]?.integer)
        switch (kty, alg) {
        case (2, -7):
            guard key[-1]?.integer == 1, case .bytes(let x)? = key[-2], case .bytes(let y)? = key[-3], x.count == 32, y.count == 32 else {
                throw WebAuthnError(.unsupportedKey, "an ES256 key must be a P-256 point with 32-byte coordinates")
            }
            do {
                self = .es256(try P256.Signing.PublicKey(x963Representation: [0x04] + x + y))
            } catch {
                throw WebAuthnError(.unsupportedKey, "the ES256 key is not a point on P-256")
            }
        case (1, -8):
            guard key[-1]?.integer == 6, case .bytes(let x)? = key[-2], x.count == 32 else {
                throw WebAuthnError(.unsupportedKey, "an EdDSA key must be an Ed25519 key of 32 bytes")
            }
            do {
                self = .ed25519(try Curve25519.Signing.PublicKey(rawRepresentation: x))
            } catch {
                throw WebAuthnError(.unsupportedKey, "the Ed25519 key cannot be read")
            }
        default:
            throw WebAuthnError(.unsupportedKey, "only ES256 (-7) and EdDSA over Ed25519 (-8) credentials are accepted, not kty \(kty ?? 0), alg \(alg ?? 0)")
        }
    }

    /// Reads the encoded COSE_Key, as stored.
    public init(encoded: [UInt8]) throws(WebAuthnError) {
        do {
            try self.init(CBOR.decode(encoded))
        } catch let error as WebAuthnError {
            throw error
        } catch {
            throw WebAuthnError(.unsupportedKey, "the stored key is not CBOR: \(error)")
        }
    }

    /// Whether `signature` (DER for ES256, 64 bytes for EdDSA) signs `message`.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        switch self {
        case .es256(let key):
            guard let parsed = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return key.isValidSignature(parsed, for: message)
        case .ed25519(let key):
            return key.isValidSignature(signature, for: message)
        }
    }
}
