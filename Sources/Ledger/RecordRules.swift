import CountersignCore
import Foundation

// What a store may do to a record, decided the same way by every store: each store reads the row (locked), asks
// here, and writes what comes back.

extension AuthorizationRecord {
    /// `record` voided by `agent` at `now`; `changed` is false when it was voided before (it is answered as it is).
    /// - Throws: `AUTHORIZATION_NOT_FOUND` for no record or another agent's, in the same words (an agent learns nothing
    ///   about ids that are not its own); `AUTHORIZATION_EXPIRED` when there is nothing left to withdraw.
    package static func voiding(
        _ record: AuthorizationRecord?, id: String, by agent: String, at now: Int64
    ) throws -> (
        record: AuthorizationRecord, changed: Bool
    ) {
        guard var record, record.agent == agent else {
            throw LedgerError(.authorizationNotFound, "no authorization '\(id)'")
        }
        if record.voidedAt != nil { return (record, false) }
        let status = record.status(at: now)
        // Approved but not signed yet (the HSM failed, the tier was removed): its holds count for good from the quorum,
        // so its agent can withdraw it, deadline or not, and it is never signed afterwards.
        guard status == .approved || ((status == .authorized || status == .pendingApproval) && now < record.expiresAt) else {
            throw LedgerError(
                .authorizationExpired, "authorization '\(id)' is \(status == .authorized ? "expired" : status.rawValue); there is nothing to void")
        }
        record.voidedAt = now
        return (record, true)
    }

    /// An approved `record` completed with its signed answer, to be stored with its audit entry at `auditIndex`.
    /// - Throws: `AUTHORIZATION_NOT_FOUND`; `APPROVAL_CLOSED` unless it is approved and not withdrawn.
    package static func completing(
        _ record: AuthorizationRecord?, id: String, response: Data, kid: String, expiresAt: Int64, auditIndex: Int64
    ) throws
        -> AuthorizationRecord
    {
        guard var record else { throw LedgerError(.authorizationNotFound, "no authorization '\(id)'") }
        guard record.status == .approved else {
            throw LedgerError(.approvalClosed, "authorization '\(id)' is \(record.status.rawValue), not approved")
        }
        guard record.voidedAt == nil else {
            throw LedgerError(.approvalClosed, "authorization '\(id)' was withdrawn by its agent before it was signed")
        }
        record.status = .authorized
        record.response = response
        record.kid = kid
        record.expiresAt = expiresAt
        record.auditIndex = auditIndex
        return record
    }
}

extension PrincipalRecord {
    /// `principal` with a new credential key; the old one is still accepted until `graceUntil`.
    /// - Throws: `PRINCIPAL_NOT_FOUND` for no principal or a revoked one.
    package static func rotating(
        _ principal: PrincipalRecord?, id: String, algorithm: String, publicKey: Data, graceUntil: Int64
    ) throws
        -> PrincipalRecord
    {
        guard var principal, principal.revokedAt == nil else {
            throw LedgerError(.principalNotFound, "no active principal named '\(id)'")
        }
        principal.previousAlgorithm = principal.algorithm
        principal.previousPublicKey = principal.publicKey
        principal.previousKeyExpiresAt = graceUntil
        principal.algorithm = algorithm
        principal.publicKey = publicKey
        return principal
    }
}
