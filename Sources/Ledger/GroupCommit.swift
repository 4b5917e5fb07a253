import Audit
import CountersignCore
import Foundation
import GRDB
import Policy
import Synchronization

/// A write that goes through the group committer, each with its audit entry.
package enum LedgerWrite: Sendable {
    /// An authorization (issued or pending approval) with a hold at each of `scopes`, unless one of `limits`
    /// would be passed; then `alternatives` says what its audit entry becomes.
    case authorization(AuthorizationRecord, scopes: [BudgetScope], limits: [BudgetCheck], audit: AuditWrite, alternatives: AuditAlternatives?)
    case refusal(RefusalRecord, audit: AuditWrite)
    case audit(AuditWrite)

    package var auditIndex: Int64 {
        switch self {
        case .authorization(_, _, _, let audit, _), .refusal(_, let audit), .audit(let audit): audit.index
        }
    }
}

/// What recording came to.
public enum RecordingOutcome: Sendable, Hashable {
    /// Stored: the record itself, or the one an earlier request with the same idempotency key stored.
    case recorded(AuthorizationRecord)
    /// Not stored: it would take a scope's spending past the check's limit; `spent` is already counted in its window.
    case overLimit(BudgetCheck, spent: Int64)
    /// A refusal, or an audit entry alone, was stored.
    case logged
}

/// Commits the writes of concurrent requests together: one durable transaction (one fsync) for everything
/// that arrived while the previous transaction was committing. No caller returns before its write is
/// committed, so no answer leaves the server before it is durable.
final class GroupCommitter: Sendable {
    private typealias Pending = CommitQueue<LedgerWrite, RecordingOutcome>.Pending

    private let database: DatabasePool
    private let sequencer: AuditSequencer
    private let keyFilter: KeyFilter
    let checkpointer: WALCheckpointer?
    let health: WriteHealth
    private let queue = CommitQueue<LedgerWrite, RecordingOutcome>()

    private let wallClock: WallClock

    init(
        database: DatabasePool, sequencer: AuditSequencer, keyFilter: KeyFilter, checkpointer: WALCheckpointer?, health: WriteHealth,
        wallClock: WallClock = .system
    ) {
        self.wallClock = wallClock
        self.database = database
        self.sequencer = sequencer
        self.keyFilter = keyFilter
        self.checkpointer = checkpointer
        self.health = health
    }

    /// Commits `write` in the next group. An authorization's budget checks and its holds are one step of one
    /// serialized transaction, so no interleaving of requests can overspend.
    func commit(_ write: LedgerWrite) async throws -> RecordingOutcome {
        try await self.queue.submit(write) { await self.flushLoop() }
    }

    /// At most this many groups are committed in one turn on the writer, so that other writes (approvals,
    /// admin actions, checkpoints) queued on it are not held back by a steady load.
    static let groupsPerTurn = 32

    /// Commits groups until nothing is pending. Groups run back to back on the writer's own thread: no hop
    /// through the task pool between one commit and the next, where the writer would wait for a thread.
    private func flushLoop() async {
        while true {
            let more = (try? await self.database.writeWithoutTransaction { db in self.commitGroups(in: db) }) ?? self.failPending()
            if !more { return }
        }
    }

    /// Commits up to ``groupsPerTurn`` groups; answers whether more may be pending.
    private func commitGroups(in db: Database) -> Bool {
        for _ in 0..<Self.groupsPerTurn {
            guard let group = self.queue.takeGroup() else {
                // A commit that arrives now waits for this, on the writer; see WALCheckpointer.
                self.checkpointer?.idle(writer: db)
                return false
            }
            self.commit(group, in: db)
        }
        return true
    }

    /// When the writer itself cannot be reached: every pending write fails, and flushing ends.
    private func failPending() -> Bool {
        while let group = self.queue.takeGroup() { self.fail(group, holes: [], error: LedgerError(.storeUnavailable, "the store's writer is unavailable")) }
        return false
    }

    private func fail(_ group: [Pending], holes: [Int64], error: any Error) {
        self.health.failed(error)
        self.sequencer.lost(holes + group.map(\.write.auditIndex))
        let failure = LedgerError(.storeUnavailable, "the write could not be made durable: \(error)")
        for pending in group {
            pending.continuation.resume(throwing: failure)
        }
    }

    /// One durable transaction for the whole group; then every caller is answered.
    private func commit(_ group: [Pending], in db: Database) {
        let holes = self.sequencer.takeHoles()
        var outcomes: [RecordingOutcome] = []
        var written: [AuditWrite] = []
        do {
            try db.inTransaction(.immediate) {
                outcomes = []
                let now = self.wallClock.secondsSince1970
                // Holes left by an earlier failed transaction are filled first, so the log has no gap.
                written = holes.map { AuditSequencer.filler(index: $0, at: now) }
                for filler in written { try LedgerStore.insertAudit(filler, in: db, at: now) }
                for pending in group {
                    let (outcome, audit) = try Self.apply(pending.write, in: db)
                    try LedgerStore.insertAudit(audit, in: db, at: now)
                    written.append(audit)
                    outcomes.append(outcome)
                }
                return .commit
            }
        } catch {
            self.fail(group, holes: holes, error: error)
            return
        }
        // The log and the key filter know of the group before any caller hears of it.
        self.health.succeeded()
        self.sequencer.committed(written)
        self.checkpointer?.committed()
        var full = false
        for pending in group {
            if case .authorization(let record, _, _, _, _) = pending.write {
                full = !self.keyFilter.insert(agent: record.agent, key: record.idempotencyKey) || full
            }
        }
        if full {
            // Until the rebuild, a key recorded meanwhile may look new: the transaction's own check
            // still finds it, so nothing is issued twice.
            let database = self.database
            let keyFilter = self.keyFilter
            Task {
                let pairs = try? await database.read { db in try LedgerStore.idempotencyPairs(in: db) }
                if let pairs { keyFilter.rebuild(pairs) }
            }
        }
        self.queue.committed(records: group.count)
        for (pending, outcome) in zip(group, outcomes) {
            pending.continuation.resume(returning: outcome)
        }
    }

    /// Applies one write; returns its outcome and the audit entry that records it.
    private static func apply(_ write: LedgerWrite, in db: Database) throws -> (RecordingOutcome, AuditWrite) {
        switch write {
        case .audit(let audit):
            return (.logged, audit)
        case .refusal(let refusal, let audit):
            try refusal.insertRow(db)
            return (.logged, audit)
        case .authorization(let record, let scopes, let limits, let audit, let alternatives):
            // A request with an idempotency key already recorded is answered with that record, whatever the
            // budgets say now. The unique (agent, idempotency key) finds it at the insert, so the common case
            // (a new key) costs no lookup of its own.
            func recorded() throws -> (RecordingOutcome, AuditWrite)? {
                guard let existing = try LedgerStore.authorization(in: db, agent: record.agent, idempotencyKey: record.idempotencyKey) else { return nil }
                let entry =
                    alternatives.map { AuditWrite($0.duplicate(audit.index, existing.id)) } ?? AuditSequencer.filler(index: audit.index, at: record.createdAt)
                return (.recorded(existing), entry)
            }
            for limit in limits {
                let spent = try LedgerStore.counted(in: db, scope: limit.scope.key, currency: record.currency, since: limit.windowStart, now: record.createdAt)
                if spent > limit.limit - record.amount {
                    if let duplicate = try recorded() { return duplicate }
                    let entry = alternatives.map { AuditWrite($0.overLimit(audit.index)) } ?? AuditSequencer.filler(index: audit.index, at: record.createdAt)
                    return (.overLimit(limit, spent: spent), entry)
                }
            }
            do {
                try record.insertRow(db)
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                // Only this statement is undone; the group's transaction goes on.
                guard let duplicate = try recorded() else { throw error }
                return duplicate
            }
            for scope in scopes {
                try HoldRecord(
                    authorizationID: record.id, scope: scope.key, currency: record.currency, amount: record.amount, createdAt: record.createdAt,
                    expiresAt: record.approvalExpiresAt, releasedAt: nil
                ).insertRow(db)
            }
            return (.recorded(record), audit)
        }
    }

    var statistics: (transactions: Int, records: Int) { self.queue.statistics }

    /// Holds commits back (tests): writes queue up and go in one transaction on ``resume()``.
    func pause() { self.queue.pause() }

    func resume() { self.queue.resume { await self.flushLoop() } }

    var pendingCount: Int { self.queue.pendingCount }
}
