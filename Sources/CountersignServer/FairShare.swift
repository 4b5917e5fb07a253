import Policy
import Synchronization

/// Lets at most `width` pieces of heavy work run at once, and when more wait, takes turns between the
/// principals that wait rather than serving them in arrival order.
///
/// An auditor that pipelines thousands of reads of the audit log queues behind its own reads, one turn per
/// principal, so another principal's read waits for at most one of them, and the authorizations (which never
/// pass through here) keep the rest of the machine. A waiter whose task is cancelled (its connection is gone)
/// leaves the queue at once.
final class FairShare: Sendable {
    let width: Int
    /// The share of its time a turn may spend working: after a piece of work that took `t`, the turn is held
    /// idle for `t × (1 − share) / share` (at most ``maximumPause``) before it passes on, so the readers together
    /// keep at most about `width × share` cores busy however many wait. `t` is elapsed time, waits included: the
    /// cap keeps a read that waited long (a checkpoint signed for it) from idling the turn for minutes.
    let share: Double
    private let time: MonotonicTime
    static let maximumPause: Duration = .seconds(1)

    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var running = 0
        /// Principal → its waiters, oldest first.
        var queues: [String: [Waiter]] = [:]
        /// The principals with waiters, in the order of their next turn.
        var turns: [String] = []
        var nextID: UInt64 = 0
        /// Waiters that have an id but are not queued yet, and those of them cancelled meanwhile.
        var unqueued: Set<UInt64> = []
        var cancelled: Set<UInt64> = []

        var isEmpty: Bool { self.turns.isEmpty }
    }

    private let state = Mutex(State())

    /// - Parameters:
    ///   - width: how many may run at once (at least 1).
    ///   - share: the share of a turn's time spent working (0 < share ≤ 1; 1: no pause).
    ///   - time: measures the work and the pause.
    init(width: Int, share: Double = 1, time: MonotonicTime = .continuous) {
        self.width = max(1, width)
        self.share = min(1, max(0.01, share))
        self.time = time
    }

    /// Waits for a turn of `principal`, runs `body`, and hands the turn on (after the pause its share asks for).
    /// - Throws: `CancellationError` when cancelled while waiting; what `body` throws.
    func run<Result: Sendable>(for principal: String, _ body: () async throws -> Result) async throws -> Result {
        try await self.acquire(principal)
        let started = self.time.now
        defer {
            let pause = min((self.time.now - started) * ((1 - self.share) / self.share), Self.maximumPause)
            if pause > .zero {
                // The turn is released after the pause, off this task: the answer is not held back by it.
                Task {
                    try? await self.time.sleep(for: pause)
                    self.release()
                }
            } else {
                self.release()
            }
        }
        return try await body()
    }

    /// Pieces of work running, and waiting (for tests and metrics).
    var load: (running: Int, waiting: Int) {
        self.state.withLock { state in (state.running, state.queues.values.reduce(0) { $0 + $1.count }) }
    }

    private func acquire(_ principal: String) async throws {
        let id = try self.state.withLock { state throws(CancellationError) -> UInt64? in
            if state.running < self.width, state.isEmpty {
                state.running += 1
                return nil
            }
            guard !Task.isCancelled else { throw CancellationError() }
            state.nextID += 1
            state.unqueued.insert(state.nextID)
            return state.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Next { case cancelled, runs, waits }
                let next = self.state.withLock { state -> Next in
                    state.unqueued.remove(id)
                    if state.cancelled.remove(id) != nil { return .cancelled }
                    // A turn may have been released between taking the id and now, with nobody queued to take it.
                    if state.running < self.width, state.isEmpty {
                        state.running += 1
                        return .runs
                    }
                    if state.queues[principal, default: []].isEmpty { state.turns.append(principal) }
                    state.queues[principal, default: []].append(Waiter(id: id, continuation: continuation))
                    return .waits
                }
                switch next {
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .runs: continuation.resume()
                case .waits: break
                }
            }
        } onCancel: {
            let continuation = self.state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.queues[principal]?.firstIndex(where: { $0.id == id }) else {
                    // Not queued yet: it finds this when it is. Otherwise it already has its turn.
                    if state.unqueued.contains(id) { state.cancelled.insert(id) }
                    return nil
                }
                let waiter = state.queues[principal]!.remove(at: index)
                if state.queues[principal]!.isEmpty {
                    state.queues[principal] = nil
                    state.turns.removeAll { $0 == principal }
                }
                return waiter.continuation
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

    private func release() {
        let next = self.state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard !state.turns.isEmpty else {
                state.running -= 1
                return nil
            }
            // The turn passes to the principal at the front, which then goes to the back of the line.
            let principal = state.turns.removeFirst()
            let waiter = state.queues[principal]!.removeFirst()
            if state.queues[principal]!.isEmpty {
                state.queues[principal] = nil
            } else {
                state.turns.append(principal)
            }
            return waiter.continuation
        }
        next?.resume()
    }
}
