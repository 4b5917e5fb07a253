import Audit
import CountersignCore
import Foundation
import Ledger
import Logging
import Policy
import PostgresNIO

/// One group of writes committed with a handful of statements, whatever its size: the twins already recorded in one
/// read, every checked budget's sum in one read, the decisions made here in order (each accepted write counted into
/// the sums the next ones are checked against, as SQLite's one-by-one commit does), then the group's authorizations,
/// holds, refusals and audit entries each inserted in one statement.
///
/// The group's scopes are locked first (`PostgresCommitter`), so the sums read are the whole truth for them until the
/// commit. Two departures from SQLite's commit, both on the side of refusing: the sums are read at the group's earliest
/// decision time (a pending hold whose deadline falls within the group's second still counts), and a write whose key
/// another server records between the read of twins and the insert was counted in the sums of the writes after it.
enum PostgresGroup {
    enum Applied {
        case done(RecordingOutcome, AuditWrite)
        /// Its audit index was filled as `lost` meanwhile (this server was presumed dead): nothing of it is kept.
        case indexTaken(Int64)
        /// A twin of a write of the same group (same agent and key) whose record was not kept (its index was taken):
        /// there is no record to answer with; its own index is filled as `lost`.
        case twinNotRecorded(Int64)
    }

    private struct SumKey: Hashable {
        var scope: String
        var currency: String
        var since: Int64
    }

    private struct Authorization {
        var position: Int
        var record: AuthorizationRecord
        var scopes: [BudgetScope]
        var limits: [BudgetCheck]
        var audit: AuditWrite
        var alternatives: AuditAlternatives?

        var key: String { Self.key(self.record.agent, self.record.idempotencyKey) }
        static func key(_ agent: String, _ idempotencyKey: String) -> String { agent + "\u{0}" + idempotencyKey }

        func duplicate(of existing: AuthorizationRecord) -> AuditWrite {
            self.alternatives.map { AuditWrite($0.duplicate(self.audit.index, existing.id)) }
                ?? AuditSequencer.filler(index: self.audit.index, at: self.record.createdAt)
        }
    }

    static func commit(_ writes: [LedgerWrite], now: Int64, connection: PostgresConnection, logger: Logger) async throws -> [Applied] {
        var authorizations: [Authorization] = []
        for (position, write) in writes.enumerated() {
            if case .authorization(let record, let scopes, let limits, let audit, let alternatives) = write {
                authorizations.append(
                    Authorization(position: position, record: record, scopes: scopes, limits: limits, audit: audit, alternatives: alternatives))
            }
        }
        var known = try await Self.recorded(authorizations, connection: connection, logger: logger)
        var running = try await Self.sums(authorizations, connection: connection, logger: logger)

        // The decisions, in the order the writes came.
        var outcomes: [(RecordingOutcome, AuditWrite)?] = Array(repeating: nil, count: writes.count)
        var refusals: [RefusalRecord] = []
        var accepted: [Authorization] = []
        // A write with the key of a write accepted earlier in this group (a retry that came while the first was being
        // decided) is answered with what becomes of that first one, which is known only once the group's rows are in:
        // another server may record the key first, or the first one's index may be taken.
        var twins: [(twin: Authorization, first: Authorization)] = []
        var acceptedByKey: [String: Authorization] = [:]
        var next = authorizations.makeIterator()
        for (position, write) in writes.enumerated() {
            switch write {
            case .audit(let audit):
                outcomes[position] = (.logged, audit)
            case .refusal(let refusal, let audit):
                refusals.append(refusal)
                outcomes[position] = (.logged, audit)
            case .authorization:
                guard let authorization = next.next() else { continue }
                let record = authorization.record
                if let first = acceptedByKey[authorization.key] {
                    twins.append((authorization, first))
                    continue
                }
                // A key already recorded is answered with that record, whatever the budgets say now.
                if let existing = known[authorization.key] {
                    outcomes[position] = (.recorded(existing), authorization.duplicate(of: existing))
                    continue
                }
                let over = authorization.limits.lazy.compactMap { limit -> (BudgetCheck, Int64)? in
                    let spent = running[SumKey(scope: limit.scope.key, currency: record.currency, since: limit.windowStart)] ?? 0
                    return spent > limit.limit - record.amount ? (limit, spent) : nil
                }.first
                if let (limit, spent) = over {
                    let entry =
                        authorization.alternatives.map { AuditWrite($0.overLimit(authorization.audit.index)) }
                        ?? AuditSequencer.filler(index: authorization.audit.index, at: record.createdAt)
                    outcomes[position] = (.overLimit(limit, spent: spent), entry)
                    continue
                }
                known[authorization.key] = record
                accepted.append(authorization)
                acceptedByKey[authorization.key] = authorization
                let scopes = Set(authorization.scopes.map(\.key))
                for key in running.keys where key.currency == record.currency && key.since <= record.createdAt && scopes.contains(key.scope) {
                    running[key, default: 0] += record.amount
                }
                outcomes[position] = (.recorded(record), authorization.audit)
            }
        }

        // The group's rows, one statement each.
        let inserted = try await Self.insert(accepted.map(\.record), connection: connection, logger: logger)
        let raced = accepted.filter { !inserted.contains($0.record.id) }
        // The record that holds each accepted write's key in the end, by the accepted write's id.
        var holder: [String: AuthorizationRecord] = [:]
        if !raced.isEmpty {
            // Recorded by another server since the twins were read: its record is the answer.
            let existing = try await Self.recorded(raced, connection: connection, logger: logger)
            for authorization in raced {
                guard let record = existing[authorization.key] else {
                    throw LedgerError(.storeUnavailable, "the idempotency key of authorization '\(authorization.record.id)' is taken, yet no record holds it")
                }
                outcomes[authorization.position] = (.recorded(record), authorization.duplicate(of: record))
                holder[authorization.record.id] = record
            }
        }
        try await Self.insertHolds(accepted.filter { inserted.contains($0.record.id) }, connection: connection, logger: logger)
        try await Self.insertRefusals(refusals, connection: connection, logger: logger)
        let audits = outcomes.compactMap { $0?.1 }
        let written = Set(try await PostgresCommitter.insertAudit(audits, connection: connection, logger: logger, now: now))
        var applied: [Applied?] = Array(repeating: nil, count: writes.count)
        var undone: Set<String> = []
        for (position, outcome) in outcomes.enumerated() {
            guard let (result, audit) = outcome else { continue }
            if written.contains(audit.index) {
                applied[position] = .done(result, audit)
            } else {
                if case .recorded(let record) = result, inserted.contains(record.id), record.auditIndex == audit.index { undone.insert(record.id) }
                applied[position] = .indexTaken(audit.index)
            }
        }
        if !undone.isEmpty {
            try await connection.query("DELETE FROM \"authorization\" WHERE id = ANY(\(Array(undone)))", logger: logger)
        }
        // The twins, now that their first writes' fate is known: the record that holds the key, or, when the first
        // one was undone, nothing (the caller retries with its key and is decided anew).
        var twinAudits: [AuditWrite] = []
        var twinOutcomes: [(position: Int, result: RecordingOutcome?, audit: AuditWrite)] = []
        for (twin, first) in twins {
            let record = undone.contains(first.record.id) ? nil : holder[first.record.id] ?? first.record
            let audit = record.map { twin.duplicate(of: $0) } ?? AuditSequencer.filler(index: twin.audit.index, at: twin.record.createdAt)
            twinAudits.append(audit)
            twinOutcomes.append((twin.position, record.map { .recorded($0) }, audit))
        }
        let twinsWritten = twinAudits.isEmpty ? [] : Set(try await PostgresCommitter.insertAudit(twinAudits, connection: connection, logger: logger, now: now))
        for (position, result, audit) in twinOutcomes {
            if !twinsWritten.contains(audit.index) {
                applied[position] = .indexTaken(audit.index)
            } else if let result {
                applied[position] = .done(result, audit)
            } else {
                applied[position] = .twinNotRecorded(audit.index)
            }
        }
        return try applied.enumerated().map { position, applied in
            guard let applied else { throw LedgerError(.storeUnavailable, "write \(position) of the group was not decided") }
            return applied
        }
    }

    /// The records stored for the keys of `authorizations`, by key.
    private static func recorded(
        _ authorizations: [Authorization], connection: PostgresConnection, logger: Logger
    ) async throws -> [String: AuthorizationRecord] {
        guard !authorizations.isEmpty else { return [:] }
        let rows = try await connection.query(
            PostgresRows.authorizations(agents: authorizations.map(\.record.agent), idempotencyKeys: authorizations.map(\.record.idempotencyKey)),
            logger: logger)
        var records: [String: AuthorizationRecord] = [:]
        for record in try await PostgresRows.authorizations(rows) { records[Authorization.key(record.agent, record.idempotencyKey)] = record }
        return records
    }

    /// What counts against each checked scope, currency and window at the group's first decision time.
    private static func sums(_ authorizations: [Authorization], connection: PostgresConnection, logger: Logger) async throws -> [SumKey: Int64] {
        let keys = Array(
            Set(
                authorizations.flatMap { authorization in
                    authorization.limits.map { SumKey(scope: $0.scope.key, currency: authorization.record.currency, since: $0.windowStart) }
                }))
        guard !keys.isEmpty else { return [:] }
        let now = authorizations.map(\.record.createdAt).min() ?? 0
        let rows = try await connection.query(
            """
            SELECT COALESCE((SELECT SUM(h.amount) FROM hold h
                             WHERE h.scope = l.scope AND h.currency = l.currency AND h.createdAt >= l.since AND h.releasedAt IS NULL
                               AND (h.expiresAt IS NULL OR h.expiresAt > \(now))), 0)::bigint
            FROM unnest(\(keys.map(\.scope))::text[], \(keys.map(\.currency))::text[], \(keys.map(\.since))::bigint[]) WITH ORDINALITY AS l(scope, currency, since, n)
            ORDER BY l.n
            """,
            logger: logger
        )
        var sums: [SumKey: Int64] = [:]
        var position = 0
        for try await sum in rows.decode(Int64.self) {
            sums[keys[position]] = sum
            position += 1
        }
        return sums
    }

    /// Binds for a multi-row `VALUES`: `rows` rows of `columns` placeholders each.
    private static func values(rows: Int, columns: Int) -> String {
        (0..<rows).map { row in "(" + (1...columns).map { "$\(row * columns + $0)" }.joined(separator: ", ") + ")" }.joined(separator: ", ")
    }

    /// - Returns: the ids inserted (a key recorded meanwhile is not).
    private static func insert(_ records: [AuthorizationRecord], connection: PostgresConnection, logger: Logger) async throws -> Set<String> {
        guard !records.isEmpty else { return [] }
        var bindings = PostgresBindings()
        for record in records {
            bindings.append(record.id)
            bindings.append(record.agent)
            bindings.append(record.idempotencyKey)
            bindings.append(bytea(record.requestHash))
            bindings.append(bytea(record.response))
            bindings.append(record.amount)
            bindings.append(record.currency)
            bindings.append(record.merchant)
            bindings.append(record.tier)
            bindings.append(record.kid)
            bindings.append(record.expiresAt)
            bindings.append(record.createdAt)
            bindings.append(record.voidedAt)
            bindings.append(record.status.rawValue)
            bindings.append(bytea(record.decision))
            bindings.append(bytea(record.request))
            bindings.append(record.quorum.map(Int64.init))
            bindings.append(record.approvalExpiresAt)
            bindings.append(record.auditIndex)
        }
        let sql = """
            INSERT INTO "authorization" (\(PostgresRows.authorizationColumns)) VALUES \(Self.values(rows: records.count, columns: 19))
            ON CONFLICT (agent, idempotencyKey) DO NOTHING RETURNING id
            """
        var ids: Set<String> = []
        for try await id in try await connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger).decode(String.self) { ids.insert(id) }
        return ids
    }

    private static func insertHolds(_ authorizations: [Authorization], connection: PostgresConnection, logger: Logger) async throws {
        var bindings = PostgresBindings()
        var rows = 0
        for authorization in authorizations {
            let record = authorization.record
            for scope in authorization.scopes {
                bindings.append(record.id)
                bindings.append(scope.key)
                bindings.append(record.currency)
                bindings.append(record.amount)
                bindings.append(record.createdAt)
                bindings.append(record.approvalExpiresAt)
                rows += 1
            }
        }
        guard rows > 0 else { return }
        let sql = "INSERT INTO hold (authorizationID, scope, currency, amount, createdAt, expiresAt) VALUES \(Self.values(rows: rows, columns: 6))"
        try await connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger)
    }

    private static func insertRefusals(_ refusals: [RefusalRecord], connection: PostgresConnection, logger: Logger) async throws {
        guard !refusals.isEmpty else { return }
        var bindings = PostgresBindings()
        for refusal in refusals {
            bindings.append(refusal.agent)
            bindings.append(refusal.idempotencyKey)
            bindings.append(refusal.code)
            bindings.append(bytea(refusal.decision))
            bindings.append(refusal.createdAt)
            bindings.append(refusal.auditIndex)
            bindings.append(bytea(refusal.request))
        }
        let sql =
            "INSERT INTO refusal (agent, idempotencyKey, code, decision, createdAt, auditIndex, request) VALUES \(Self.values(rows: refusals.count, columns: 7))"
        try await connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger)
    }
}
