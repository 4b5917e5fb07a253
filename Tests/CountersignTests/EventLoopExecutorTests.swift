import CountersignCore
import Dispatch
import NIOCore
import NIOPosix
import Testing

@testable import CountersignServer

/// `EventLoopExecutor`: a connection's tasks run on the connection's event loop, whatever thread resumed them.
@Suite("A connection's loop as its tasks' executor", .timeLimit(.minutes(1)))
struct EventLoopExecutorTests {
    /// Whether each step of a nonisolated async function ran on `loop`: at its start, after an `await` that a
    /// Dispatch thread resumed (as the store's writer and the HSM's threads do), and in a child task.
    static func steps(on loop: any EventLoop) async -> [Bool] {
        var steps = [loop.inEventLoop]
        await withCheckedContinuation { continuation in DispatchQueue.global().async { continuation.resume() } }
        steps.append(loop.inEventLoop)
        async let child = loop.inEventLoop
        steps.append(await child)
        await Task.yield()
        steps.append(loop.inEventLoop)
        return steps
    }

    @Test("with the preference every step runs on the loop; without it, none does (this process runs tasks on Swift's own pool)")
    func runsOnTheLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loop = group.next()
        let preferred = await withTaskExecutorPreference(EventLoopExecutor(loop)) { await Self.steps(on: loop) }
        #expect(preferred == [true, true, true, true])
        let unstructured = await Task(executorPreference: EventLoopExecutor(loop)) { await Self.steps(on: loop) }.value
        #expect(unstructured == [true, true, true, true])
        let plain = await Self.steps(on: loop)
        #expect(plain == [false, false, false, false])
        try await group.shutdownGracefully()
    }

    @Test("a deadline's work (an unstructured task) runs on the preferred loop too, not on Swift's own pool")
    func deadlineWorkOnTheLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loop = group.next()
        let preferred = try await withPreferredTaskExecutor(EventLoopExecutor(loop)) {
            try await withDeadline(.seconds(60), time: .continuous) { await Self.steps(on: loop) }
        }
        #expect(preferred == [true, true, true, true])
        let plain = try await withDeadline(.seconds(60), time: .continuous) { await Self.steps(on: loop) }
        #expect(plain == [false, false, false, false])
        // A task started inside that prefers nothing (a batch loop that one request starts for every connection)
        // inherits the task-local, not the preference: its deadlines do not run on this loop.
        let inherited = try await withPreferredTaskExecutor(EventLoopExecutor(loop)) {
            try await Task { try await withDeadline(.seconds(60), time: .continuous) { await Self.steps(on: loop) } }.value
        }
        #expect(inherited == [false, false, false, false])
        try await group.shutdownGracefully()
    }
}
