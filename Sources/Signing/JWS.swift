import CanonicalJSON
import CountersignCore
import Crypto
import Foundation

/// The protected header of an authorization: `{"alg":"ES256","kid":"<name>/v<n>","typ":"payauth+jwt"}`.
public struct JWSHeader: Codable, Sendable, Hashable {
    public static let type = "payauth+jwt"

    public var alg: String
    public var typ: String
    public var kid: String

    public init(kid: String) {
        self.alg = "ES256"
        self.typ = Self.type
        self.kid = kid
    }
}

/// The claims of a payment authorization (see docs/protocol.md).
public struct AuthorizationClaims: Codable, Sendable, Hashable {
    public var iss: String
    /// The agent.
    public var sub: String
    /// The merchant.
    public var aud: String
    /// The authorization id: base64url of the issue time in seconds (4 bytes) and its millisecond (2 bytes), then 80 random bits.
    public var jti: String
    public var iat: Int64
    public var nbf: Int64
    public var exp: Int64
    /// Integer minor units.
    public var amount: Int64
    /// ISO 4217.
    public var currency: String
    /// ISO 18245 merchant category code.
    public var mcc: String
    /// base64url SHA-256 of the canonical JSON of the agent's stated intent.
    public var intentHash: String
    public var tier: String
    public var policyVersion: String
    /// Who approved, where a quorum was needed.
    public var approvers: [String]?
    /// The index of this decision's entry in the audit log.
    public var auditLogIndex: Int64?

    enum CodingKeys: String, CodingKey {
        case iss, sub, aud, jti, iat, nbf, exp, amount, currency, mcc
        case intentHash = "intent_hash"
        case tier
        case policyVersion = "policy_version"
        case approvers
        case auditLogIndex = "audit_log_index"
    }

    public init(
        iss: String, sub: String, aud: String, jti: String, iat: Int64, nbf: Int64, exp: Int64, amount: Int64, currency: String, mcc: String,
        intentHash: String, tier: String, policyVersion: String, approvers: [String]? = nil, auditLogIndex: Int64? = nil
    ) {
        self.iss = iss
        self.sub = sub
        self.aud = aud
        self.jti = jti
        self.iat = iat
        self.nbf = nbf
        self.exp = exp
        self.amount = amount
        self.currency = currency
        self.mcc = mcc
        self.intentHash = intentHash
        self.tier = tier
        self.policyVersion = policyVersion
        self.approvers = approvers
        self.auditLogIndex = auditLogIndex
    }
}

/// Compact JWS (RFC 7515 §7.1) with ES256.
public enum CompactJWS {
    /// Signs `claims` with `key`: `base64url(header).base64url(claims).base64url(r‖s)`, header and claims in
    /// their canonical JSON.
    public static func sign(_ claims: some CanonicalJSONEncodable, with key: any AuthorizationSigningKey) async throws -> String {
        let signingInput = Base64URL.encode(JWSHeader(kid: key.keyID.kid).canonicalJSONBytes) + "." + Base64URL.encode(claims.canonicalJSONBytes)
        let signature = try await key.sign(Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(signature)
    }

    /// The parts of a compact JWS, not yet verified.
    public struct Parsed: Sendable {
        public var header: JWSHeader
        public var payload: [UInt8]
        public var signature: [UInt8]
        public var signingInput: [UInt8]
    }

    /// Splits and decodes a compact JWS.
    public static func parse(_ token: String) throws(VerificationError) -> Parsed {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = Base64URL.decode(parts[0]), let payload = Base64URL.decode(parts[1]),
            let signature = Base64URL.decode(parts[2])
        else {
            throw VerificationError(.malformedToken, "not a compact JWS (three base64url parts separated by dots)")
        }
        // Strict: a repeated member would let two JOSE libraries read two different headers.
        guard let header = try? StrictJSONDecoder(allowsUnknownMembers: true).decode(JWSHeader.self, from: headerBytes) else {
            throw VerificationError(.malformedToken, "the JWS header is not a Countersign header")
        }
        return Parsed(header: header, payload: payload, signature: signature, signingInput: Array((parts[0] + "." + parts[1]).utf8))
    }
}
