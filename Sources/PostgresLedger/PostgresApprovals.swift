import Audit
import CountersignCore
import Foundation
import Ledger
import Logging
import PostgresNIO

extension PostgresStore {
    public func pendingApprovals(now: Int64) async throws -> [AuthorizationRecord] {
        try await self.read("read pending approvals") { client in
            try await PostgresRows.authorizations(
                try await client.query(
                    """
                    SELECT \(unescaped: PostgresRows.authorizationColumns) FROM "authorization"
                    WHERE status = 'pending_approval' AND voidedAt IS NULL AND approvalExpiresAt > \(now) ORDER BY createdAt, id
                    """,
                    logger: self.logger
                )
            )
        }
    }

    public func approvals(of id: String) async throws -> [ApprovalRecord] {
        try await self.read("read approvals") { client in
            var records: [ApprovalRecord] = []
            for try await (authorizationID, approver, verdict, decidedAt) in try await client.query(
                "SELECT authorizationID, approver, verdict, decidedAt FROM approval WHERE authorizationID = \(id) ORDER BY decidedAt, approver",
                logger: self.logger
            ).decode((String, String, String, Int64).self) {
                guard let verdict = ApprovalRecord.Verdict(rawValue: verdict) else { continue }
                records.append(ApprovalRecord(authorizationID: authorizationID, approver: approver, verdict: verdict, decidedAt: decidedAt))
            }
            return records
        }
    }

    /// Under the authorization's row lock: two approvers on two servers completing one quorum are serialized,
    /// and exactly one of them sees `quorumReached`.
    public func decideApproval(id: String, approver: String, verdict: ApprovalRecord.Verdict, at now: Int64) async throws -> ApprovalStep {
        try await self.write("record a verdict") { connection, logger in
            guard var record = try await Self.authorization(id: id, forUpdate: true, on: connection, logger: logger) else {
                throw LedgerError(.authorizationNotFound, "no authorization '\(id)'")
            }
            try ApprovalRules.check(record, approver: approver, at: now)
            let earlier = try await connection.query(
                "SELECT 1 FROM approval WHERE authorizationID = \(id) AND approver = \(approver)", logger: logger
            ).first(Int32.self)
            if earlier != nil {
                throw LedgerError(.alreadyDecided, "'\(approver)' already gave a verdict on authorization '\(id)'; a quorum needs distinct approvers")
            }
            try await connection.query(
                "INSERT INTO approval (authorizationID, approver, verdict, decidedAt) VALUES (\(id), \(approver), \(verdict.rawValue), \(now))", logger: logger)
            switch verdict {
            case .deny:
                record.status = .denied
                try await connection.query("UPDATE \"authorization\" SET status = 'denied' WHERE id = \(id)", logger: logger)
                try await Self.releaseHolds(of: id, at: now, on: connection, logger: logger)
                try await ChangeFeed.notify(.authorization(id: id), on: connection, logger: logger)
                return .denied(record)
            case .approve:
                var approvers: [String] = []
                for try await name in try await connection.query(
                    "SELECT approver FROM approval WHERE authorizationID = \(id) AND verdict = 'approve' ORDER BY decidedAt, approver", logger: logger
                ).decode(String.self) {
                    approvers.append(name)
                }
                guard approvers.count >= record.quorum ?? 1 else { return .approvedBy(record, approvers: approvers) }
                record.status = .approved
                try await connection.query("UPDATE \"authorization\" SET status = 'approved' WHERE id = \(id)", logger: logger)
                // From the quorum on, its holds count like a signed authorization's (LedgerStore.decideApproval says why).
                try await connection.query("UPDATE hold SET expiresAt = NULL WHERE authorizationID = \(id)", logger: logger)
                try await ChangeFeed.notify(.authorization(id: id), on: connection, logger: logger)
                return .quorumReached(record, approvers: approvers)
            }
        }
    }

    /// Each record is expired in its own transaction, under its row lock, with an audit index reserved inside it:
    /// two servers expiring at once write one entry per record, not two.
    public func expirePendingApprovals(
        at now: Int64, entry: @escaping @Sendable (Int64, AuthorizationRecord) -> AuditEntry
    ) async throws -> [AuthorizationRecord] {
        let due = try await self.read("read approvals past their deadline") { client in
            try await PostgresRows.authorizations(
                try await client.query(
                    """
                    SELECT \(unescaped: PostgresRows.authorizationColumns) FROM "authorization"
                    WHERE status = 'pending_approval' AND voidedAt IS NULL AND approvalExpiresAt <= \(now)
                    """,
                    logger: self.logger
                )
            )
        }
        var expired: [AuthorizationRecord] = []
        for record in due {
            let changed = try await self.writeAudited("expire an approval", reserved: nil) {
                connection, logger, reserve -> (AuthorizationRecord?, AuditWrite?) in
                guard var current = try await Self.authorization(id: record.id, forUpdate: true, on: connection, logger: logger),
                    current.status == .pendingApproval, current.voidedAt == nil
                else { return (nil, nil) }
                current.status = .expired
                try await connection.query("UPDATE \"authorization\" SET status = 'expired' WHERE id = \(current.id)", logger: logger)
                try await Self.releaseHolds(of: current.id, at: now, on: connection, logger: logger)
                try await ChangeFeed.notify(.authorization(id: current.id), on: connection, logger: logger)
                return (current, AuditWrite(entry(try await reserve(), current)))
            }
            if let changed { expired.append(changed) }
        }
        return expired
    }

    public func completeApproval(id: String, response: Data, kid: String, expiresAt: Int64, audit: AuditEntry) async throws -> AuthorizationRecord {
        let write = AuditWrite(audit)
        return try await self.writeAudited("store an approved authorization", reserved: audit.index) {
            connection, logger, _ -> (AuthorizationRecord, AuditWrite?) in
            let record = try AuthorizationRecord.completing(
                try await Self.authorization(id: id, forUpdate: true, on: connection, logger: logger), id: id, response: response, kid: kid,
                expiresAt: expiresAt, auditIndex: audit.index)
            try await connection.query(
                """
                UPDATE "authorization" SET status = 'authorized', response = \(bytea(response)), kid = \(kid), expiresAt = \(expiresAt),
                    auditIndex = \(audit.index)
                WHERE id = \(id)
                """,
                logger: logger
            )
            try await connection.query("UPDATE hold SET expiresAt = NULL WHERE authorizationID = \(id)", logger: logger)
            try await ChangeFeed.notify(.authorization(id: id), on: connection, logger: logger)
            return (record, write)
        }
    }
}
