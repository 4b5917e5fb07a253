import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Logged-in sessions on one token, lent to one task at a time.
///
/// ```swift
/// let signature = try await pool.withSession { session in
///     try session.signECDSA(digest: digest, with: key)
/// }
/// ```
///
/// The body runs on the pool's `NIOThreadPool`, because every PKCS#11 call blocks: never on an event loop,
/// never on Swift's cooperative pool. Sessions are opened lazily up to a capacity taken from the
/// configuration and capped by the token's `ulMaxRwSessionCount`. A task that finds every session busy
/// waits at most the acquire timeout (a timer on an event loop, or a task on an injected clock: ``Timers``), then gets
/// ``SessionPoolError/Code/acquireTimeout``. A waiting task's body is run by the thread that returns a session, as
/// soon as it does, so that under load a session goes from one body to the next without a wait for the waiting
/// task's executor. A session whose call reports that it is gone (token removed,
/// session invalid, logged out) is closed and replaced by a fresh, logged-in one on the next lease.
public final class PKCS11SessionPool: Sendable {
    /// The token whose sessions the pool lends.
    public let token: PKCS11Token
    /// The most sessions this pool will have open at once.
    public let capacity: Int

    private let pin: PIN
    private let threadPool: NIOThreadPool
    private let timers: Timers
    private let acquireTimeout: Duration
    private let logger: Logger
    private let state = Mutex(State())

    /// - Parameters:
    ///   - token: the token whose sessions to pool.
    ///   - pin: the user PIN. The pool keeps it (zeroed when the pool is released) to log in again after the
    ///     token drops every session, e.g. an HSM restart; it is passed to `C_Login` and nowhere else.
    ///   - configuration: capacity and acquire timeout.
    ///   - threadPool: where the blocking PKCS#11 calls run; the caller starts and stops it. Give it at least as
    ///     many threads as sessions (the pool logs a warning when it has fewer): a thread that returns a session goes
    ///     on with the waiting bodies (up to 64 in a row), so the pool's other work (a lease queued by a task, a
    ///     session to close) needs threads beside them.
    ///   - timers: where the acquire timeout and the grace of ``close(timeout:)`` are measured: NIO's shared event
    ///     loops unless given (a test passes a loop or a clock whose time it moves).
    ///   - logger: where the pool reports sessions it drops after an error.
    public init(
        token: PKCS11Token,
        pin: PIN,
        configuration: Configuration = .init(),
        threadPool: NIOThreadPool,
        timers: Timers = .shared,
        logger: Logger = Logger(label: "countersign.pkcs11")
    ) {
        self.token = token
        self.pin = pin
        self.threadPool = threadPool
        self.timers = timers
        self.acquireTimeout = configuration.acquireTimeout
        self.logger = logger
        var capacity = max(1, configuration.maximumSessions)
        if case .limited(let tokenLimit) = token.info.maximumReadWriteSessions, tokenLimit > 0 {
            capacity = min(capacity, tokenLimit)
        }
        self.capacity = capacity
        if threadPool.numberOfThreads < capacity {
            logger.warning(
                "the HSM session pool has fewer threads than sessions: a session lent while every thread is busy waits for one",
                metadata: ["threads": "\(threadPool.numberOfThreads)", "sessions": "\(capacity)"])
        }
    }

    /// Lends a logged-in session to `body`, which runs on the thread pool.
    ///
    /// - Parameter body: the work; it must not keep the session beyond its return.
    /// - Returns: what `body` returned.
    /// - Throws: ``SessionPoolError`` when no session frees up in time or the pool is closed;
    ///   ``PKCS11Error`` from opening or logging in a session; whatever `body` throws.
    public func withSession<Result: Sendable>(
        _ body: @escaping @Sendable (borrowing PKCS11Session) throws -> Result
    ) async throws -> Result {
        let outcome = Outcome<Result>()
        let job = Self.job(body, token: self.token, pin: self.pin, outcome: outcome)
        try await withTaskCancellationHandler {
            switch try await self.acquire(job) {
            case .done:
                // Done on the thread that returned the session, while this task waited (``runOnPoolThread(_:)``).
                break
            case .lease(let lease):
                _ = try await withCheckedThrowingContinuation { (continuation: Waiters.Continuation) in
                    self.threadPool.submit { state in
                        guard case .active = state else {
                            // The thread pool is shutting down: give the lease back untouched.
                            switch lease {
                            case .session(let handle): self.release(handle, discard: false)
                            case .mustOpen: self.release(nil, discard: true)
                            }
                            continuation.resume(throwing: NIOThreadPoolError.ThreadPoolInactive())
                            return
                        }
                        self.runOnPoolThread(Handover(continuation: continuation, job: job, lease: lease))
                    }
                }
            }
        } onCancel: {
            // A body already begun runs to its end (a PKCS#11 call cannot be interrupted); one not yet begun is skipped.
            outcome.cancelled.store(true, ordering: .relaxed)
        }
        guard let result = outcome.value.withLock({ $0 }) else {
            preconditionFailure("a session pool's job ended without a result")
        }
        return try result.get()
    }

    /// Does `first`'s job on this thread of the pool, resumes its task, and gives the session back from here: to the
    /// oldest waiting task, whose job this thread then does too, without waking that task first. Under load a session
    /// therefore goes from one signature to the next on the same thread; handed to the waiting task instead, it
    /// stayed lent to nobody until that task ran again on its event loop and had its work queued here
    /// (docs/benchmarks.md, the network HSM).
    private func runOnPoolThread(_ first: Handover) {
        var next: Handover? = first
        var done = 0
        while let current = next {
            let returned = current.job(current.lease)
            done += 1
            // Only a session that is fine goes on to the next waiting body on this thread, and only for so many in a
            // row: after a failure (a session that would not open, a call that failed) the next waiting task is
            // resumed with the lease as it was before, so a failing token is not hammered from one thread, and this
            // thread goes back to the pool's other work (closing sessions, leases queued by tasks) now and then.
            let goesOn = returned.error == nil && done < Self.longestRun
            if let error = returned.error {
                next = self.giveBack(after: error, returned.handle, onPoolThread: goesOn)
            } else {
                next = self.giveBack(returned.handle, discard: false, onPoolThread: goesOn)
            }
            current.continuation.resume(returning: .done)
        }
    }

    /// The most waiting bodies a thread does in a row before it lets the waiting task queue its own.
    static let longestRun = 64

    /// Returns the lease of a call that failed with `error`: its session (`nil` when none could be opened) is
    /// closed when the error says it is gone, and with it the idle ones (when the token dropped one session it
    /// has usually dropped them all, a restart: the next requests must not each find a dead session).
    private func giveBack(after error: any Error, _ handle: SessionHandle?, onPoolThread: Bool) -> Handover? {
        let sessionIsGone = (error as? PKCS11Error)?.code.invalidatesSession ?? false
        if sessionIsGone {
            self.logger.warning("dropping PKCS#11 session after error", metadata: ["error": "\(error)"])
        }
        return self.giveBack(handle, discard: handle == nil || sessionIsGone, discardIdle: sessionIsGone, onPoolThread: onPoolThread)
    }

    /// What the pool holds right now.
    public var statistics: Statistics {
        self.state.withLock { state in
            Statistics(capacity: self.capacity, open: state.open, inUse: state.inUse, waiting: state.waiters.count)
        }
    }

    /// Refuses new leases, fails every waiting task, closes idle sessions and waits until the sessions still
    /// in use come back, closing them too. Call before finalizing the module.
    ///
    /// - Parameter timeout: how long to wait for sessions in use; a PKCS#11 call that hangs never returns its
    ///   session, and shutdown must not hang with it.
    /// - Returns: whether every session came back (only then is it safe to finalize the module).
    @discardableResult
    public func close(timeout: Duration = .seconds(10)) async -> Bool {
        let closed = SessionPoolError(code: .poolClosed, reason: "the HSM session pool is closed; the server is shutting down")
        let (sessions, suspended) = self.state.withLock { state -> ([SessionHandle], [Waiters.Continuation]) in
            state.isClosed = true
            var sessions = state.idle
            state.open -= state.idle.count
            state.idle = []
            // Waits handed a place but not yet resumed give it back; they find this error when they suspend.
            let (suspended, reclaimed) = state.waiters.failAll(with: closed)
            for case .lease(let lease) in reclaimed {
                state.inUse -= 1
                state.open -= 1
                if case .session(let handle) = lease { sessions.append(handle) }
            }
            return (sessions, suspended)
        }
        for continuation in suspended {
            continuation.resume(throwing: closed)
        }
        await self.closeSessions(sessions)
        let grace = Mutex<(@Sendable () -> Void)?>(nil)
        defer { grace.withLock { $0 }?() }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let drained = self.state.withLock { state -> Bool in
                if state.isDrained { return true }
                state.drainWaiters.append(continuation)
                return false
            }
            if drained {
                continuation.resume(returning: true)
                return
            }
            // Started once the continuation is registered: a grace that ended before would resume nobody.
            let cancel = self.timers.schedule(after: timeout) {
                let waiters = self.state.withLock { $0.takeDrainWaiters() }
                waiters.forEach { $0.resume(returning: false) }
            }
            grace.withLock { $0 = cancel }
        }
    }

    // MARK: Leases

    private struct State {
        var idle: [SessionHandle] = []
        /// Sessions open or being opened, idle or not.
        var open = 0
        var inUse = 0
        var waiters = Waiters()
        var isClosed = false
        var drainWaiters: [CheckedContinuation<Bool, Never>] = []
        /// Sessions handed to the thread pool to be closed, not closed yet: a closed pool is drained only once
        /// they are, so nothing (a module re-initialization) comes between and renumbers what they close.
        var closing = 0

        var isDrained: Bool { self.inUse == 0 && self.closing == 0 }

        /// The tasks waiting in ``close(timeout:)``, to resume once; the list is emptied.
        mutating func takeDrainWaiters() -> [CheckedContinuation<Bool, Never>] {
            defer { self.drainWaiters = [] }
            return self.drainWaiters
        }
    }

    private enum Admission {
        case granted(Grant)
        case refused(SessionPoolError)
        case queued(UInt64, cancelTimeout: @Sendable () -> Void)
    }

    private func acquire(_ job: @escaping Job) async throws -> Grant {
        let admission = self.state.withLock { state -> Admission in
            if state.isClosed {
                return .refused(SessionPoolError(code: .poolClosed, reason: "the HSM session pool is closed; the server is shutting down"))
            }
            if let handle = state.idle.popLast() {
                state.inUse += 1
                return .granted(.lease(.session(handle)))
            }
            if state.open < self.capacity {
                state.open += 1
                state.inUse += 1
                return .granted(.lease(.mustOpen))
            }
            let id = state.waiters.register(job: job)
            // Started before the lock is let go: whoever sees the waiter (``statistics``) sees its timeout running.
            // Its expiry cannot run inside this call (a timer never fires from `scheduleTask` itself).
            return .queued(id, cancelTimeout: self.startAcquireTimeout(for: id))
        }
        switch admission {
        case .granted(let grant):
            return grant
        case .refused(let error):
            throw error
        case .queued(let id, let cancelTimeout):
            defer { cancelTimeout() }
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let early = self.state.withLock { $0.waiters.suspend(id, on: continuation) }
                    if let early {
                        continuation.resume(with: early)
                    }
                }
            } onCancel: {
                self.resolveWaiter(id, with: .failure(CancellationError()))
            }
        }
    }

    /// Starts the acquire timeout of waiter `id`; the returned closure cancels it.
    private func startAcquireTimeout(for id: UInt64) -> @Sendable () -> Void {
        let timeout = self.acquireTimeout
        let capacity = self.capacity
        return self.timers.schedule(after: timeout) {
            self.resolveWaiter(
                id,
                with: .failure(
                    SessionPoolError(
                        code: .acquireTimeout, reason: "all \(capacity) HSM sessions stayed busy for \(timeout); the token is overloaded or not answering")
                )
            )
        }
    }

    /// Ends a wait with `result` unless it already ended.
    private func resolveWaiter(_ id: UInt64, with result: Swift.Result<Grant, any Error>) {
        let continuation = self.state.withLock { $0.waiters.resolve(id, with: result) }
        continuation?.resume(with: result)
    }

    /// Returns a lease from a task, not from a thread of the pool: the waiting task it passes to is resumed with it.
    private func release(_ handle: SessionHandle?, discard: Bool) {
        let handOver = self.giveBack(handle, discard: discard, onPoolThread: false)
        assert(handOver == nil, "a lease given back off the pool's threads is handed to its next task, not taken")
    }

    /// Returns a lease. `handle` is the session to reuse, or `nil` when none was opened; `discard` closes it.
    /// - Parameter onPoolThread: whether the caller, a thread of the pool, does the job of the task the lease passes
    ///   to: then it is returned, and the caller must do it and resume that task; otherwise that task is resumed with
    ///   the lease.
    private func giveBack(_ handle: SessionHandle?, discard: Bool, discardIdle: Bool = false, onPoolThread: Bool) -> Handover? {
        struct Next {
            var close: SessionHandle?
            var closeIdle: [SessionHandle] = []
            var handOver: Handover?
            var drained: [CheckedContinuation<Bool, Never>] = []
        }
        let next = self.state.withLock { state -> Next in
            var next = Next()
            if discardIdle {
                next.closeIdle = state.idle
                state.open -= state.idle.count
                state.idle = []
            }
            let reusable = discard || state.isClosed ? nil : handle
            if reusable == nil {
                next.close = handle
            }
            let lease = reusable.map(Lease.session) ?? .mustOpen
            // The place in the pool, and its inUse count, pass straight to the oldest waiter, if any.
            let service = state.isClosed ? .nobodyWaiting : state.waiters.serveOldest(with: .lease(lease))
            if case .serve(let continuation, let job) = service {
                next.handOver = Handover(continuation: continuation, job: job, lease: lease)
            }
            if case .nobodyWaiting = service {
                state.inUse -= 1
                if let reusable {
                    state.idle.append(reusable)
                } else {
                    state.open -= 1
                }
            }
            state.closing += (next.close == nil ? 0 : 1) + next.closeIdle.count
            if state.isClosed, state.isDrained {
                next.drained = state.takeDrainWaiters()
            }
            return next
        }
        let closing = (next.close.map { [$0] } ?? []) + next.closeIdle
        if !closing.isEmpty {
            let token = self.token
            self.threadPool.submit { _ in
                for handle in closing { try? token.closeSession(handle) }
                self.closed(closing.count)
            }
        }
        for continuation in next.drained {
            continuation.resume(returning: true)
        }
        guard let handOver = next.handOver else { return nil }
        if onPoolThread { return handOver }
        handOver.continuation.resume(returning: .lease(handOver.lease))
        return nil
    }

    /// `count` sessions handed over to be closed are closed (or the thread pool refused the work).
    private func closed(_ count: Int) {
        let drained = self.state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.closing -= count
            guard state.isClosed, state.isDrained else { return [] }
            return state.takeDrainWaiters()
        }
        drained.forEach { $0.resume(returning: true) }
    }

    private func closeSessions(_ handles: [SessionHandle]) async {
        guard !handles.isEmpty else { return }
        let token = self.token
        _ = try? await self.threadPool.runIfActive {
            for handle in handles {
                try? token.closeSession(handle)
            }
        }
    }
}
