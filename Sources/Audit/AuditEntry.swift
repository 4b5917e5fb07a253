import CanonicalJSON
import Foundation

/// One entry of the audit log: a decision, an admin action, or a server event. Stored and hashed as its
/// canonical JSON (keys sorted by their UTF-8 bytes, no whitespace, no escaped '/').
///
/// Never holds a PIN, a private key, a credential or a JWS: only the JWS's SHA-256.
public struct AuditEntry: Codable, Sendable, Hashable {
    /// Its position in the log, so a reordering shows at the first entry out of place.
    public var index: Int64
    /// Seconds since 1970.
    public var time: Int64
    /// `decision`, `approval`, `admin` or `server`.
    public var kind: String
    /// What happened: `authorized`, `denied`, `pending_approval`, `approved`, `voided`, `agents.add`,
    /// `keys.rotate`, `server.start`, …
    public var action: String
    /// Who: the agent, the admin, or `server`.
    public var actor: String
    /// What it concerns: an authorization id, a principal, a kid, a context.
    public var subject: String?
    /// For decisions: the policy's record (checks, tier and why, policy version), or the stable code of a refusal.
    public var decision: DecisionSummary?
    /// Anything else, as text.
    public var details: [String: String]?

    public init(
        index: Int64, time: Int64, kind: String, action: String, actor: String, subject: String? = nil, decision: DecisionSummary? = nil,
        details: [String: String]? = nil
    ) {
        self.index = index
        self.time = time
        self.kind = kind
        self.action = action
        self.actor = actor
        self.subject = subject
        self.decision = decision
        self.details = details
    }

    /// The bytes that are stored and hashed.
    public var canonicalJSON: Data {
        Data(self.canonicalJSONBytes)
    }
}

/// What a decision entry records of the request and its outcome.
public struct DecisionSummary: Codable, Sendable, Hashable {
    public var outcome: String
    public var code: String?
    public var amount: Int64?
    public var currency: String?
    public var merchant: String?
    public var tier: String?
    public var tierReason: String?
    public var policyVersion: String?
    /// The decision record's checks, as canonical JSON text.
    public var checks: String?
    public var kid: String?
    /// base64url SHA-256 of the issued compact JWS.
    public var jwsSHA256: String?
    public var intentHash: String?
    public var approvers: [String]?
    /// base64url SHA-256 of the request's canonical JSON: what approvers' passkey assertions bind.
    public var requestSHA256: String?

    enum CodingKeys: String, CodingKey {
        case outcome, code, amount, currency, merchant, tier
        case tierReason = "tier_reason"
        case policyVersion = "policy_version"
        case checks, kid
        case jwsSHA256 = "jws_sha256"
        case intentHash = "intent_hash"
        case approvers
        case requestSHA256 = "request_sha256"
    }

    public init(
        outcome: String, code: String? = nil, amount: Int64? = nil, currency: String? = nil, merchant: String? = nil, tier: String? = nil,
        tierReason: String? = nil, policyVersion: String? = nil, checks: String? = nil, kid: String? = nil, jwsSHA256: String? = nil,
        intentHash: String? = nil, approvers: [String]? = nil, requestSHA256: String? = nil
    ) {
        self.outcome = outcome
        self.code = code
        self.amount = amount
        self.currency = currency
        self.merchant = merchant
        self.tier = tier
        self.tierReason = tierReason
        self.policyVersion = policyVersion
        self.checks = checks
        self.kid = kid
        self.jwsSHA256 = jwsSHA256
        self.intentHash = intentHash
        self.approvers = approvers
        self.requestSHA256 = requestSHA256
    }
}
