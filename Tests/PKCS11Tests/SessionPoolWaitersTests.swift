import Testing

@testable import PKCS11

/// The pool's queue of waiting tasks, on its own: the cases where a lease or an error reaches a wait before its task
/// suspends, which the pool's tests on a real token reach only by chance. (A suspended task is resumed through the
/// pool's tests: `capacity`, `close`.)
@Suite("The session pool's queue of waiting tasks")
struct SessionPoolWaitersTests {
    struct Refused: Error, Equatable {}

    @Test("a lease given before the task suspends is kept for it, and the next lease goes to the next wait, oldest first")
    func handedOverBeforeSuspending() throws {
        var waiters = SessionPoolWaiters<Int, String>()
        let first = waiters.register(job: "first")
        let second = waiters.register(job: "second")
        guard case .handedOver = waiters.serveOldest(with: 1) else { Issue.record("the first wait was not served"); return }
        guard case .handedOver = waiters.serveOldest(with: 2) else { Issue.record("the second lease did not skip the served wait"); return }
        guard case .nobodyWaiting = waiters.serveOldest(with: 3) else { Issue.record("a third lease found a wait"); return }
        #expect(waiters.count == 2, "served waits stay queued until their tasks collect them")

        #expect(try Self.collect(&waiters, second) == 2)
        #expect(try Self.collect(&waiters, first) == 1)
        #expect(waiters.count == 0)
    }

    @Test("a wait that ended (a timeout, a cancellation) is not served, and ends once")
    func resolvedWaitIsSkipped() throws {
        var waiters = SessionPoolWaiters<Int, String>()
        let timedOut = waiters.register(job: "timedOut")
        #expect(waiters.resolve(timedOut, with: .failure(Refused())) == nil, "not suspended: nothing to resume")
        #expect(waiters.resolve(timedOut, with: .success(9)) == nil, "a second end changes nothing")
        guard case .nobodyWaiting = waiters.serveOldest(with: 1) else { Issue.record("an ended wait was served"); return }
        #expect(throws: Refused.self) { try Self.collect(&waiters, timedOut) }
        #expect(throws: CancellationError.self, "collected: the wait is gone") { try Self.collect(&waiters, timedOut) }
    }

    @Test("failing every wait takes back the leases not yet collected; their tasks find the error")
    func failAllReclaims() throws {
        var waiters = SessionPoolWaiters<Int, String>()
        let served = waiters.register(job: "served")
        let waiting = waiters.register(job: "waiting")
        _ = waiters.serveOldest(with: 5)
        #expect(waiters.take(waiting) == nil, "still waiting")
        let (suspended, reclaimed) = waiters.failAll(with: Refused())
        #expect(suspended.isEmpty)
        #expect(reclaimed == [5])
        #expect(throws: Refused.self) { try Self.collect(&waiters, served) }
        #expect(throws: Refused.self) { try Self.collect(&waiters, waiting) }
        #expect(waiters.count == 0)
    }

    /// What wait `id`'s task finds when it suspends, for a wait that has already ended.
    private static func collect(_ waiters: inout SessionPoolWaiters<Int, String>, _ id: UInt64) throws -> Int {
        guard let result = waiters.take(id) else {
            Issue.record("wait \(id) had not ended")
            return -1
        }
        return try result.get()
    }
}
