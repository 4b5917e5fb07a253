import Foundation
import GRDB
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

    public init(
        id: String, agent: String, idempotencyKey: String, requestHash: Data, response: Data, amount: Int64, currency: String, tier: String,
        kid: String, expiresAt: Int64, createdAt: Int64
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
    }
}

/// Commits the records of concurrent requests together: one durable transaction (one fsync) for everything
/// that arrived while the previous transaction was committing. No caller returns before its record is
/// committed, so no answer leaves the server before it is durable.
final class GroupCommitter: Sendable {
    private struct Pending {
        var record: AuthorizationRecord
        var continuation: CheckedContinuation<AuthorizationRecord, any Error>
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

    /// Commits `record` in the next group; returns the stored record for its (agent, idempotency key),
    /// which is `record` itself or the one an earlier request stored first.
    func commit(_ record: AuthorizationRecord) async throws -> AuthorizationRecord {
        try await withCheckedThrowingContinuation { continuation in
            let startFlush = self.state.withLock { state -> Bool in
                state.pending.append(Pending(record: record, continuation: continuation))
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
                    try batch.map { pending -> AuthorizationRecord in
                        let existing = try AuthorizationRecord
                            .filter(Column("agent") == pending.record.agent && Column("idempotencyKey") == pending.record.idempotencyKey)
                            .fetchOne(db)
                        if let existing { return existing }
                        try pending.record.insert(db)
                        return pending.record
                    }
                }
                self.state.withLock { state in
                    state.transactions += 1
                    state.records += batch.count
                }
                for (pending, record) in zip(batch, stored) {
                    pending.continuation.resume(returning: record)
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
