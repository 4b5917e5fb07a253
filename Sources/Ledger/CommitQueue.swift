import Synchronization

/// The queue of a group committer: writes wait here while the previous group commits, and are taken all at once
/// as the next group. Shared by the SQLite and the PostgreSQL committers, which differ only in how they commit.
package final class CommitQueue<Write: Sendable, Outcome: Sendable>: Sendable {
    package struct Pending: Sendable {
        package var write: Write
        package var continuation: CheckedContinuation<Outcome, any Error>
    }

    private struct State {
        var pending: [Pending] = []
        var isFlushing = false
        var isPaused = false
        var transactions = 0
        var records = 0
    }

    private let state = Mutex(State())

    package init() {}

    /// Queues `write` and waits for its outcome; `flush` is started (in a new task) when no flush is running.
    package func submit(_ write: Write, flush: @escaping @Sendable () async -> Void) async throws -> Outcome {
        try await withCheckedThrowingContinuation { continuation in
            let startFlush = self.state.withLock { state -> Bool in
                state.pending.append(Pending(write: write, continuation: continuation))
                guard !state.isFlushing, !state.isPaused else { return false }
                state.isFlushing = true
                return true
            }
            if startFlush {
                Task { await flush() }
            }
        }
    }

    /// Takes everything pending as the next group, or ends the flushing when there is nothing (the flush
    /// returns then; the next submit starts another).
    /// - Parameter maximum: the most writes one group takes (the rest wait for the next).
    package func takeGroup(maximum: Int = .max) -> [Pending]? {
        self.state.withLock { state -> [Pending]? in
            if state.pending.isEmpty || state.isPaused {
                state.isFlushing = false
                return nil
            }
            guard state.pending.count > maximum else {
                defer { state.pending = [] }
                return state.pending
            }
            defer { state.pending.removeFirst(maximum) }
            return Array(state.pending.prefix(maximum))
        }
    }

    /// Counts a committed group.
    package func committed(records: Int) {
        self.state.withLock { state in
            state.transactions += 1
            state.records += records
        }
    }

    /// Transactions committed and writes they held, to show that commits are grouped.
    package var statistics: (transactions: Int, records: Int) {
        self.state.withLock { ($0.transactions, $0.records) }
    }

    /// Holds commits back (tests): writes queue up and go in one transaction on ``resume(flush:)``.
    package func pause() {
        self.state.withLock { $0.isPaused = true }
    }

    package func resume(flush: @escaping @Sendable () async -> Void) {
        let start = self.state.withLock { state -> Bool in
            state.isPaused = false
            guard !state.isFlushing, !state.pending.isEmpty else { return false }
            state.isFlushing = true
            return true
        }
        if start {
            Task { await flush() }
        }
    }

    package var pendingCount: Int { self.state.withLock { $0.pending.count } }
}
