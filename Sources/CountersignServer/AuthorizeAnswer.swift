import Audit
import Crypto
import Foundation
import NIOCore
import Policy
import Wire

// What an authorization is made of besides its decision: its id, its audit summary, its answer's body and the
// hash of its intent.

extension Authorizer {
    /// An authorization id (the `jti`): 16 bytes, base64url. The first four are the issue time in seconds, the next
    /// two its milliseconds (both big-endian), the other ten random. Ids issued together sit together in the
    /// store's indexes (the authorization's and its holds' primary keys), so a commit appends to a page or two of
    /// each instead of writing a page per request: at thousands of requests a second, the ids of one second
    /// alone span dozens of index pages. 80 random bits keep them unguessable.
    static func authorizationID(at milliseconds: Int64, random: RandomSource) -> String {
        let seconds = UInt32(truncatingIfNeeded: WallClock.seconds(of: milliseconds))
        let millisecond = UInt16(truncatingIfNeeded: milliseconds - WallClock.seconds(of: milliseconds) * 1000)
        return Base64URL.encode(
            [
                UInt8(seconds >> 24), UInt8(truncatingIfNeeded: seconds >> 16), UInt8(truncatingIfNeeded: seconds >> 8),
                UInt8(truncatingIfNeeded: seconds), UInt8(millisecond >> 8), UInt8(truncatingIfNeeded: millisecond),
            ] + random.bytes(10))
    }

    /// What the audit entry of a decision records (never the JWS itself).
    static func summary(_ decision: Decision, outcome: String, request: AuthorizeRequest, requestHash: Data) -> DecisionSummary {
        DecisionSummary(
            outcome: outcome, amount: request.amount, currency: request.currency, merchant: request.merchantID, tier: decision.judgedTier,
            tierReason: decision.tierReason, policyVersion: decision.policyVersion, checks: decision.checks.auditText,
            intentHash: IntentHash.of(request.intent),
            requestSHA256: Base64URL.encode(Array(requestHash))
        )
    }
}

/// AUTHORIZE's answer: its outcome, and the body that carries it, encoded once.
struct AuthorizeAnswer: Sendable {
    let outcome: AuthorizeOutcome
    let body: ByteBuffer

    init(_ outcome: AuthorizeOutcome) {
        self.outcome = outcome
        self.body = WireJSON.encode(outcome)
    }
}

/// The hash of an agent's stated intent, bound into its authorization.
public enum IntentHash {
    /// base64url of SHA-256 over the intent's canonical JSON (sorted keys, no whitespace, no escaped '/').
    public static func of(_ intent: Intent) -> String {
        let canonical = WireJSON.encode(intent)
        return Base64URL.encode(Array(SHA256.hash(data: Data(canonical.readableBytesView))))
    }
}
