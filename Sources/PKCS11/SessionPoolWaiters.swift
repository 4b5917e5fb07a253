import NIOCore
import NIOPosix

/// The tasks waiting for a session, oldest first: the queue inside ``PKCS11SessionPool``'s lock.
///
/// A wait has three stages, because the pool decides under its lock and resumes outside it:
/// - `registered`: queued under the lock, its task not yet suspended (its timeout is already running);
/// - `suspended`: its task waits on the continuation;
/// - `resolved`: given a grant (the pool's: a lease) or an error before its task suspended; the task takes it when it
///   does.
///
/// A resolved wait stays queued until its task collects the result, so a grant handed over early is never lost.
///
/// Each wait carries its `Job`, the work it waits to do, so that whoever serves a suspended wait can do that work
/// itself (the pool does it on the thread that returned the session) instead of waking the task to do it.
struct SessionPoolWaiters<Grant, Job> {
    typealias Continuation = CheckedContinuation<Grant, any Error>

    private enum Stage {
        case registered
        case suspended(Continuation)
        case resolved(Result<Grant, any Error>)
    }

    private var waiters: [(id: UInt64, job: Job, stage: Stage)] = []
    private var nextID: UInt64 = 0

    /// Waits queued and not yet collected, resolved or not.
    var count: Int { self.waiters.count }

    /// Queues a new wait for the chance to do `job`. - Returns: its id.
    mutating func register(job: Job) -> UInt64 {
        let id = self.nextID
        self.nextID += 1
        self.waiters.append((id, job, .registered))
        return id
    }

    /// The task of wait `id` suspends on `continuation`.
    /// - Returns: the result to resume it with now, when the wait already ended (`CancellationError` when it was
    ///   cancelled and removed); `nil` when it is to wait.
    mutating func suspend(_ id: UInt64, on continuation: Continuation) -> Result<Grant, any Error>? {
        self.take(id, orSuspendOn: continuation)
    }

    /// The result of wait `id` when it has ended, which leaves the queue with it (`CancellationError` when it is not
    /// queued); otherwise `nil`, and the wait is suspended on `continuation` when one is given.
    mutating func take(_ id: UInt64, orSuspendOn continuation: Continuation? = nil) -> Result<Grant, any Error>? {
        guard let index = self.waiters.firstIndex(where: { $0.id == id }) else {
            return .failure(CancellationError())
        }
        if case .resolved(let result) = self.waiters[index].stage {
            self.waiters.remove(at: index)
            return result
        }
        if let continuation {
            self.waiters[index].stage = .suspended(continuation)
        }
        return nil
    }

    /// Ends wait `id` with `result`, unless it already ended.
    /// - Returns: the continuation to resume with `result`, when its task is suspended.
    mutating func resolve(_ id: UInt64, with result: Result<Grant, any Error>) -> Continuation? {
        guard let index = self.waiters.firstIndex(where: { $0.id == id }) else { return nil }
        switch self.waiters[index].stage {
        case .registered:
            self.waiters[index].stage = .resolved(result)
            return nil
        case .suspended(let continuation):
            self.waiters.remove(at: index)
            return continuation
        case .resolved:
            return nil
        }
    }

    /// What ``serveOldest(with:)`` did with a grant (the pool's: a lease).
    enum Service {
        /// Nobody is waiting: the grant stays with the caller.
        case nobodyWaiting
        /// The oldest waiter's task is suspended: do its job with the grant and resume it, or resume it with the grant.
        case serve(Continuation, Job)
        /// The oldest waiter was not yet suspended: it finds the grant when it suspends.
        case handedOver
    }

    /// Gives `grant` to the oldest wait that has not ended.
    mutating func serveOldest(with grant: Grant) -> Service {
        let waiting = self.waiters.firstIndex {
            if case .resolved = $0.stage { false } else { true }
        }
        guard let index = waiting else { return .nobodyWaiting }
        switch self.waiters[index].stage {
        case .suspended(let continuation):
            let job = self.waiters.remove(at: index).job
            return .serve(continuation, job)
        default:
            self.waiters[index].stage = .resolved(.success(grant))
            return .handedOver
        }
    }

    /// Ends every wait with `error`.
    /// - Returns: the suspended tasks' continuations, to resume with `error`; and the grants handed to waits whose
    ///   tasks had not yet suspended, taken back (those tasks find `error` when they suspend).
    mutating func failAll(with error: any Error) -> (suspended: [Continuation], reclaimed: [Grant]) {
        var suspended: [Continuation] = []
        var reclaimed: [Grant] = []
        var remaining: [(id: UInt64, job: Job, stage: Stage)] = []
        for var waiter in self.waiters {
            switch waiter.stage {
            case .suspended(let continuation):
                suspended.append(continuation)
                continue
            case .resolved(.success(let grant)):
                reclaimed.append(grant)
            case .registered, .resolved(.failure):
                break
            }
            waiter.stage = .resolved(.failure(error))
            remaining.append(waiter)
        }
        self.waiters = remaining
        return (suspended, reclaimed)
    }
}

extension PKCS11SessionPool {
    /// Where the pool measures its timeouts: a task's wait for a session, and the grace of ``close(timeout:)``.
    public enum Timers: Sendable {
        /// A timer on one of these loops. Under load nearly every signature waits for a session; a task sleeping on
        /// `ContinuousClock` instead would have Dispatch's timer thread arm, disarm and wake for each wait.
        case eventLoops(any EventLoopGroup)
        /// A task sleeping on this clock for each timeout: for tests that move time by hand.
        case clock(any Clock<Duration>)

        /// NIO's shared event loops, as the server's deadlines use.
        public static var shared: Timers { .eventLoops(MultiThreadedEventLoopGroup.singleton) }

        /// Runs `expire` after `delay` unless the returned closure is called first. Never runs `expire` from
        /// inside this call.
        func schedule(after delay: Duration, _ expire: @escaping @Sendable () -> Void) -> @Sendable () -> Void {
            switch self {
            case .eventLoops(let loops):
                let timer = loops.any().scheduleTask(in: TimeAmount(delay), expire)
                return { timer.cancel() }
            case .clock(let clock):
                let timer = Task {
                    guard (try? await clock.sleep(for: delay)) != nil else { return }  // cancelled first
                    expire()
                }
                return { timer.cancel() }
            }
        }
    }
}
