import CanonicalJSON
import CountersignCore
import Crypto
import Foundation
import Policy

/// A public key as published (RFC 7517), with Countersign's members beside the standard ones: the tier the
/// key signs for and the highest amount that tier may sign, per currency, so a merchant can refuse a
/// high amount signed by a low-tier key.
public struct JWK: Codable, Sendable, Hashable {
    public var kty: String
    public var crv: String
    public var x: String
    public var y: String
    public var kid: String
    public var alg: String
    public var use: String
    public var tier: String
    /// Integer minor units per ISO 4217 code.
    public var maxAmount: [String: Int64]
    /// `software` or `hsm`.
    public var backend: String

    enum CodingKeys: String, CodingKey {
        case kty, crv, x, y, kid, alg, use, tier
        case maxAmount = "max_amount"
        case backend
    }

    public init(key: any AuthorizationSigningKey, tier: Tier) {
        self.init(keyID: key.keyID, publicKeyX963: key.publicKeyX963, backend: key.backend, tier: tier.name, maxAmount: tier.maximumAmounts)
    }

    /// - Parameters:
    ///   - publicKeyX963: the uncompressed point (65 bytes).
    ///   - tier: the tier the key signs for (`audit` for the audit log's key, which may sign no amount).
    ///   - maxAmount: the highest amount the key may vouch for, per currency; empty for none.
    public init(keyID: KeyID, publicKeyX963: Data, backend: KeyBackend, tier: String, maxAmount: [String: Int64]) {
        let point = publicKeyX963
        self.kty = "EC"
        self.crv = "P-256"
        self.x = Base64URL.encode(point[point.startIndex + 1..<point.startIndex + 33])
        self.y = Base64URL.encode(point[point.startIndex + 33..<point.startIndex + 65])
        self.kid = keyID.kid
        self.alg = "ES256"
        self.use = "sig"
        self.tier = tier
        self.maxAmount = maxAmount
        self.backend = backend.rawValue
    }

    /// The P-256 public key this JWK describes.
    public func publicKey() throws(VerificationError) -> P256.Signing.PublicKey {
        guard self.kty == "EC", self.crv == "P-256", let x = Base64URL.decode(self.x), let y = Base64URL.decode(self.y), x.count == 32, y.count == 32,
            let key = try? P256.Signing.PublicKey(x963Representation: [0x04] + x + y)
        else {
            throw VerificationError(.malformedToken, "the JWK '\(self.kid)' is not a P-256 public key")
        }
        return key
    }
}

/// A JWK Set: `{"keys": [...]}`.
public struct JWKSet: Codable, Sendable, Hashable {
    public var keys: [JWK]

    public init(keys: [JWK]) {
        self.keys = keys
    }

    public func key(kid: String) -> JWK? {
        self.keys.first { $0.kid == kid }
    }
}

/// Why an authorization does not verify: one of the verifier's codes (`MALFORMED_TOKEN`, `UNKNOWN_KEY`,
/// `BAD_SIGNATURE`, `EXPIRED`, `NOT_YET_VALID`, `AMOUNT_ABOVE_KEY_LIMIT`).
public typealias VerificationError = LayerError<VerificationLayer>

/// The layer of ``VerificationError`` (the offline verifier).
public enum VerificationLayer: ErrorLayer {}

/// Verifies authorizations offline against a JWK Set, as a merchant would.
public struct AuthorizationVerifier: Sendable {
    public var keySet: JWKSet

    public init(keySet: JWKSet) {
        self.keySet = keySet
    }

    /// Checks the signature, the time window at `now` (seconds since 1970), and that the key's tier may sign
    /// the amount.
    /// - Returns: the verified header and claims.
    public func verify(_ token: String, now: Int64) throws(VerificationError) -> (header: JWSHeader, claims: AuthorizationClaims) {
        let parsed = try CompactJWS.parse(token)
        guard parsed.header.alg == "ES256" else { throw VerificationError(.malformedToken, "alg must be ES256, not '\(parsed.header.alg)'") }
        guard let jwk = self.keySet.key(kid: parsed.header.kid) else {
            throw VerificationError(.unknownKey, "no key '\(parsed.header.kid)' in the key set")
        }
        let publicKey = try jwk.publicKey()
        guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: parsed.signature),
            publicKey.isValidSignature(signature, for: parsed.signingInput)
        else {
            throw VerificationError(.badSignature, "the signature does not verify with key '\(jwk.kid)'")
        }
        guard let claims = try? StrictJSONDecoder(allowsUnknownMembers: true).decode(AuthorizationClaims.self, from: parsed.payload) else {
            throw VerificationError(.malformedToken, "the claims are not a Countersign authorization")
        }
        guard now < claims.exp else { throw VerificationError(.expired, "the authorization expired at \(claims.exp)") }
        guard now >= claims.nbf else { throw VerificationError(.notYetValid, "the authorization is valid from \(claims.nbf)") }
        guard let limit = jwk.maxAmount[claims.currency], claims.amount <= limit else {
            throw VerificationError(.amountAboveKeyLimit, "key '\(jwk.kid)' (tier \(jwk.tier)) may not sign \(claims.amount) \(claims.currency)")
        }
        return (parsed.header, claims)
    }
}
