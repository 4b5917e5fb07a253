import Policy
import Synchronization

/// Wakes the requests that wait for an authorization's approval to be decided.
///
/// A global generation counter closes the race between reading a status and starting to wait: a waiter
/// passes the generation it read before looking, and returns at once if anything changed since.
final class ApprovalNotifier: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var nextToken: UInt64 = 0
        var waiters: [String: [UInt64: CheckedContinuation<Void, Never>]] = [:]
        var isClosed = false
        /// The approvals console's live pages: told of every change (their stream keeps only the latest).
        var subscribers: [UInt64: AsyncStream<Void>.Continuation] = [:]
    }

    private let state = Mutex(State())

    var generation: UInt64 { self.state.withLock { $0.generation } }

    /// Set once the server stops: nobody waits any more.
    var isClosed: Bool { self.state.withLock { $0.isClosed } }

    /// Wakes every waiter for good (the server is stopping): a held FETCH_AUTHORIZATION answers at once,
    /// instead of keeping the stop waiting for its `wait_seconds`.
    func close() {
        let (waiters, subscribers) = self.state.withLock { state in
            state.isClosed = true
            state.generation &+= 1
            defer {
                state.waiters = [:]
                state.subscribers = [:]
            }
            return (state.waiters, state.subscribers)
        }
        for continuation in waiters.values.flatMap(\.values) { continuation.resume() }
        for subscriber in subscribers.values { subscriber.finish() }
    }

    /// A change to any authorization waiting for approvers (a new one, a verdict, a void, an expiry seen by
    /// another server): what the console's live pages listen to. Finishes when the server stops.
    func subscribe() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let token = self.state.withLock { state -> UInt64? in
            guard !state.isClosed else { return nil }
            state.nextToken &+= 1
            state.subscribers[state.nextToken] = continuation
            return state.nextToken
        }
        guard let token else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: token) }
        }
        return stream
    }

    private func announce() {
        for subscriber in self.state.withLock({ Array($0.subscribers.values) }) { subscriber.yield() }
    }

    /// Wakes every waiter (changes may have been missed); each reads its authorization again.
    func changedAll() {
        let waiters = self.state.withLock { state in
            state.generation &+= 1
            defer { state.waiters = [:] }
            return state.waiters
        }
        for continuation in waiters.values.flatMap(\.values) { continuation.resume() }
        self.announce()
    }

    /// Wakes everyone waiting on `id`.
    func changed(_ id: String) {
        let waiters = self.state.withLock { state in
            state.generation &+= 1
            return state.waiters.removeValue(forKey: id)
        }
        for continuation in (waiters ?? [:]).values { continuation.resume() }
        self.announce()
    }

    /// Returns when `id` changes (or anything changed since `generation`), after `timeout` on `time`, or when
    /// the task is cancelled, whichever comes first.
    func wait(for id: String, since generation: UInt64, timeout: Duration, time: MonotonicTime) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForChange(of: id, since: generation) }
            group.addTask { try? await time.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForChange(of id: String, since generation: UInt64) async {
        let token = self.state.withLock { state -> UInt64 in
            state.nextToken &+= 1
            return state.nextToken
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = self.state.withLock { state -> Bool in
                    if Task.isCancelled || state.isClosed || state.generation != generation { return true }
                    state.waiters[id, default: [:]][token] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let continuation = self.state.withLock { state in state.waiters[id]?.removeValue(forKey: token) }
            continuation?.resume()
        }
    }
}

/// The modes admins have switched on (e.g. `incident`), kept in the store so that they survive a restart.
final class ContextModes: Sendable {
    static let setting = "policy.active_modes"
    private let active: Mutex<Set<String>>

    init(active: Set<String>) {
        self.active = Mutex(active)
    }

    var current: Set<String> { self.active.withLock { $0 } }

    /// The modes another server of the cluster stored.
    func replace(with modes: Set<String>) {
        self.active.withLock { $0 = modes }
    }

    /// Switches `name` on or off and returns the modes now active; the caller stores them.
    func set(_ name: String, active: Bool) -> Set<String> {
        self.active.withLock { modes in
            if active { modes.insert(name) } else { modes.remove(name) }
            return modes
        }
    }
}
