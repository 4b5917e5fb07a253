import CountersignCore
import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
import TestSupport
import Testing

@testable import CountersignServer

/// `MonotonicTime.eventLoops`: deadlines as timers on an event loop (here one whose time the test moves).
@Suite("Deadlines on the event loops' timers", .timeLimit(.minutes(1)))
struct EventLoopTimeTests {
    /// Work that waits until the test lets it go.
    final class Held: Sendable {
        private let waiting = Mutex<CheckedContinuation<Void, Never>?>(nil)
        func hold() async { await withCheckedContinuation { continuation in self.waiting.withLock { $0 = continuation } } }
        var isHeld: Bool { self.waiting.withLock { $0 != nil } }
        func release() { self.waiting.withLock { $0.take() }?.resume() }
    }

    final class Flag: Sendable {
        private let value = Mutex(0)
        func raise() { self.value.withLock { $0 += 1 } }
        var count: Int { self.value.withLock { $0 } }
    }

    @Test("an action runs once its delay has passed on the loop, and not a nanosecond before")
    func runsAtItsTime() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let time = MonotonicTime.eventLoops(loop)
        let fired = Flag()
        _ = time.after(.seconds(2)) { fired.raise() }
        await loop.advanceTime(by: .nanoseconds(1_999_999_999))
        #expect(fired.count == 0)
        await loop.advanceTime(by: .nanoseconds(1))
        #expect(fired.count == 1)
        await loop.advanceTime(by: .seconds(10))
        #expect(fired.count == 1)
        await loop.shutdownGracefully()
    }

    @Test("a cancelled action never runs")
    func cancelled() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let fired = Flag()
        let scheduled = MonotonicTime.eventLoops(loop).after(.milliseconds(5)) { fired.raise() }
        scheduled.cancel()
        await loop.advanceTime(by: .seconds(1))
        #expect(fired.count == 0)
        await loop.shutdownGracefully()
    }

    @Test("work that hangs is abandoned at the deadline with DeadlineExceeded; work that finishes first is its result")
    func deadline() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let time = MonotonicTime.eventLoops(loop)

        let held = Held()
        let ended = Flag()
        let hanging = Task {
            try await withDeadline(.seconds(2), time: time) { () async throws -> Int in
                await held.hold()
                ended.raise()
                return -1
            }
        }
        // The deadline's timer is scheduled before the work starts.
        try await eventually("the work waits") { held.isHeld }
        await loop.advanceTime(by: .milliseconds(1_999))
        await loop.advanceTime(by: .milliseconds(1))
        var abandoned = false
        do { _ = try await hanging.value } catch is DeadlineExceeded { abandoned = true }
        #expect(abandoned)
        #expect(ended.count == 0)
        held.release()
        try await eventually("the abandoned work ended") { ended.count == 1 }

        #expect(try await withDeadline(.seconds(2), time: time) { 42 } == 42)
        // The cancelled timer leaves the loop's queue on the loop itself (the test's thread is not the loop's): let
        // that happen before the loop shuts down, which would otherwise find the timer's promise unfulfilled.
        await loop.advanceTime(by: .seconds(3))
        await loop.shutdownGracefully()
    }

    @Test("on NIO's own loops: an action runs on one of the loops; a deadline's timer abandons work that hangs")
    func realLoops() async throws {
        let time = MonotonicTime.eventLoops()
        let onLoop = Flag()
        _ = time.after(.milliseconds(1)) { if MultiThreadedEventLoopGroup.currentEventLoop != nil { onLoop.raise() } }
        try await eventually("the action ran on an event loop") { onLoop.count == 1 }

        let held = Held()
        let hanging = Task {
            try await withDeadline(.milliseconds(20), time: time) { () async throws -> Int in
                await held.hold()
                return -1
            }
        }
        var abandoned = false
        do { _ = try await hanging.value } catch is DeadlineExceeded { abandoned = true }
        #expect(abandoned)
        held.release()
        #expect(try await withDeadline(.seconds(30), time: time) { 7 } == 7)
    }
}
