import Audit
import CountersignCore
import Foundation
import Ledger
import Logging
import NIOSSL
import PostgresNIO
import Synchronization

/// The store on PostgreSQL, shared by every `countersignd` of a cluster: one ledger of authorizations and holds,
/// one audit log with one sequence of indexes, principals, keys, approvals and settings.
///
/// What must be exact across servers is decided inside PostgreSQL: a budget's check and its holds under a row
/// lock of the scope, idempotency by the unique (agent, idempotency key), a quorum under the authorization's row
/// lock, audit indexes from one sequence. What a server keeps in memory is only a cache it can rebuild: the
/// tree over the log's contiguous prefix, followed from the table (see ``SharedAuditLog``).
///
/// Every call has a deadline (`operationTimeout`): a database that does not answer makes it throw
/// `STORE_UNAVAILABLE` (retryable) in that time, never hang; writes whose answer was lost that way may still
/// commit, and the client's retry with the same idempotency key finds them.
public final class PostgresStore: Store {
    public let location: String
    let client: PostgresClient
    let configuration: PostgresStoreConfiguration
    let logger: Logger
    let wallClock: WallClock
    let time: MonotonicTime
    let health = WriteHealth()
    let auditLog: SharedAuditLog
    let committer: PostgresCommitter
    let leader: CheckpointLease
    let feed: ChangeFeed
    /// Audit indexes reserved for the requests that ask at the same moment, one `nextval` statement for all.
    let indexReservations: ReadBatcher<Void, Int64>
    /// The idempotency lookups of concurrent AUTHORIZE requests, one statement for all.
    /// Each read's own answer: a row it cannot decode fails that read alone.
    let idempotencyLookups: ReadBatcher<IdempotencyKey, Result<AuthorizationRecord?, any Error>>
    private let running: Mutex<Task<Void, Never>?>

    /// Connects, creates or migrates the schema, checks the audit log against its latest checkpoint and starts
    /// following it.
    /// - Throws: ``LedgerError``: `STORE_UNAVAILABLE` when the database cannot be reached in time or its schema
    ///   is newer than this build's; `AUDIT_LOG_MISMATCH` when the log is not the one signed.
    public init(configuration: PostgresStoreConfiguration, logger: Logger, wallClock: WallClock = .system, time: MonotonicTime = .continuous) async throws {
        self.configuration = configuration
        self.location = configuration.location
        self.logger = logger
        self.wallClock = wallClock
        self.time = time
        self.client = PostgresClient(configuration: try configuration.clientConfiguration(), backgroundLogger: logger)
        let client = self.client
        let running = Task { await client.run() }
        self.running = Mutex(running)
        do {
            try await withDeadline(configuration.connectTimeout, time: time) {
                _ = try await PostgresSchema.migrate(client, logger: logger)
            }
            let opened = try await withDeadline(configuration.openTimeout, time: time) {
                try await SharedAuditLog.open(client: client, logger: logger)
            }
            self.auditLog = SharedAuditLog(frontier: opened, lostAfter: configuration.lostAfter, time: time)
        } catch {
            running.cancel()
            throw Self.failure(error, doing: "open the store at \(configuration.location)")
        }
        self.committer = PostgresCommitter(client: client, auditLog: self.auditLog, health: self.health, wallClock: wallClock, logger: logger)
        let timeout = configuration.operationTimeout
        self.indexReservations = ReadBatcher(timeout: timeout, time: time) { batch, within in
            try await Self.reading("reserve audit indexes", timeout: within, time: time) {
                try await Self.reserveAuditIndexes(batch.count, client: client, logger: logger)
            }
        }
        self.idempotencyLookups = ReadBatcher(timeout: timeout, time: time) { keys, within in
            try await Self.reading("read authorizations by idempotency key", timeout: within, time: time) {
                try await Self.authorizations(keys, client: client, logger: logger)
            }
        }
        self.leader = CheckpointLease(configuration: configuration, logger: logger, time: time)
        self.feed = ChangeFeed(configuration: configuration, logger: logger, time: time)
        self.feed.start()
        self.startFollowing()
    }

    /// Stops following the log, gives up the checkpoint lease and closes every connection.
    public func close() async {
        let task = self.running.withLock { $0.take() }
        await self.leader.stop()
        await self.feed.stop()
        self.auditLog.stopFollowing()
        task?.cancel()
        await task?.value
    }

    deinit {
        self.running.withLock { $0?.cancel() }
    }

    private func startFollowing() {
        let (client, logger, auditLog, wallClock, interval) = (self.client, self.logger, self.auditLog, self.wallClock, self.configuration.followInterval)
        let time = self.time
        auditLog.startFollowing(interval: interval) {
            try await withDeadline(.seconds(10), time: time) {
                try await auditLog.catchUp(client: client, logger: logger, now: wallClock.secondsSince1970)
            }
        }
        self.leader.start()
    }

    // MARK: Access

    /// Runs `body` with a deadline; failures of the database become `STORE_UNAVAILABLE`.
    @discardableResult
    func read<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresClient) async throws -> T) async throws -> T {
        let client = self.client
        return try await Self.reading(what, timeout: self.configuration.operationTimeout, time: self.time) { try await body(client) }
    }

    /// A batched read, its failure (its deadline passed while it waited its turn) said as the store says it.
    func batched<Input: Sendable, Output: Sendable>(_ what: String, _ batcher: ReadBatcher<Input, Output>, _ input: Input) async throws -> Output {
        do {
            return try await batcher.submit(input)
        } catch {
            throw Self.failure(error, doing: what)
        }
    }

    static func reading<T: Sendable>(
        _ what: String, timeout: Duration, time: MonotonicTime, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        do {
            return try await withDeadline(timeout, time: time) { try await body() }
        } catch {
            throw Self.failure(error, doing: what)
        }
    }

    /// Runs `body` in a transaction with a deadline, and records whether the store took writes.
    @discardableResult
    func write<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T) async throws -> T {
        let (client, logger) = (self.client, self.logger)
        do {
            let result = try await withDeadline(self.configuration.operationTimeout, time: self.time) {
                try await client.withTransaction(logger: logger) { connection in try await body(connection, logger) }
            }
            self.health.succeeded()
            return result
        } catch {
            let failure = Self.failure(error, doing: what)
            if failure.code == .storeUnavailable { self.health.failed(failure) }
            throw failure
        }
    }

    /// A refusal decided inside a transaction passes as it is; anything else is the store failing, said in a
    /// sentence with the database's own words (SQLSTATE and message; bound values are never printed).
    static func failure(_ error: any Error, doing what: String) -> LedgerError {
        if let error = error as? LedgerError { return error }
        if let error = error as? PostgresTransactionError {
            for inner in [error.closureError, error.beginError, error.commitError, error.rollbackError].compactMap({ $0 }) {
                if let refusal = inner as? LedgerError { return refusal }
            }
            if let inner = error.closureError ?? error.beginError ?? error.commitError { return Self.failure(inner, doing: what) }
        }
        if let deadline = error as? DeadlineExceeded {
            return LedgerError(.storeUnavailable, "could not \(what): PostgreSQL did not answer within \(deadline.timeout)")
        }
        if let error = error as? PSQLError {
            let state = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
            let message = error.serverInfo?[.message] ?? "\(error.code)"
            return LedgerError(.storeUnavailable, "could not \(what): \(message)\(state)")
        }
        return LedgerError(.storeUnavailable, "could not \(what): \(error)")
    }

    // MARK: Health

    public var writeFailures: Int { self.health.failureCount }

    public var groupCommitStatistics: (transactions: Int, records: Int) { self.committer.statistics }

    /// Holds group commits back until ``resumeCommits()`` (for tests of grouping).
    @_spi(Testing) public func pauseCommits() { self.committer.pause() }
    @_spi(Testing) public func resumeCommits() { self.committer.resume(timeout: self.configuration.operationTimeout, time: self.time) }
    @_spi(Testing) public var pendingCommits: Int { self.committer.pendingCount }

    /// Not ready while the last write failed, the database does not answer, or the log's contiguous prefix has
    /// stopped following the table.
    public func notReadyBecause() async -> String? {
        do {
            if let failure = self.health.failure {
                // A transaction of its own, rather than waiting for a request: a balancer sends none to a server
                // that is not ready, so without this probe a store that is back would never be seen to be.
                do {
                    try await self.write("probe the store") { connection, logger in try await connection.query("SELECT 1", logger: logger) }
                } catch {
                    return "the last write to the store failed (\(failure))"
                }
            }
            try await self.read("check the store") { client in
                try await client.query("SELECT 1", logger: self.logger)
            }
        } catch {
            return "the store does not answer (\(error))"
        }
        if let problem = self.auditLog.followingProblem {
            return "the audit log cannot be followed (\(problem))"
        }
        return nil
    }

    public func changes() -> AsyncStream<StoreChange> { self.feed.subscribe() }

    /// Whether this server holds the cluster's checkpoint lease (one signer at a time; see ``CheckpointLease``).
    public var leadsCheckpoints: Bool { self.leader.isHeld }
}

extension PostgresRowSequence {
    /// The first row decoded as `T`, or `nil` when there is none.
    func first<T: PostgresDecodable & Sendable>(_ type: T.Type) async throws -> T? {
        for try await value in self.decode(T.self) { return value }
        return nil
    }
}
