import Crypto
import Dispatch
import NIOCore
import NIOEmbedded
import NIOPosix
import PKCS11
import Synchronization
import TestSupport
import Testing

/// A task executor that runs jobs on a queue of its own and, while closed, holds them back: a task whose
/// executor is busy elsewhere, as a loaded event loop is.
final class HeldExecutor: TaskExecutor {
    private struct State {
        var isOpen = true
        var held: [UnownedJob] = []
        var running = 0
    }

    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "held-executor")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let runNow = self.state.withLock { state -> Bool in
            if state.isOpen { return true }
            state.held.append(job)
            return false
        }
        if runNow { self.run(job) }
    }

    private func run(_ job: UnownedJob) {
        self.state.withLock { $0.running += 1 }
        self.queue.async {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
            self.state.withLock { $0.running -= 1 }
        }
    }

    /// Whether no job is queued or running: every task on it has suspended or ended.
    var isIdle: Bool { self.state.withLock { $0.running == 0 } }

    func close() { self.state.withLock { $0.isOpen = false } }

    func open() {
        let held = self.state.withLock { state -> [UnownedJob] in
            state.isOpen = true
            defer { state.held = [] }
            return state.held
        }
        held.forEach(self.run)
    }
}

@Suite("The session pool")
struct SessionPoolTests {
    @Test("a wrong PIN fails the lease with C_Login's code, returns the place, and does not hang the next caller")
    func wrongPIN() async throws {
        let fixture = try SoftHSMFixture.shared()
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let pool = PKCS11SessionPool(
            token: try fixture.module.token(label: SoftHSMFixture.untouchedTokenLabel),
            pin: PIN("wrong-pin-0000"),
            configuration: .init(maximumSessions: 1),
            threadPool: threadPool
        )
        for _ in 0..<2 {
            let error = await #expect(throws: PKCS11Error.self) { try await pool.withSession { _ in } }
            #expect(error == PKCS11Error(function: "C_Login", code: .pinIncorrect))
            #expect(error?.description == "C_Login failed: CKR_PIN_INCORRECT (0xA0)")
            #expect(pool.statistics == .init(capacity: 1, open: 0, inUse: 0, waiting: 0))
        }
        await pool.close()
        try await threadPool.shutdownGracefully()
    }

    @Test("no more sessions than the capacity are opened; waiting tasks are served as sessions come back")
    func capacity() async throws {
        let fixture = try SoftHSMFixture.shared()
        let threadPool = NIOThreadPool(numberOfThreads: 4)
        threadPool.start()
        // The acquire timeout is not what this tests: a long one, so that opening two sessions on a loaded
        // machine (C_Login derives the token's key) cannot end the waits before they are seen.
        let pool = PKCS11SessionPool(
            token: try fixture.token(), pin: fixture.pin(), configuration: .init(maximumSessions: 2, acquireTimeout: .seconds(3600)),
            threadPool: threadPool)
        #expect(pool.capacity == 2)
        let gate = Gate()
        try await withThrowingTaskGroup(of: SessionHandle.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    try await pool.withSession { (session: borrowing PKCS11Session) throws in
                        gate.wait()
                        return session.handle
                    }
                }
            }
            // Opened whatever happens: a failed wait must fail the test, not leave the group waiting for its
            // blocked holders.
            defer { gate.open() }
            try await eventually("two leases held and two waiting") {
                pool.statistics == .init(capacity: 2, open: 2, inUse: 2, waiting: 2)
            }
            gate.open()
            var handles: Set<SessionHandle> = []
            for try await handle in group {
                handles.insert(handle)
            }
            #expect(handles.count == 2, "four leases shared two sessions")
        }
        #expect(pool.statistics == .init(capacity: 2, open: 2, inUse: 0, waiting: 0))
        await pool.close()
        #expect(pool.statistics.open == 0)
        try await threadPool.shutdownGracefully()
    }

    @Test("a session comes back as soon as its body returns, not when the task that borrowed it next runs")
    func returnsFromThePoolThread() async throws {
        let fixture = try SoftHSMFixture.shared()
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let pool = PKCS11SessionPool(token: try fixture.token(), pin: fixture.pin(), configuration: .init(maximumSessions: 1), threadPool: threadPool)
        let executor = HeldExecutor()
        let first = Task(executorPreference: executor) {
            // From here on the borrowing task cannot run again until the test lets it.
            try await pool.withSession { (_: borrowing PKCS11Session) throws in
                executor.close()
                return 1
            }
        }
        try await eventually("the only session is back while its borrower is held", limit: .seconds(5)) {
            pool.statistics == .init(capacity: 1, open: 1, inUse: 0, waiting: 0)
        }
        #expect(try await pool.withSession { (_: borrowing PKCS11Session) throws in 2 } == 2)
        executor.open()
        #expect(try await first.value == 1)
        await pool.close()
        try await threadPool.shutdownGracefully()
    }

    /// A pool of one session lent to a first task, whose body waits at `gate` and then returns or throws `failure`,
    /// and a second task waiting for that session, suspended on an executor the test holds (its body sets `done`).
    final class HeldWait: Sendable {
        struct Failed: Error {}

        /// Whether the waiting task's body ran.
        final class Flag: Sendable {
            private let value = Mutex(false)
            func set() { self.value.withLock { $0 = true } }
            var isSet: Bool { self.value.withLock { $0 } }
        }

        let threadPool: NIOThreadPool
        let pool: PKCS11SessionPool
        let gate = Gate()
        let executor = HeldExecutor()
        let done = Flag()
        let first: Task<Void, any Error>
        let waiting: Task<Int, any Error>

        init(threads: Int, firstFails: Bool) async throws {
            let fixture = try SoftHSMFixture.shared()
            self.threadPool = NIOThreadPool(numberOfThreads: threads)
            self.threadPool.start()
            let pool = PKCS11SessionPool(
                token: try fixture.token(), pin: fixture.pin(), configuration: .init(maximumSessions: 1, acquireTimeout: .seconds(3600)),
                threadPool: self.threadPool)
            self.pool = pool
            let (gate, executor, done) = (self.gate, self.executor, self.done)
            let lent = Flag()
            self.first = Task {
                try await pool.withSession { (_: borrowing PKCS11Session) throws in
                    lent.set()
                    gate.wait()
                    if firstFails { throw Failed() }
                }
            }
            // Opened and logged in (C_Login derives the token's key: seconds on a loaded machine), and lent.
            try await eventually("the only session is lent", limit: .seconds(60)) { lent.isSet }
            self.waiting = Task(executorPreference: executor) {
                // Once this task suspends for the session it cannot run again until the test lets it.
                executor.close()
                return try await pool.withSession { (_: borrowing PKCS11Session) throws in
                    done.set()
                    return 2
                }
            }
            try await eventually("the second task waits, suspended", limit: .seconds(60)) { pool.statistics.waiting == 1 && executor.isIdle }
        }

        /// Lets the held task run, checks it got its body's value, and closes everything.
        func finish() async throws {
            self.executor.open()
            #expect(try await self.waiting.value == 2)
            await self.pool.close()
            try await self.threadPool.shutdownGracefully()
        }
    }

    @Test("a waiting task's work is done by the thread that returned the session, before that task runs again")
    func waitingWorkDoneOnThePoolThread() async throws {
        let held = try await HeldWait(threads: 2, firstFails: false)
        held.gate.open()
        try await eventually("the waiting task's work is done while that task is held", limit: .seconds(60)) { held.done.isSet }
        // The session goes back just after the body returns, on the same thread.
        try await eventually("and the session is back", limit: .seconds(60)) {
            held.pool.statistics == .init(capacity: 1, open: 1, inUse: 0, waiting: 0)
        }
        try await held.first.value
        try await held.finish()
    }

    @Test("after a body that failed, the next waiting task is resumed with the lease, not served on the failing thread")
    func noRunAfterAFailure() async throws {
        // One thread: once work queued behind the failed body has run, the thread has finished whatever it went on with.
        let held = try await HeldWait(threads: 1, firstFails: true)
        held.gate.open()
        await #expect(throws: HeldWait.Failed.self) { try await held.first.value }
        try await held.threadPool.runIfActive {}
        #expect(!held.done.isSet, "the failing thread did not go on with the waiting body")
        #expect(held.pool.statistics == .init(capacity: 1, open: 1, inUse: 1, waiting: 0), "the lease is the waiting task's")
        try await held.finish()
    }

    @Test("a task cancelled before its body began: the body is skipped, the place given back, the task gets CancellationError")
    func cancelledBeforeTheBody() async throws {
        let fixture = try SoftHSMFixture.shared()
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let pool = PKCS11SessionPool(
            token: try fixture.token(), pin: fixture.pin(), configuration: .init(maximumSessions: 2, acquireTimeout: .seconds(3600)),
            threadPool: threadPool)
        let gate = Gate()
        let lent = Mutex(false)
        // The pool's only thread is busy with the first body, so the second's work waits in the thread pool's queue.
        let first = Task {
            try await pool.withSession { (_: borrowing PKCS11Session) throws in
                lent.withLock { $0 = true }
                gate.wait()
            }
        }
        try await eventually("the first session is lent", limit: .seconds(60)) { lent.withLock { $0 } }
        let ran = Mutex(false)
        let second = Task { try await pool.withSession { (_: borrowing PKCS11Session) throws in ran.withLock { $0 = true } } }
        try await eventually("the second place is lent", limit: .seconds(60)) { pool.statistics.inUse == 2 }
        second.cancel()
        gate.open()
        await #expect(throws: CancellationError.self) { try await second.value }
        #expect(!ran.withLock { $0 }, "the body was skipped")
        try await first.value
        #expect(pool.statistics == .init(capacity: 2, open: 1, inUse: 0, waiting: 0), "no session was opened for it")
        await pool.close()
        try await threadPool.shutdownGracefully()
    }

    @Test("a task that waits longer than the acquire timeout gets HSM_SESSION_TIMEOUT, measured on the injected clock")
    func acquireTimeout() async throws {
        let fixture = try SoftHSMFixture.shared()
        let clock = ManualClock()
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let pool = PKCS11SessionPool(
            token: try fixture.token(),
            pin: fixture.pin(),
            configuration: .init(maximumSessions: 1, acquireTimeout: .seconds(2)),
            threadPool: threadPool,
            timers: .clock(clock)
        )
        let gate = Gate()
        let holder = Task { try await pool.withSession { _ in gate.wait() } }
        try await eventually("the only session is lent out") { pool.statistics.inUse == 1 }

        let waiter = Task { try await pool.withSession { _ in } }
        await clock.waitForSleepers(1)
        clock.advance(by: .milliseconds(1999))
        #expect(pool.statistics.waiting == 1, "still within the timeout")
        clock.advance(by: .milliseconds(1))
        let error = await #expect(throws: SessionPoolError.self) { try await waiter.value }
        #expect(error?.code == .acquireTimeout)
        #expect(error?.description == "HSM_SESSION_TIMEOUT: all 1 HSM sessions stayed busy for 2.0 seconds; the token is overloaded or not answering")
        #expect(pool.statistics.waiting == 0)

        gate.open()
        try await holder.value
        try await pool.withSession { _ in }  // the pool serves again once the session is back
        await pool.close()
        try await threadPool.shutdownGracefully()
    }

    @Test(
        "the acquire timeout as a timer on an event loop (the real clock's way): HSM_SESSION_TIMEOUT at its end, not before; a waiter served in time is served")
    func acquireTimeoutOnEventLoopTimers() async throws {
        let fixture = try SoftHSMFixture.shared()
        let loop = NIOAsyncTestingEventLoop()
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let pool = PKCS11SessionPool(
            token: try fixture.token(), pin: fixture.pin(), configuration: .init(maximumSessions: 1, acquireTimeout: .seconds(3600)), threadPool: threadPool,
            timers: .eventLoops(loop))
        let gate = Gate()
        let holder = Task { try await pool.withSession { _ in gate.wait() } }
        try await eventually("the only session is lent out") { pool.statistics.inUse == 1 }

        // A waiter's timer is handed to the loop before the waiter is visible (this testing loop queues the timer,
        // and the time moved below is queued after it), so the loop's time can be moved at once. An hour: only the
        // loop's time can end the wait within the test's bounded waits, not the real clock.
        let waiter = Task { try await pool.withSession { _ in } }
        try await eventually("a task waits") { pool.statistics.waiting == 1 }
        await loop.advanceTime(by: .seconds(3599))
        #expect(pool.statistics.waiting == 1, "still within the timeout")
        await loop.advanceTime(by: .seconds(1))
        try await eventually("the wait ended at the loop's hour", limit: .seconds(10)) { pool.statistics.waiting == 0 }
        let error = await #expect(throws: SessionPoolError.self) { try await waiter.value }
        #expect(error?.code == .acquireTimeout)

        // Served before its end: it gets the session, and the end passing later fails nothing.
        let served = Task { try await pool.withSession { _ in 7 } }
        try await eventually("another task waits") { pool.statistics.waiting == 1 }
        gate.open()
        try await holder.value
        #expect(try await served.value == 7)
        await loop.advanceTime(by: .seconds(3601))
        #expect(try await pool.withSession { _ in 8 } == 8)
        await pool.close()
        try await threadPool.shutdownGracefully()
        await loop.shutdownGracefully()
    }

    @Test("closing fails waiting tasks, refuses new ones, and waits for the session in use")
    func close() async throws {
        let fixture = try SoftHSMFixture.shared()
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        // A long acquire timeout: the waiter must end by the pool's closing, however slow the machine.
        let pool = PKCS11SessionPool(
            token: try fixture.token(), pin: fixture.pin(), configuration: .init(maximumSessions: 1, acquireTimeout: .seconds(3600)),
            threadPool: threadPool)
        let gate = Gate()
        let holder = Task {
            try await pool.withSession { _ in
                gate.wait(); return 42
            }
        }
        try await eventually("the only session is lent out") { pool.statistics.inUse == 1 }
        let waiter = Task { try await pool.withSession { _ in 0 } }
        try await eventually("a task waits") { pool.statistics.waiting == 1 }

        let closing = Task { await pool.close() }
        let waiterError = await #expect(throws: SessionPoolError.self) { try await waiter.value }
        #expect(waiterError?.code == .poolClosed)
        let lateError = await #expect(throws: SessionPoolError.self) { try await pool.withSession { _ in } }
        #expect(lateError?.code == .poolClosed)

        gate.open()
        #expect(try await holder.value == 42, "the lease in flight finishes")
        #expect(await closing.value, "every session came back")
        #expect(pool.statistics == .init(capacity: 1, open: 0, inUse: 0, waiting: 0))
        try await threadPool.shutdownGracefully()
    }

    @Test("closing gives up on a session that never comes back, and says so")
    func closeTimeout() async throws {
        let fixture = try SoftHSMFixture.shared()
        let clock = ManualClock()
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let pool = PKCS11SessionPool(
            token: try fixture.token(), pin: fixture.pin(), configuration: .init(maximumSessions: 1), threadPool: threadPool, timers: .clock(clock))
        let gate = Gate()
        let hung = Task { try await pool.withSession { _ in gate.wait() } }
        try await eventually("the session is lent out") { pool.statistics.inUse == 1 }
        let closing = Task { await pool.close(timeout: .seconds(10)) }
        await clock.waitForSleepers(1)
        clock.advance(by: .seconds(10))
        #expect(await closing.value == false)
        gate.open()
        try await hung.value
        try await threadPool.shutdownGracefully()
    }

    @Test("when the token drops a session, the idle ones are dropped too")
    func idleSessionsDroppedWithABrokenOne() async throws {
        try await withFixturePool(maximumSessions: 2) { pool in
            let gate = Gate()
            // Two sessions open at once, then both idle.
            async let first: Void = pool.withSession { _ in gate.wait() }
            async let second: Void = pool.withSession { _ in gate.wait() }
            defer { gate.open() }  // a failed wait must not leave the holders blocked, and the test with them
            try await eventually("two sessions in use") { pool.statistics.inUse == 2 }
            gate.open()
            _ = try await (first, second)
            #expect(pool.statistics.open == 2)
            await #expect(throws: PKCS11Error.self) {
                try await pool.withSession { session in
                    try session.token.closeSession(session.handle)
                    _ = try session.generateRandom(count: 1)
                }
            }
            #expect(pool.statistics.open == 0)
            try await pool.withSession { _ = try $0.generateRandom(count: 1) }
            #expect(pool.statistics.open == 1)
        }
    }

    @Test("a session that the token no longer knows is dropped and replaced by a fresh, logged-in one")
    func brokenSessionIsReplaced() async throws {
        try await withFixturePool(maximumSessions: 1) { pool in
            let first = try await pool.withSession { $0.handle }
            let error = await #expect(throws: PKCS11Error.self) {
                try await pool.withSession { (session: borrowing PKCS11Session) throws in
                    try session.token.closeSession(session.handle)  // as if the HSM had restarted
                    _ = try session.generateRandom(count: 8)
                }
            }
            #expect(error?.code == .sessionHandleInvalid)
            #expect(pool.statistics.open == 0)

            let label = SoftHSMFixture.uniqueLabel("after-restart")
            let (second, signature) = try await pool.withSession { (session: borrowing PKCS11Session) throws in
                let pair = try session.generateP256SigningKeyPair(label: label, id: Array(label.utf8))
                defer {
                    try? session.destroyObject(pair.privateKey)
                    try? session.destroyObject(pair.publicKey)
                }
                return (session.handle, try session.signECDSA(digest: SHA256.hash(data: [1]), with: pair.privateKey).rawRepresentation)
            }
            #expect(second != first)
            #expect(signature.count == 64)
        }
    }
}
