import Foundation
import Logging
import Policy
import Signing
import Wire

/// Signs authorizations with the active key of their tier, and starts a key's automatic rotation when it reaches
/// its signature limit. Used for direct authorizations and for those a quorum of approvers released.
struct AuthorizationSigner: Sendable {
    let keyRing: KeyRing
    let issuer: String
    let wallClock: WallClock
    let logger: Logger

    /// Signs an authorization for `request` with the tier's active key, issued at `now` (the decision's time,
    /// which also begins the id of a direct authorization; the quorum's time for an approved one).
    /// - Throws: ``WireError`` `SIGNING_UNAVAILABLE` (no active key) or `HSM_UNAVAILABLE`, both retryable.
    func sign(
        _ request: AuthorizeRequest, id: String, agent: String, tier: Tier, policyVersion: String, approvers: [String]?, auditIndex: Int64,
        intentHash: String? = nil, at now: Int64
    ) async throws -> Authorization {
        guard let key = self.keyRing.key(for: tier) else {
            throw WireError(.signingUnavailable, "no active key for tier '\(tier.name)'")
        }
        let claims = AuthorizationClaims(
            iss: self.issuer, sub: agent, aud: request.merchantID, jti: id, iat: now, nbf: now, exp: now + tier.lifetimeSeconds, amount: request.amount,
            currency: request.currency, mcc: request.merchantCategoryCode, intentHash: intentHash ?? IntentHash.of(request.intent), tier: tier.name,
            policyVersion: policyVersion, approvers: approvers, auditLogIndex: auditIndex
        )
        let jws: String
        do {
            jws = try await CompactJWS.sign(claims, with: key)
        } catch let error as SigningError {
            throw error.wireError
        }
        if self.keyRing.countSignature(key.keyID) {
            // The key reached its signature limit: the next version takes over; this signature still counts.
            let keyRing = self.keyRing
            let now = self.wallClock.secondsSince1970
            Task { [logger] in
                do {
                    _ = try await keyRing.rotateByPolicy(name: key.keyID.name, reason: "max_signatures reached", at: now)
                } catch {
                    logger.error("automatic rotation failed", metadata: ["key": "\(key.keyID.name)", "error": "\(error)"])
                }
            }
        }
        return Authorization(
            jws: jws, authorizationID: id, tier: tier.name, kid: key.keyID.kid, keyName: key.keyID.name, keyVersion: key.keyID.version,
            keyBackend: key.backend.rawValue, expiresAt: claims.exp, approvers: approvers
        )
    }
}
