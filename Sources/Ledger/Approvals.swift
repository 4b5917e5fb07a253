import Audit
import CountersignCore
import Foundation
import GRDB

/// Where an approval stands after one approver's verdict.
public enum ApprovalStep: Sendable, Hashable {
    /// Approved by `approvers` so far; the quorum is not reached yet.
    case approvedBy(AuthorizationRecord, approvers: [String])
    /// The quorum is reached: the record is now `approved` and the caller signs it.
    case quorumReached(AuthorizationRecord, approvers: [String])
    /// Denied: its holds are released.
    case denied(AuthorizationRecord)
}

/// Whether an approver may give a verdict on a record now: the same rules for every store.
package enum ApprovalRules {
    /// - Returns: the record's quorum.
    /// - Throws: `FORBIDDEN` when the approver is the requesting agent; `APPROVAL_EXPIRED`; `APPROVAL_CLOSED`
    ///   when already decided or withdrawn.
    @discardableResult
    package static func check(_ record: AuthorizationRecord, approver: String, at now: Int64) throws -> Int {
        let id = record.id
        guard record.agent != approver else {
            throw LedgerError(.forbidden, "'\(approver)' requested authorization '\(id)' and may not approve or deny it")
        }
        let status = record.status(at: now)
        if status == .expired {
            throw LedgerError(.approvalExpired, "authorization '\(id)' waited for approval until \(record.approvalExpiresAt ?? 0) and expired")
        }
        guard record.voidedAt == nil else {
            throw LedgerError(.approvalClosed, "authorization '\(id)' was withdrawn by its agent")
        }
        guard status == .pendingApproval, let quorum = record.quorum else {
            throw LedgerError(.approvalClosed, "authorization '\(id)' is \(status.rawValue); it no longer takes verdicts")
        }
        return quorum
    }
}

extension LedgerStore {
    /// Requests waiting for approval at `now`, oldest first.
    public func pendingApprovals(now: Int64) async throws -> [AuthorizationRecord] {
        try await self.read { db in
            try AuthorizationRecord
                .filter(
                    Column("status") == AuthorizationRecord.Status.pendingApproval.rawValue && Column("voidedAt") == nil && Column("approvalExpiresAt") > now
                )
                .order(Column("createdAt"), Column("id"))
                .fetchAll(db)
        }
    }

    /// The verdicts given on an authorization, in the order given.
    public func approvals(of id: String) async throws -> [ApprovalRecord] {
        try await self.read { db in
            try ApprovalRecord.filter(Column("authorizationID") == id).order(Column("decidedAt"), Column("approver")).fetchAll(db)
        }
    }

    /// Records one approver's verdict, atomically with its effect: a deny releases the holds; the approval that
    /// completes the quorum moves the record to `approved`, so exactly one caller signs it.
    ///
    /// - Throws: ``LedgerError``: `AUTHORIZATION_NOT_FOUND`; `FORBIDDEN` when the approver is the requesting
    ///   agent; `APPROVAL_EXPIRED`; `APPROVAL_CLOSED` when it was already decided or withdrawn;
    ///   `ALREADY_DECIDED` when this approver already gave a verdict.
    public func decideApproval(id: String, approver: String, verdict: ApprovalRecord.Verdict, at now: Int64) async throws -> ApprovalStep {
        try await self.write { db in
            guard var record = try AuthorizationRecord.fetchOne(db, key: id) else {
                throw LedgerError(.authorizationNotFound, "no authorization '\(id)'")
            }
            let quorum = try ApprovalRules.check(record, approver: approver, at: now)
            if try ApprovalRecord.fetchOne(db, key: ["authorizationID": id, "approver": approver]) != nil {
                throw LedgerError(.alreadyDecided, "'\(approver)' already gave a verdict on authorization '\(id)'; a quorum needs distinct approvers")
            }
            try ApprovalRecord(authorizationID: id, approver: approver, verdict: verdict, decidedAt: now).insert(db)
            switch verdict {
            case .deny:
                record.status = .denied
                try record.update(db)
                try Self.releaseHolds(in: db, of: id, at: now)
                return .denied(record)
            case .approve:
                let approvers = try String.fetchAll(
                    db,
                    sql: "SELECT approver FROM approval WHERE authorizationID = ? AND verdict = 'approve' ORDER BY decidedAt, approver",
                    arguments: [id]
                )
                guard approvers.count >= quorum else { return .approvedBy(record, approvers: approvers) }
                record.status = .approved
                try record.update(db)
                // From the quorum on, its holds count like a signed authorization's: past the approval deadline, while
                // the signature is made (a slow or failing HSM), they must not stop counting and let others spend
                // the room they would take back when the signature is stored.
                try db.execute(sql: "UPDATE hold SET expiresAt = NULL WHERE authorizationID = ?", arguments: [id])
                return .quorumReached(record, approvers: approvers)
            }
        }
    }

    /// Marks every pending approval past its deadline `expired` and releases its holds (they stopped counting
    /// at the deadline already); each gets its audit entry in the same transaction.
    /// - Returns: the records expired now.
    public func expirePendingApprovals(
        at now: Int64, entry: @escaping @Sendable (Int64, AuthorizationRecord) -> AuditEntry
    ) async throws -> [AuthorizationRecord] {
        let due = try await self.read { db in
            try AuthorizationRecord
                .filter(
                    Column("status") == AuthorizationRecord.Status.pendingApproval.rawValue && Column("voidedAt") == nil && Column("approvalExpiresAt") <= now
                )
                .fetchAll(db)
        }
        var expired: [AuthorizationRecord] = []
        for record in due {
            let audit = AuditWrite(entry(self.reserveAuditIndex(), record))
            let changed = try await self.writeAudited(audit) { db -> AuthorizationRecord? in
                guard var current = try AuthorizationRecord.fetchOne(db, key: record.id), current.status == .pendingApproval else { return nil }
                current.status = .expired
                try current.update(db)
                try Self.releaseHolds(in: db, of: current.id, at: now)
                return current
            }
            if let changed { expired.append(changed) }
        }
        return expired
    }

    /// Stores the signed answer of an approved authorization, with its audit entry. Its holds count like any
    /// authorization's since the quorum; they are made so here too for a record approved by an earlier version.
    public func completeApproval(id: String, response: Data, kid: String, expiresAt: Int64, audit: AuditEntry) async throws -> AuthorizationRecord {
        try await self.writeAudited(AuditWrite(audit)) { db in
            let record = try AuthorizationRecord.completing(
                try AuthorizationRecord.fetchOne(db, key: id), id: id, response: response, kid: kid, expiresAt: expiresAt, auditIndex: audit.index)
            try record.update(db)
            try db.execute(sql: "UPDATE hold SET expiresAt = NULL WHERE authorizationID = ?", arguments: [id])
            return record
        }
    }
}
