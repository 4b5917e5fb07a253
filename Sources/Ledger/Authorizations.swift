import Audit
import CountersignCore
import Foundation
import GRDB
import Policy

/// Authorizations and their budget holds, refusals, voids and what is spent.
extension LedgerStore {
    /// Records an authorization (signed, or pending approval) durably with a hold at each of `scopes`, grouped
    /// with concurrent writes into one transaction, unless it would take a scope past one of `limits` (checked
    /// in the same transaction, so the check and the reservation are one atomic step).
    ///
    /// - Returns: the record stored for the agent's idempotency key (`record`, or the one a concurrent request
    ///   with the same key stored first), or the limit it would pass.
    /// - Throws: ``LedgerError`` with `STORE_UNAVAILABLE` when the transaction fails; then nothing was stored.
    public func recordAuthorization(
        _ record: AuthorizationRecord, scopes: [BudgetScope]?, limits: [BudgetCheck], audit: AuditEntry?, alternatives: AuditAlternatives?
    ) async throws -> RecordingOutcome {
        var record = record
        let entry =
            audit
            ?? AuditEntry(
                index: self.sequencer.reserve(), time: record.createdAt, kind: "decision", action: record.status.rawValue, actor: record.agent,
                subject: record.id
            )
        record.auditIndex = entry.index
        return try await self.committer.commit(
            .authorization(record, scopes: scopes ?? [.agent(record.agent)], limits: limits, audit: AuditWrite(entry), alternatives: alternatives)
        )
    }

    /// Records a refused request's decision and its audit entry, grouped with concurrent writes.
    public func recordRefusal(_ refusal: RefusalRecord, audit: AuditEntry?) async throws {
        var refusal = refusal
        let entry =
            audit
            ?? AuditEntry(
                index: self.sequencer.reserve(), time: refusal.createdAt, kind: "decision", action: "denied", actor: refusal.agent,
                decision: DecisionSummary(outcome: "denied", code: refusal.code)
            )
        refusal.auditIndex = entry.index
        _ = try await self.committer.commit(.refusal(refusal, audit: AuditWrite(entry)))
    }

    public func refusals(agent: String) async throws -> [RefusalRecord] {
        try await self.read { db in try RefusalRecord.filter(Column("agent") == agent).order(Column("id")).fetchAll(db) }
    }

    /// What counts against a scope's budget at `now`: its holds in the currency since the window's start, less
    /// the released ones and the pending ones past their approval deadline.
    static func counted(in db: Database, scope: String, currency: String, since windowStart: Int64, now: Int64) throws -> Int64 {
        let statement = try db.cachedStatement(
            sql: """
                SELECT COALESCE(SUM(amount), 0) FROM hold
                WHERE scope = ? AND currency = ? AND createdAt >= ? AND releasedAt IS NULL AND (expiresAt IS NULL OR expiresAt > ?)
                """
        )
        return try Int64.fetchOne(statement, arguments: [scope, currency, windowStart, now]) ?? 0
    }

    /// The authorization an agent obtained with an idempotency key, through a cached statement (it runs for
    /// every request).
    static func authorization(in db: Database, agent: String, idempotencyKey: String) throws -> AuthorizationRecord? {
        let statement = try db.cachedStatement(sql: "SELECT * FROM authorization WHERE agent = ? AND idempotencyKey = ?")
        return try AuthorizationRecord.fetchOne(statement, arguments: [agent, idempotencyKey])
    }

    /// Voids an agent's own authorization.
    /// - Returns: the record, with the time it was first voided.
    /// - Throws: ``LedgerError`` with `AUTHORIZATION_NOT_FOUND` (no such id, or another agent's),
    ///   `AUTHORIZATION_EXPIRED` (nothing left to withdraw).
    public func voidAuthorization(id: String, agent: String, at now: Int64) async throws -> AuthorizationRecord {
        try await self.write { db in
            let (record, changed) = try AuthorizationRecord.voiding(try AuthorizationRecord.fetchOne(db, key: id), id: id, by: agent, at: now)
            guard changed else { return record }
            try record.update(db)
            try Self.releaseHolds(in: db, of: id, at: now)
            return record
        }
    }

    static func releaseHolds(in db: Database, of id: String, at now: Int64) throws {
        try db.execute(sql: "UPDATE hold SET releasedAt = ? WHERE authorizationID = ? AND releasedAt IS NULL", arguments: [now, id])
    }

    /// What counts against `scope`'s budget in `currency` since `windowStart`, at `now`.
    public func spent(scope: BudgetScope, currency: String, since windowStart: Int64, now: Int64) async throws -> Int64 {
        try await self.read { db in try Self.counted(in: db, scope: scope.key, currency: currency, since: windowStart, now: now) }
    }

    /// A scope's spending in one window, with the part held for pending approvals.
    public func spending(scope: BudgetScope, currency: String, since windowStart: Int64, now: Int64) async throws -> ScopeSpending {
        try await self.read { db in
            let counted = try Self.counted(in: db, scope: scope.key, currency: currency, since: windowStart, now: now)
            let pending =
                try Int64.fetchOne(
                    db,
                    sql: """
                        SELECT COALESCE(SUM(amount), 0) FROM hold
                        WHERE scope = ? AND currency = ? AND createdAt >= ? AND releasedAt IS NULL AND expiresAt IS NOT NULL AND expiresAt > ?
                        """,
                    arguments: [scope.key, currency, windowStart, now]
                ) ?? 0
            return ScopeSpending(counted: counted, pending: pending)
        }
    }

    /// The agent's history for escalation, in one read: its authorizations in `currency` since `historySince`
    /// (count and mean), whether it was ever authorized to pay `merchant`, and what it holds for `merchant`
    /// since `splittingSince`.
    public func spendingFacts(
        agent: String, currency: String, merchant: String, historySince: Int64, splittingSince: Int64, now: Int64
    ) async throws -> SpendingFacts {
        try await self.read { db in
            let history = try Row.fetchOne(
                db,
                sql: """
                    SELECT COUNT(*) AS count, COALESCE(SUM(amount), 0) AS total FROM authorization
                    WHERE agent = ? AND currency = ? AND createdAt >= ? AND +status = 'authorized' AND voidedAt IS NULL
                    """,
                arguments: [agent, currency, historySince]
            )
            let paidBefore =
                try Bool.fetchOne(
                    db,
                    // `+status`: the status column must not steer SQLite away from the (agent, merchant) index.
                    sql: "SELECT EXISTS (SELECT 1 FROM authorization WHERE agent = ? AND merchant = ? AND +status = 'authorized')",
                    arguments: [agent, merchant]
                ) ?? false
            let recent =
                try Int64.fetchOne(
                    db,
                    sql: """
                        SELECT COALESCE(SUM(a.amount), 0) FROM authorization a JOIN hold h ON h.authorizationID = a.id AND h.scope = 'agent:' || a.agent
                        WHERE a.agent = ? AND a.merchant = ? AND a.currency = ? AND a.createdAt >= ?
                          AND h.releasedAt IS NULL AND (h.expiresAt IS NULL OR h.expiresAt > ?)
                        """,
                    arguments: [agent, merchant, currency, splittingSince, now]
                ) ?? 0
            // Integers throughout: the mean of minor units, rounded half up, never through a floating-point value.
            let count: Int64 = history?["count"] ?? 0
            let total: Int64 = history?["total"] ?? 0
            let mean = count > 0 ? (total + count / 2) / count : 0
            return SpendingFacts(historyCount: Int(count), historyMeanAmount: mean, merchantPaidBefore: paidBefore, recentSpendAtMerchant: recent)
        }
    }

    /// The authorization an agent obtained with an idempotency key, if any.
    ///
    /// A key the store has certainly never seen is answered from memory, without reading the database.
    /// `certain: true` always reads (for a refusal that must not miss a twin recorded a moment ago).
    public func authorization(agent: String, idempotencyKey: String, certain: Bool) async throws -> AuthorizationRecord? {
        if !certain, !self.keyFilter.mayContain(agent: agent, key: idempotencyKey) { return nil }
        return try await self.read { db in try Self.authorization(in: db, agent: agent, idempotencyKey: idempotencyKey) }
    }

    /// Every (agent, idempotency key) the store holds, to fill the key filter.
    static func idempotencyPairs(in db: Database) throws -> [(String, String)] {
        try Row.fetchAll(db, sql: "SELECT agent, idempotencyKey FROM authorization").map { ($0["agent"] as String, $0["idempotencyKey"] as String) }
    }

    public func authorization(id: String) async throws -> AuthorizationRecord? {
        try await self.read { db in try AuthorizationRecord.fetchOne(db, key: id) }
    }

    public func authorizationCount() async throws -> Int {
        try await self.read { db in try AuthorizationRecord.fetchCount(db) }
    }

    public func authorizations(agent: String, createdAfter after: Int64, upTo: Int64) async throws -> [AuthorizationRecord] {
        try await self.read { db in
            try AuthorizationRecord.fetchAll(
                db, sql: "SELECT * FROM authorization WHERE agent = ? AND createdAt > ? AND createdAt <= ? ORDER BY createdAt, id",
                arguments: [agent, after, upTo])
        }
    }
}
