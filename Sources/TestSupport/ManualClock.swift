import Synchronization

/// A clock that moves only when a test says so, so timeouts are tested without waiting for them.
public final class ManualClock: Clock, Sendable {
    public struct Instant: InstantProtocol, CustomStringConvertible {
        public var offset: Duration

        public init(offset: Duration) {
            self.offset = offset
        }

        public func advanced(by duration: Duration) -> Instant { Instant(offset: self.offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - self.offset }
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
        public var description: String { "\(self.offset)" }
    }

    private struct Sleeper {
        var id: UInt64
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>?
        var isCancelled = false
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Sleeper] = []
        var nextID: UInt64 = 0
        var sleeperWatchers: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())

    public init() {}

    public var now: Instant { self.state.withLock { $0.now } }
    public var minimumResolution: Duration { .zero }

    /// How many tasks are sleeping on this clock.
    public var sleeperCount: Int { self.state.withLock { $0.sleepers.count } }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = self.state.withLock { state -> UInt64? in
            if deadline <= state.now { return nil }
            defer { state.nextID += 1 }
            state.sleepers.append(Sleeper(id: state.nextID, deadline: deadline))
            return state.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let (resumeNow, watchers) = self.state.withLock { state -> (Bool?, [CheckedContinuation<Void, Never>]) in
                    guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return (true, []) }
                    if state.sleepers[index].isCancelled {
                        state.sleepers.remove(at: index)
                        return (false, [])
                    }
                    if state.sleepers[index].deadline <= state.now {
                        state.sleepers.remove(at: index)
                        return (true, [])
                    }
                    state.sleepers[index].continuation = continuation
                    return (nil, Self.takeSatisfiedWatchers(&state))
                }
                watchers.forEach { $0.resume() }
                switch resumeNow {
                case .some(true): continuation.resume()
                case .some(false): continuation.resume(throwing: CancellationError())
                case .none: break
                }
            }
        } onCancel: {
            let continuation = self.state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                guard let continuation = state.sleepers[index].continuation else {
                    state.sleepers[index].isCancelled = true
                    return nil
                }
                state.sleepers.remove(at: index)
                return continuation
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline has come.
    public func advance(by duration: Duration) {
        let due = self.state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.now = state.now.advanced(by: duration)
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now && $0.continuation != nil }
            state.sleepers.removeAll { $0.deadline <= now && $0.continuation != nil }
            return due.compactMap(\.continuation)
        }
        due.forEach { $0.resume() }
    }

    /// When each suspended sleeper wakes, as offsets from the clock's start.
    public var deadlines: [Duration] {
        self.state.withLock { state in state.sleepers.filter { $0.continuation != nil }.map(\.deadline.offset) }
    }

    /// Returns once at least `count` tasks are suspended in ``sleep(until:tolerance:)``.
    public func waitForSleepers(_ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = self.state.withLock { state -> Bool in
                if state.sleepers.filter({ $0.continuation != nil }).count >= count { return true }
                state.sleeperWatchers.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private static func takeSatisfiedWatchers(_ state: inout State) -> [CheckedContinuation<Void, Never>] {
        let suspended = state.sleepers.filter { $0.continuation != nil }.count
        let satisfied = state.sleeperWatchers.filter { $0.count <= suspended }.map(\.continuation)
        state.sleeperWatchers.removeAll { $0.count <= suspended }
        return satisfied
    }
}
