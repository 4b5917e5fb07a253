import Policy
import Synchronization
import TestSupport
import Testing

@testable import CountersignServer

/// The turn-taking of heavy reads between principals (`FairShare`), with tasks made to wait on purpose.
@Suite("Fair shares of the audit log's readers", .timeLimit(.minutes(1)))
struct FairShareTests {
    /// Bodies that record who ran, in order; `hold` keeps the first one running until released.
    final class Order: Sendable {
        let names = Mutex<[String]>([])
        func append(_ name: String) { self.names.withLock { $0.append(name) } }
        var list: [String] { self.names.withLock { $0 } }
    }

    @Test("when readers wait, principals take turns: one flooding principal does not go ahead of another that asked later")
    func turns() async throws {
        let share = FairShare(width: 1)
        let order = Order()
        let (release, releaser) = AsyncStream<Void>.makeStream()
        let holder = Task { try await share.run(for: "holder") { for await _ in release { break } } }
        try await eventually("the holder runs") { share.load.running == 1 }

        var tasks: [Task<Void, any Error>] = []
        for (n, principal) in ["auditor", "auditor", "auditor", "other"].enumerated() {
            tasks.append(Task { try await share.run(for: principal) { order.append(principal) } })
            try await eventually("\(principal) waits") { share.load.waiting == n + 1 }
        }
        releaser.yield()
        try await holder.value
        for task in tasks { try await task.value }
        #expect(order.list == ["auditor", "other", "auditor", "auditor"])
        #expect(share.load.running == 0 && share.load.waiting == 0)
    }

    @Test("a waiter whose connection is gone leaves the queue at once, and the others still run")
    func cancelledWaiter() async throws {
        let share = FairShare(width: 1)
        let order = Order()
        let (release, releaser) = AsyncStream<Void>.makeStream()
        let holder = Task { try await share.run(for: "holder") { for await _ in release { break } } }
        try await eventually("the holder runs") { share.load.running == 1 }
        let gone = Task { try await share.run(for: "gone") { order.append("gone") } }
        try await eventually("it waits") { share.load.waiting == 1 }
        let next = Task { try await share.run(for: "next") { order.append("next") } }
        try await eventually("both wait") { share.load.waiting == 2 }

        gone.cancel()
        await #expect(throws: CancellationError.self) { try await gone.value }
        #expect(share.load.waiting == 1)
        releaser.yield()
        try await holder.value
        try await next.value
        #expect(order.list == ["next"])
        #expect(share.load.running == 0)
    }

    @Test("below the width nothing waits; an already cancelled task does not queue")
    func width() async throws {
        let share = FairShare(width: 2)
        let (release, releaser) = AsyncStream<Void>.makeStream()
        let (releaseSecond, secondReleaser) = AsyncStream<Void>.makeStream()
        let first = Task { try await share.run(for: "a") { for await _ in release { break } } }
        let second = Task { try await share.run(for: "a") { for await _ in releaseSecond { break } } }
        try await eventually("two run at once") { share.load.running == 2 }
        let late = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await share.run(for: "b") { 1 }
        }
        await #expect(throws: CancellationError.self) { try await late.value }
        #expect(share.load.waiting == 0)
        releaser.yield()
        secondReleaser.yield()
        try await first.value
        try await second.value
        #expect(share.load.running == 0)
    }

    @Test("with a share below 1, a turn is held idle after the work for the rest of its share (at most a second) before the next reader runs")
    func pause() async throws {
        let clock = ManualClock()
        let share = FairShare(width: 1, share: 0.25, time: MonotonicTime(clock))
        let order = Order()
        let (release, releaser) = AsyncStream<Void>.makeStream()
        let first = Task {
            try await share.run(for: "a") {
                for await _ in release { break }
                order.append("a")
            }
        }
        try await eventually("a runs") { share.load.running == 1 }
        let second = Task { try await share.run(for: "b") { order.append("b") } }
        try await eventually("b waits") { share.load.waiting == 1 }
        clock.advance(by: .milliseconds(100))  // a works for 100 ms of its 25%: 300 ms idle follow
        releaser.yield()
        try await first.value
        try await eventually("the pause is sleeping") { clock.deadlines.contains(clock.now.offset + .milliseconds(300)) }
        #expect(order.list == ["a"], "b waits out the pause")
        clock.advance(by: .milliseconds(300))
        try await second.value
        #expect(order.list == ["a", "b"])
        // A long wait inside the work is capped at a second of pause.
        let long = Task { try await share.run(for: "c") { clock.advance(by: .seconds(60)) } }
        try await long.value
        try await eventually("the capped pause is sleeping") { clock.deadlines.contains(clock.now.offset + .seconds(1)) }
        clock.advance(by: .seconds(1))
        try await eventually("released") { share.load.running == 0 }
    }
}
