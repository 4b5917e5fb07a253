import Audit
import CountersignCore
import Foundation
import Ledger
import Logging
import Policy
import PostgresNIO
import Synchronization

/// Group commit on PostgreSQL: the writes that arrive while a transaction commits go together in the next
/// (one `COMMIT`, one WAL flush), as on SQLite.
///
/// Exactness across servers: every budget scope a group checks is locked first, in key order (`budgetLock` rows,
/// `FOR UPDATE`), so two servers' checks of one scope are serialized and never deadlock on each other; the
/// idempotency key is claimed by `INSERT … ON CONFLICT DO NOTHING RETURNING`, so a twin committed by another
/// server is found, not duplicated. No statement is expected to fail inside the transaction (PostgreSQL would
/// abort all of it): conflicts are answered by `ON CONFLICT`.
final class PostgresCommitter: Sendable {
    private typealias Pending = CommitQueue<LedgerWrite, RecordingOutcome>.Pending

    private let client: PostgresClient
    private let auditLog: SharedAuditLog
    private let health: WriteHealth
    private let wallClock: WallClock
    private let logger: Logger
    private let queue = CommitQueue<LedgerWrite, RecordingOutcome>()
    /// Budget lock rows known to exist (they are never deleted).
    private let knownLocks = Mutex<Set<String>>([])

    init(client: PostgresClient, auditLog: SharedAuditLog, health: WriteHealth, wallClock: WallClock, logger: Logger) {
        self.client = client
        self.auditLog = auditLog
        self.health = health
        self.wallClock = wallClock
        self.logger = logger
    }

    var statistics: (transactions: Int, records: Int) { self.queue.statistics }

    func pause() { self.queue.pause() }
    func resume(timeout: Duration, time: MonotonicTime) { self.queue.resume { await self.flushLoop(timeout: timeout, time: time) } }
    var pendingCount: Int { self.queue.pendingCount }

    func commit(_ write: LedgerWrite, timeout: Duration, time: MonotonicTime) async throws -> RecordingOutcome {
        try await self.queue.submit(write) { await self.flushLoop(timeout: timeout, time: time) }
    }

    /// The most writes one transaction takes: a group is a handful of statements whatever its size, but its binds and
    /// its locks grow with it, and it must commit well within the store's timeout on a loaded machine.
    static let maximumGroup = 256

    private func flushLoop(timeout: Duration, time: MonotonicTime) async {
        while let group = self.queue.takeGroup(maximum: Self.maximumGroup) {
            await self.commit(group, timeout: timeout, time: time)
        }
    }

    private func commit(_ group: [Pending], timeout: Duration, time: MonotonicTime) async {
        let holes = self.auditLog.takeHoles()
        let now = self.wallClock.secondsSince1970
        var attempt = 0
        while true {
            attempt += 1
            do {
                let applied = try await withDeadline(timeout, time: time) {
                    try await self.transaction(group.map(\.write), holes: holes, now: now)
                }
                self.health.succeeded()
                self.queue.committed(records: group.count)
                // The prefix includes this group's entries (when no earlier index is missing) before any caller hears.
                try? await withDeadline(timeout, time: time) {
                    try await self.auditLog.catchUp(client: self.client, logger: self.logger, now: now)
                }
                for (pending, result) in zip(group, applied) {
                    switch result {
                    case .done(let outcome, _):
                        pending.continuation.resume(returning: outcome)
                    case .indexTaken(let index):
                        pending.continuation.resume(
                            throwing: LedgerError(
                                .storeUnavailable, "audit index \(index) was filled as lost before this server wrote it; nothing was recorded"))
                    case .twinNotRecorded(let index):
                        pending.continuation.resume(
                            throwing: LedgerError(
                                .storeUnavailable,
                                "a request with the same idempotency key, in the same commit, was not recorded; nothing was recorded (audit index \(index) is lost)"
                            ))
                    }
                }
                return
            } catch {
                // A deadlock or serialization failure between servers is the database's way of saying "again".
                if attempt < 3, Self.isTransient(error) { continue }
                let failure = PostgresStore.failure(error, doing: "commit \(group.count) decision(s)")
                self.health.failed(failure)
                self.auditLog.lost(holes + group.map(\.write.auditIndex))
                for pending in group { pending.continuation.resume(throwing: failure) }
                return
            }
        }
    }

    static func isTransient(_ error: any Error) -> Bool {
        var error: (any Error)? = error
        if let transaction = error as? PostgresTransactionError { error = transaction.closureError ?? transaction.commitError }
        guard let state = (error as? PSQLError)?.serverInfo?[.sqlState] else { return false }
        return state == "40P01" || state == "40001"
    }

    private func transaction(_ writes: [LedgerWrite], holes: [Int64], now: Int64) async throws -> [PostgresGroup.Applied] {
        let locks = Set(
            writes.flatMap { write -> [String] in
                guard case .authorization(let record, _, let limits, _, _) = write else { return [] }
                return limits.map { Self.lockKey($0.scope, record.currency) }
            }
        ).sorted()
        try await self.ensureLockRows(locks)
        let logger = self.logger
        return try await self.client.withTransaction(logger: logger) { connection in
            if !locks.isEmpty {
                try await connection.query("SELECT key FROM budgetLock WHERE key = ANY(\(locks)) ORDER BY key FOR UPDATE", logger: logger)
            }
            if !holes.isEmpty {
                try await Self.insertAudit(holes.map { AuditSequencer.filler(index: $0, at: now) }, connection: connection, logger: logger, now: now)
            }
            return try await PostgresGroup.commit(writes, now: now, connection: connection, logger: logger)
        }
    }

    static func lockKey(_ scope: BudgetScope, _ currency: String) -> String { "\(scope.key)|\(currency)" }

    /// Lock rows are made outside the group's transaction (a new key inserted by two transactions at once
    /// could otherwise deadlock them).
    private func ensureLockRows(_ keys: [String]) async throws {
        let missing = self.knownLocks.withLock { known in keys.filter { !known.contains($0) } }
        guard !missing.isEmpty else { return }
        try await self.client.query("INSERT INTO budgetLock (key) SELECT unnest(\(missing)::text[]) ON CONFLICT DO NOTHING", logger: self.logger)
        self.knownLocks.withLock { $0.formUnion(missing) }
    }

    /// Inserts audit rows unless their index is taken. - Returns: the indexes written.
    @discardableResult
    static func insertAudit(_ writes: [AuditWrite], connection: PostgresConnection, logger: Logger, now: Int64) async throws -> [Int64] {
        let rows = try await connection.query(
            """
            INSERT INTO auditEntry (idx, entry, leafHash, createdAt)
            SELECT * FROM unnest(\(writes.map(\.index))::bigint[], \(writes.map { bytea($0.entry) })::bytea[], \(writes.map { bytea($0.leafHash) })::bytea[],
                                 \(Array(repeating: now, count: writes.count))::bigint[])
            ON CONFLICT (idx) DO NOTHING RETURNING idx
            """,
            logger: logger
        )
        var written: [Int64] = []
        for try await index in rows.decode(Int64.self) { written.append(index) }
        return written
    }
}
