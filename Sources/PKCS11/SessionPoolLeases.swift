import NIOCore
import Synchronization

// The leases of ``PKCS11SessionPool`` and the jobs that use them: what a task asks of a session and what the
// pool's threads do with it.
extension PKCS11SessionPool {
    enum Lease: Sendable {
        /// An open, logged-in session.
        case session(SessionHandle)
        /// A free place in the pool: the holder opens a session in it.
        case mustOpen
    }

    /// How a wait for a session ends well: with a lease, to do its job itself, or with its job done for it.
    enum Grant: Sendable {
        case lease(Lease)
        case done
    }

    typealias Waiters = SessionPoolWaiters<Grant, Job>

    /// A job, the lease to do it with, and the continuation to resume with `.done` once it is done: a waiting task's,
    /// taken from the queue by the thread that returned the session, or a task's own, with the lease it was granted.
    struct Handover {
        var continuation: Waiters.Continuation
        var job: Job
        var lease: Lease
    }

    /// Where a job leaves what its body returned or threw, for the task that asked for it; and whether that task
    /// was cancelled, so that a body not yet begun is skipped.
    final class Outcome<Value: Sendable>: Sendable {
        let value = Mutex<Swift.Result<Value, any Error>?>(nil)
        let cancelled = Atomic<Bool>(false)
    }

    /// What a lease's work gives back: its session (`nil` when none could be opened), and the error that ended it.
    struct Returned {
        var handle: SessionHandle?
        var error: (any Error)?
    }

    /// The work of one ``withSession(_:)``: opens a session for a `.mustOpen` lease, runs `body` with it and puts
    /// what it returned or threw in `outcome`. It runs on a thread of the pool, and does not return the session.
    typealias Job = @Sendable (Lease) -> Returned

    static func job<Result: Sendable>(
        _ body: @escaping @Sendable (borrowing PKCS11Session) throws -> Result,
        token: PKCS11Token,
        pin: PIN,
        outcome: Outcome<Result>
    ) -> Job {
        { lease in
            var handle: SessionHandle?
            if case .session(let existing) = lease { handle = existing }
            let result = Swift.Result<Result, any Error> {
                // A task that gave up before its body began: the session goes back untouched, a place unopened is freed.
                if outcome.cancelled.load(ordering: .relaxed) { throw CancellationError() }
                let session = try handle ?? Self.openLoggedInSession(token: token, pin: pin)
                handle = session
                return try body(PKCS11Session(token: token, handle: session))
            }
            outcome.value.withLock { $0 = result }
            guard case .failure(let error) = result else { return Returned(handle: handle, error: nil) }
            return Returned(handle: handle, error: error)
        }
    }

    static func openLoggedInSession(token: PKCS11Token, pin: PIN) throws -> SessionHandle {
        let handle = try token.openSession()
        do {
            // Login belongs to the application; every new session checks it, which also restores it
            // after the token dropped all sessions.
            try PKCS11Session(token: token, handle: handle).login(pin)
        } catch {
            try? token.closeSession(handle)
            throw error
        }
        return handle
    }
}
