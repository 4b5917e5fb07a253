import CountersignCore
import Logging
import PostgresNIO
import Synchronization

/// One checkpoint signer at a time in a cluster: the server holding PostgreSQL's session-level advisory lock
/// `checkpointLeaderLock` on a connection of its own. A leader that dies (or loses its connection) loses the
/// lock with its session; another server takes it at its next try, within `retryInterval`.
final class CheckpointLease: Sendable {
    private let configuration: PostgresStoreConfiguration
    private let logger: Logger
    private let time: MonotonicTime
    private let held = Atomic<Bool>(false)
    private let task = Mutex<Task<Void, Never>?>(nil)
    /// How often a follower tries to take the lease, and a leader checks its connection.
    let retryInterval: Duration = .seconds(2)

    init(configuration: PostgresStoreConfiguration, logger: Logger, time: MonotonicTime) {
        self.configuration = configuration
        self.logger = logger
        self.time = time
    }

    var isHeld: Bool { self.held.load(ordering: .acquiring) }

    func start() {
        let task = Task { await self.run() }
        self.task.withLock { $0 = task }
    }

    func stop() async {
        let task = self.task.withLock { $0.take() }
        task?.cancel()
        await task?.value
        self.held.store(false, ordering: .releasing)
    }

    private func run() async {
        var id = 0
        while !Task.isCancelled {
            id += 1
            do {
                let connection = try await PostgresConnection.connect(
                    configuration: try self.configuration.connectionConfiguration(), id: id, logger: self.logger)
                await self.hold(on: connection)
                try? await connection.close()
            } catch {
                self.logger.debug("the checkpoint lease's connection failed", metadata: ["error": "\(PostgresStore.failure(error, doing: "connect"))"])
            }
            self.held.store(false, ordering: .releasing)
            try? await self.time.sleep(for: self.retryInterval)
        }
    }

    /// Tries for the lock, then keeps the session alive while it is held; returns when the connection fails or
    /// the task is cancelled.
    private func hold(on connection: PostgresConnection) async {
        while !Task.isCancelled {
            do {
                if self.isHeld {
                    _ = try await withDeadline(self.configuration.operationTimeout, time: self.time) {
                        try await connection.query("SELECT 1", logger: self.logger)
                    }
                } else {
                    let taken = try await withDeadline(self.configuration.operationTimeout, time: self.time) {
                        try await connection.query("SELECT pg_try_advisory_lock(\(PostgresSchema.checkpointLeaderLock))", logger: self.logger).first(Bool.self)
                            ?? false
                    }
                    if taken {
                        self.held.store(true, ordering: .releasing)
                        self.logger.info("this server signs the cluster's checkpoints now")
                    }
                }
            } catch {
                if self.isHeld { self.logger.warning("this server lost the checkpoint lease: its connection to PostgreSQL failed") }
                self.held.store(false, ordering: .releasing)
                return
            }
            try? await self.time.sleep(for: self.retryInterval)
        }
    }
}
