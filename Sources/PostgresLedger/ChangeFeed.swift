import CountersignCore
import Ledger
import Logging
import PostgresNIO
import Synchronization

/// The servers of a cluster tell each other what they changed: every write that changes something a server caches
/// sends `NOTIFY countersign_changes` in its transaction (delivered at its commit, never for a rollback), and every
/// server listens on a connection of its own. After a reconnection (notifications sent meanwhile are lost) the
/// feed says `everything`, and caches reload whole.
///
/// Payloads: `a:<authorization id>`, `p:<principal id>`, `s:<setting name>`, `k` (key versions).
final class ChangeFeed: Sendable {
    static let channel = "countersign_changes"
    static let pingInterval: Duration = .seconds(5)

    private let configuration: PostgresStoreConfiguration
    private let logger: Logger
    private let time: MonotonicTime
    private let subscribers = Mutex<[UInt64: AsyncStream<StoreChange>.Continuation]>([:])
    private let nextID = Atomic<UInt64>(0)
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(configuration: PostgresStoreConfiguration, logger: Logger, time: MonotonicTime) {
        self.configuration = configuration
        self.logger = logger
        self.time = time
    }

    /// Sends `change` when the transaction on `connection` commits.
    static func notify(_ change: StoreChange, on connection: PostgresConnection, logger: Logger) async throws {
        guard let payload = Self.payload(change) else { return }
        try await connection.query("SELECT pg_notify(\(Self.channel), \(payload))", logger: logger)
    }

    static func payload(_ change: StoreChange) -> String? {
        switch change {
        case .authorization(let id): "a:\(id)"
        case .principal(let id): "p:\(id)"
        case .setting(let name): "s:\(name)"
        case .keyVersions: "k"
        case .everything: nil
        }
    }

    static func change(_ payload: String) -> StoreChange? {
        let value = String(payload.dropFirst(2))
        switch payload.prefix(2) {
        case "a:": return .authorization(id: value)
        case "p:": return .principal(id: value)
        case "s:": return .setting(name: value)
        default: return payload == "k" ? .keyVersions : nil
        }
    }

    func subscribe() -> AsyncStream<StoreChange> {
        let id = self.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let (stream, continuation) = AsyncStream.makeStream(of: StoreChange.self, bufferingPolicy: .bufferingNewest(10_000))
        continuation.onTermination = { [weak self] _ in self?.subscribers.withLock { _ = $0.removeValue(forKey: id) } }
        self.subscribers.withLock { $0[id] = continuation }
        return stream
    }

    private func publish(_ change: StoreChange) {
        for subscriber in self.subscribers.withLock({ Array($0.values) }) { subscriber.yield(change) }
    }

    func start() {
        let task = Task { await self.run() }
        self.task.withLock { $0 = task }
    }

    func stop() async {
        let task = self.task.withLock { $0.take() }
        task?.cancel()
        await task?.value
        for subscriber in self.subscribers.withLock({ Array($0.values) }) { subscriber.finish() }
    }

    private func run() async {
        var id = 100
        var delay = Duration.milliseconds(100)
        while !Task.isCancelled {
            id += 1
            do {
                let connection = try await PostgresConnection.connect(
                    configuration: try self.configuration.connectionConfiguration(), id: id, logger: self.logger)
                do {
                    try await withTaskCancellationHandler {
                        try await connection.listen(on: Self.channel) { notifications in
                            delay = .milliseconds(100)
                            self.publish(.everything)
                            // A connection a firewall dropped raises nothing while it only listens: it is pinged, and
                            // a ping that fails (or does not answer in time) ends it, so the feed reconnects and reloads.
                            try await withThrowingTaskGroup(of: Void.self) { group in
                                group.addTask {
                                    for try await notification in notifications {
                                        if let change = Self.change(notification.payload) { self.publish(change) }
                                    }
                                }
                                group.addTask {
                                    while true {
                                        try await self.time.sleep(for: Self.pingInterval)
                                        _ = try await withDeadline(self.configuration.operationTimeout, time: self.time) {
                                            try await connection.query("SELECT 1", logger: self.logger)
                                        }
                                    }
                                }
                                try await group.next()
                                group.cancelAll()
                            }
                        }
                    } onCancel: {
                        connection.close().whenComplete { _ in }
                    }
                } catch {
                    if !Task.isCancelled {
                        self.logger.warning("the change feed's connection to PostgreSQL ended; reconnecting", metadata: ["error": "\(error)"])
                    }
                }
                try? await connection.close()
            } catch {
                self.logger.debug("the change feed could not connect", metadata: ["error": "\(PostgresStore.failure(error, doing: "listen"))"])
            }
            try? await self.time.sleep(for: delay)
            delay = min(delay * 2, .seconds(1))
        }
    }
}
