import Foundation
import GRDB
import Policy
import Synchronization

/// A signed authorization as the store keeps it: enough to answer a retry with the very same response.
public struct AuthorizationRecord: Codable, Sendable, Hashable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "authorization"

    /// The `jti`.
    public var id: String
    public var agent: String
    public var idempotencyKey: String
    /// SHA-256 of the request's canonical JSON: a retry must match it.
    public var requestHash: Data
    /// The response sent, as JSON; a retry gets these bytes back.
    public var response: Data
    public var amount: Int64
    public var currency: String
    public var tier: String
    public var kid: String
    public var expiresAt: Int64
    public var createdAt: Int64
    /// When the agent voided it; a voided authorization no longer counts against budgets.
    public var voidedAt: Int64?

    public init(
        id: String, agent: String, idempotencyKey: String, requestHash: Data, response: Data, amount: Int64, currency: String, tier: String,
        kid: String, expiresAt: Int64, createdAt: Int64, voidedAt: Int64? = nil
    ) {
        self.id = id
        self.agent = agent
        self.idempotencyKey = idempotencyKey
        self.requestHash = requestHash
        self.response = response
        self.amount = amount
        self.currency = currency
        self.tier = tier
        self.kid = kid
        self.expiresAt = expiresAt
        self.createdAt = createdAt
        self.voidedAt = voidedAt
    }
}

/// What recording an authorization came to.
public enum RecordingOutcome: Sendable, Hashable {
    /// Stored: the record itself, or the one an earlier request with the same idempotency key stored.
    case recorded(AuthorizationRecord)
    /// Not stored: it would take the agent's spending past the check's limit; `spent` was already spent in its window.
    case overLimit(BudgetCheck, spent: Int64)
}

/// Commits the records of concurrent requests together: one durable transaction (one fsync) for everything
/// that arrived while the previous transaction was committing. No caller returns before its record is
/// committed, so no answer leaves the server before it is durable.
final class GroupCommitter: Sendable {
    private struct Pending {
        var record: AuthorizationRecord
        var limits: [BudgetCheck]
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
    private let state = Mutex(State())

    init(database: DatabasePool) {
        self.database = database
    }

    /// Commits `record` in the next group, unless it would pass one of `limits`. The check and the insert are
    /// one step of one serialized transaction, so no interleaving of requests can overspend.
    func commit(_ record: AuthorizationRecord, limits: [BudgetCheck]) async throws -> RecordingOutcome {
        try await withCheckedThrowingContinuation { continuation in
            let startFlush = self.state.withLock { state -> Bool in
                state.pending.append(Pending(record: record, limits: limits, continuation: continuation))
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
            do {
                let stored = try await self.database.write { db in
                    try batch.map { pending -> RecordingOutcome in
                        let record = pending.record
                        let existing = try AuthorizationRecord
                            .filter(Column("agent") == record.agent && Column("idempotencyKey") == record.idempotencyKey)
                            .fetchOne(db)
                        if let existing { return .recorded(existing) }
                        for limit in pending.limits {
                            let spent = try Int64.fetchOne(
                                db,
                                sql: LedgerStore.spendingQuery,
                                arguments: [record.agent, record.currency, limit.windowStart]
                            ) ?? 0
                            if spent > limit.limit - record.amount {
                                return .overLimit(limit, spent: spent)
                            }
                        }
                        try record.insert(db)
                        return .recorded(record)
                    }
                }
                self.state.withLock { state in
                    state.transactions += 1
                    state.records += batch.count
                }
                for (pending, outcome) in zip(batch, stored) {
                    pending.continuation.resume(returning: outcome)
                }
            } catch {
                let failure = LedgerError(.storeUnavailable, "the authorization could not be recorded durably: \(error)")
                for pending in batch {
                    pending.continuation.resume(throwing: failure)
                }
            }
        }
    }

    /// Transactions committed and records they held, to show that commits are grouped.
    var statistics: (transactions: Int, records: Int) {
        self.state.withLock { ($0.transactions, $0.records) }
    }

    /// Holds commits back (tests): records queue up and go in one transaction on ``resume()``.
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
