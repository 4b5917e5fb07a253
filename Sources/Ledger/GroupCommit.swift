import Audit
import Foundation
import GRDB
import Policy
import Synchronization

/// A write that goes through the group committer, each with its audit entry.
enum LedgerWrite: Sendable {
    /// An authorization (issued or pending approval) with a hold at each of `scopes`, unless one of `limits`
    /// would be passed; then `alternatives` says what its audit entry becomes.
    case authorization(AuthorizationRecord, scopes: [BudgetScope], limits: [BudgetCheck], audit: AuditWrite, alternatives: AuditAlternatives?)
    case refusal(RefusalRecord, audit: AuditWrite)
    case audit(AuditWrite)

    var auditIndex: Int64 {
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
    private struct Pending {
        var write: LedgerWrite
        var continuation: CheckedContinuation<RecordingOutcome, any Error>
    }

    private struct State {
        var pending: [Pending] = []
        var isFlushing = false
        var isPaused = false
        var transactions = 0
        var records = 0
    }

    private let database: DatabasePool
    private let sequencer: AuditSequencer
    private let keyFilter: KeyFilter
    let checkpointer: WALCheckpointer?
    private let state = Mutex(State())

    init(database: DatabasePool, sequencer: AuditSequencer, keyFilter: KeyFilter, checkpointer: WALCheckpointer?) {
        self.database = database
        self.sequencer = sequencer
        self.keyFilter = keyFilter
        self.checkpointer = checkpointer
    }

    /// Commits `write` in the next group. An authorization's budget checks and its holds are one step of one
    /// serialized transaction, so no interleaving of requests can overspend.
    func commit(_ write: LedgerWrite) async throws -> RecordingOutcome {
        try await withCheckedThrowingContinuation { continuation in
            let startFlush = self.state.withLock { state -> Bool in
                state.pending.append(Pending(write: write, continuation: continuation))
                guard !state.isFlushing, !state.isPaused else { return false }
                state.isFlushing = true
                return true
            }
            if startFlush {
                Task { await self.flushLoop() }
            }
        }
    }

    /// Commits groups until nothing is pending.
    private func flushLoop() async {
        while true {
            let batch = self.state.withLock { state -> [Pending] in
                if state.pending.isEmpty || state.isPaused {
                    state.isFlushing = false
                    return []
                }
                defer { state.pending = [] }
                return state.pending
            }
            if batch.isEmpty { return }
            let holes = self.sequencer.takeHoles()
            do {
                let (outcomes, written) = try await self.database.write { db -> ([RecordingOutcome], [AuditWrite]) in
                    let now = Int64(Date().timeIntervalSince1970)
                    // Holes left by an earlier failed transaction are filled first, so the log has no gap.
                    var written = holes.map { AuditSequencer.filler(index: $0, at: now) }
                    for filler in written { try LedgerStore.insertAudit(filler, in: db, at: now) }
                    let outcomes = try batch.map { pending -> RecordingOutcome in
                        let (outcome, audit) = try Self.apply(pending.write, in: db)
                        try LedgerStore.insertAudit(audit, in: db, at: now)
                        written.append(audit)
                        return outcome
                    }
                    return (outcomes, written)
                }
                self.sequencer.committed(written)
                self.checkpointer?.committed()
                var full = false
                for pending in batch {
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
                self.state.withLock { state in
                    state.transactions += 1
                    state.records += batch.count
                }
                for (pending, outcome) in zip(batch, outcomes) {
                    pending.continuation.resume(returning: outcome)
                }
            } catch {
                self.sequencer.lost(holes + batch.map(\.write.auditIndex))
                let failure = LedgerError(.storeUnavailable, "the write could not be made durable: \(error)")
                for pending in batch {
                    pending.continuation.resume(throwing: failure)
                }
            }
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
            let existing = try LedgerStore.authorization(in: db, agent: record.agent, idempotencyKey: record.idempotencyKey)
            if let existing {
                let entry = alternatives.map { AuditWrite($0.duplicate(audit.index, existing.id)) } ?? AuditSequencer.filler(index: audit.index, at: record.createdAt)
                return (.recorded(existing), entry)
            }
            for limit in limits {
                let spent = try LedgerStore.counted(in: db, scope: limit.scope.key, currency: record.currency, since: limit.windowStart, now: record.createdAt)
                if spent > limit.limit - record.amount {
                    let entry = alternatives.map { AuditWrite($0.overLimit(audit.index)) } ?? AuditSequencer.filler(index: audit.index, at: record.createdAt)
                    return (.overLimit(limit, spent: spent), entry)
                }
            }
            try record.insertRow(db)
            for scope in scopes {
                try HoldRecord(
                    authorizationID: record.id, scope: scope.key, currency: record.currency, amount: record.amount, createdAt: record.createdAt,
                    expiresAt: record.approvalExpiresAt, releasedAt: nil
                ).insertRow(db)
            }
            return (.recorded(record), audit)
        }
    }

    /// Transactions committed and writes they held, to show that commits are grouped.
    var statistics: (transactions: Int, records: Int) {
        self.state.withLock { ($0.transactions, $0.records) }
    }

    /// Holds commits back (tests): writes queue up and go in one transaction on ``resume()``.
    func pause() {
        self.state.withLock { $0.isPaused = true }
    }

    func resume() {
        let start = self.state.withLock { state -> Bool in
            state.isPaused = false
            guard !state.isFlushing, !state.pending.isEmpty else { return false }
            state.isFlushing = true
            return true
        }
        if start {
            Task { await self.flushLoop() }
        }
    }

    var pendingCount: Int { self.state.withLock { $0.pending.count } }
}
