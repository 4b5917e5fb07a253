import Audit
import CountersignCore
import Foundation
import Ledger
import Logging
import Policy
import PostgresNIO

extension PostgresStore {
    public func recordAuthorization(
        _ record: AuthorizationRecord, scopes: [BudgetScope]?, limits: [BudgetCheck], audit: AuditEntry?, alternatives: AuditAlternatives?
    ) async throws -> RecordingOutcome {
        var record = record
        let entry: AuditEntry
        if let audit {
            entry = audit
        } else {
            entry = try await self.plainEntry(time: record.createdAt, action: record.status.rawValue, actor: record.agent, subject: record.id)
        }
        record.auditIndex = entry.index
        return try await self.committer.commit(
            .authorization(record, scopes: scopes ?? [.agent(record.agent)], limits: limits, audit: AuditWrite(entry), alternatives: alternatives),
            timeout: self.configuration.operationTimeout, time: self.time
        )
    }

    public func recordRefusal(_ refusal: RefusalRecord, audit: AuditEntry?) async throws {
        var refusal = refusal
        let entry: AuditEntry
        if let audit {
            entry = audit
        } else {
            entry = AuditEntry(
                index: try await self.reserveAuditIndex(), time: refusal.createdAt, kind: "decision", action: "denied", actor: refusal.agent,
                decision: DecisionSummary(outcome: "denied", code: refusal.code)
            )
        }
        refusal.auditIndex = entry.index
        _ = try await self.committer.commit(.refusal(refusal, audit: AuditWrite(entry)), timeout: self.configuration.operationTimeout, time: self.time)
    }

    private func plainEntry(time: Int64, action: String, actor: String, subject: String) async throws -> AuditEntry {
        AuditEntry(index: try await self.reserveAuditIndex(), time: time, kind: "decision", action: action, actor: actor, subject: subject)
    }

    public func refusals(agent: String) async throws -> [RefusalRecord] {
        try await self.read("read refusals") { client in
            var records: [RefusalRecord] = []
            for try await row in try await client.query(
                "SELECT \(unescaped: PostgresRows.refusalColumns) FROM refusal WHERE agent = \(agent) ORDER BY id", logger: self.logger)
            {
                records.append(try PostgresRows.refusal(row))
            }
            return records
        }
    }

    public func voidAuthorization(id: String, agent: String, at now: Int64) async throws -> AuthorizationRecord {
        try await self.write("void an authorization") { connection, logger in
            let (record, changed) = try AuthorizationRecord.voiding(
                try await Self.authorization(id: id, forUpdate: true, on: connection, logger: logger), id: id, by: agent, at: now)
            guard changed else { return record }
            try await connection.query("UPDATE \"authorization\" SET voidedAt = \(now) WHERE id = \(id)", logger: logger)
            try await Self.releaseHolds(of: id, at: now, on: connection, logger: logger)
            try await ChangeFeed.notify(.authorization(id: id), on: connection, logger: logger)
            return record
        }
    }

    static func releaseHolds(of id: String, at now: Int64, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("UPDATE hold SET releasedAt = \(now) WHERE authorizationID = \(id) AND releasedAt IS NULL", logger: logger)
    }

    public func spent(scope: BudgetScope, currency: String, since windowStart: Int64, now: Int64) async throws -> Int64 {
        try await self.spending(scope: scope, currency: currency, since: windowStart, now: now).counted
    }

    public func spending(scope: BudgetScope, currency: String, since windowStart: Int64, now: Int64) async throws -> ScopeSpending {
        try await self.read("read a budget's spending") { client in
            let rows = try await client.query(
                """
                SELECT COALESCE(SUM(amount) FILTER (WHERE expiresAt IS NULL OR expiresAt > \(now)), 0)::bigint,
                       COALESCE(SUM(amount) FILTER (WHERE expiresAt IS NOT NULL AND expiresAt > \(now)), 0)::bigint
                FROM hold WHERE scope = \(scope.key) AND currency = \(currency) AND createdAt >= \(windowStart) AND releasedAt IS NULL
                """,
                logger: self.logger
            )
            for try await (counted, pending) in rows.decode((Int64, Int64).self) {
                return ScopeSpending(counted: counted, pending: pending)
            }
            return ScopeSpending(counted: 0, pending: 0)
        }
    }

    public func spendingFacts(
        agent: String, currency: String, merchant: String, historySince: Int64, splittingSince: Int64, now: Int64
    ) async throws -> SpendingFacts {
        try await self.read("read an agent's history") { client in
            let rows = try await client.query(
                """
                SELECT
                  (SELECT COUNT(*) FROM "authorization" WHERE agent = \(agent) AND currency = \(currency) AND createdAt >= \(historySince)
                     AND status = 'authorized' AND voidedAt IS NULL)::bigint,
                  (SELECT COALESCE(SUM(amount), 0) FROM "authorization" WHERE agent = \(agent) AND currency = \(currency) AND createdAt >= \(historySince)
                     AND status = 'authorized' AND voidedAt IS NULL)::bigint,
                  EXISTS (SELECT 1 FROM "authorization" WHERE agent = \(agent) AND merchant = \(merchant) AND status = 'authorized'),
                  (SELECT COALESCE(SUM(a.amount), 0) FROM "authorization" a JOIN hold h ON h.authorizationID = a.id AND h.scope = 'agent:' || a.agent
                     WHERE a.agent = \(agent) AND a.merchant = \(merchant) AND a.currency = \(currency) AND a.createdAt >= \(splittingSince)
                       AND h.releasedAt IS NULL AND (h.expiresAt IS NULL OR h.expiresAt > \(now)))::bigint
                """,
                logger: self.logger
            )
            for try await (count, total, paidBefore, recent) in rows.decode((Int64, Int64, Bool, Int64).self) {
                // Integers throughout: the mean of minor units, rounded half up.
                let mean = count > 0 ? (total + count / 2) / count : 0
                return SpendingFacts(historyCount: Int(count), historyMeanAmount: mean, merchantPaidBefore: paidBefore, recentSpendAtMerchant: recent)
            }
            return SpendingFacts(historyCount: 0, historyMeanAmount: 0, merchantPaidBefore: false, recentSpendAtMerchant: 0)
        }
    }

    /// Always read: another server may have recorded the key a moment ago, so no server can answer "never seen"
    /// from memory.
    public func authorization(agent: String, idempotencyKey: String, certain: Bool) async throws -> AuthorizationRecord? {
        // Other servers record keys too: there is no local filter to answer "certainly new", so every request reads,
        // together with the requests that read at the same moment.
        let what = "read an authorization"
        let found = try await self.batched(what, self.idempotencyLookups, IdempotencyKey(agent: agent, key: idempotencyKey))
        do {
            return try found.get()
        } catch {
            throw Self.failure(error, doing: what)
        }
    }

    /// The authorizations recorded for `keys`, one statement for all; `nil` where none is. A row this server cannot
    /// read (a status written by a newer version, say) fails only the read that asked for it, not the whole batch.
    static func authorizations(_ keys: [IdempotencyKey], client: PostgresClient, logger: Logger) async throws -> [Result<AuthorizationRecord?, any Error>] {
        let rows = try await client.query(PostgresRows.authorizations(agents: keys.map(\.agent), idempotencyKeys: keys.map(\.key)), logger: logger)
        var found: [IdempotencyKey: Result<AuthorizationRecord?, any Error>] = [:]
        for try await row in rows {
            // The pair the row answers for: the second and third of PostgresRows.authorizationColumns.
            let columns = row.makeRandomAccess()
            let key = IdempotencyKey(agent: try columns[1].decode(String.self), key: try columns[2].decode(String.self))
            found[key] = Result { try PostgresRows.authorization(row) }
        }
        return keys.map { found[$0] ?? .success(nil) }
    }

    public func authorization(id: String) async throws -> AuthorizationRecord? {
        try await self.read("read an authorization") { client in
            try await PostgresRows.authorizations(
                try await client.query("SELECT \(unescaped: PostgresRows.authorizationColumns) FROM \"authorization\" WHERE id = \(id)", logger: self.logger)
            ).first
        }
    }

    public func authorizations(agent: String, createdAfter after: Int64, upTo: Int64) async throws -> [AuthorizationRecord] {
        try await self.read("read an agent's authorizations") { client in
            try await PostgresRows.authorizations(
                try await client.query(
                    """
                    SELECT \(unescaped: PostgresRows.authorizationColumns) FROM "authorization"
                    WHERE agent = \(agent) AND createdAt > \(after) AND createdAt <= \(upTo) ORDER BY createdAt, id COLLATE "C"
                    """, logger: self.logger))
        }
    }

    public func authorizationCount() async throws -> Int {
        try await self.read("count authorizations") { client in
            try await client.query("SELECT COUNT(*)::bigint FROM \"authorization\"", logger: self.logger).first(Int64.self).map(Int.init) ?? 0
        }
    }

    static func authorization(agent: String, idempotencyKey: String, on connection: PostgresConnection, logger: Logger) async throws -> AuthorizationRecord? {
        try await PostgresRows.authorizations(
            try await connection.query(
                "SELECT \(unescaped: PostgresRows.authorizationColumns) FROM \"authorization\" WHERE agent = \(agent) AND idempotencyKey = \(idempotencyKey)",
                logger: logger
            )
        ).first
    }

    static func authorization(id: String, forUpdate: Bool, on connection: PostgresConnection, logger: Logger) async throws -> AuthorizationRecord? {
        try await PostgresRows.authorizations(
            try await connection.query(
                "SELECT \(unescaped: PostgresRows.authorizationColumns) FROM \"authorization\" WHERE id = \(id)\(unescaped: forUpdate ? " FOR UPDATE" : "")",
                logger: logger
            )
        ).first
    }
}

/// An agent's idempotency key: what makes an AUTHORIZE a retry of an earlier one.
struct IdempotencyKey: Hashable, Sendable {
    let agent: String
    let key: String
}
