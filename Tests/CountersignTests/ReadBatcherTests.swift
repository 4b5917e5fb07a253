import CountersignCore
import Ledger
import Logging
import Synchronization
import TestSupport
import Testing

@testable import PostgresLedger

@Suite("Batched reads", .timeLimit(.minutes(1)))
struct ReadBatcherTests {
    /// The batches a batcher ran, in order.
    private final class BatchLog: Sendable {
        let batches = Mutex<[[Int]]>([])
    }

    /// A batcher whose first batch (the read of 0) is held until `release` is called.
    private struct Held: Sendable {
        let batcher: ReadBatcher<Int, Int>
        let log = BatchLog()
        let clock = ManualClock()
        let started: AsyncStream<Void>
        let release: AsyncStream<Void>.Continuation

        init() {
            let log = self.log
            let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
            let (released, release) = AsyncStream.makeStream(of: Void.self)
            self.batcher = ReadBatcher<Int, Int>(timeout: .seconds(5), time: MonotonicTime(self.clock)) { inputs, _ in
                log.batches.withLock { $0.append(inputs) }
                if inputs == [0] {
                    startedContinuation.yield()
                    for await _ in released { break }
                }
                return inputs.map { $0 * 10 }
            }
            self.started = started
            self.release = release
        }

        var batches: [[Int]] { self.log.batches.withLock { $0 } }

        /// Waits (without sleeping) until `count` reads are queued behind the held batch.
        func waitForQueued(_ count: Int) async {
            while self.batcher.pendingCount < count { await Task.yield() }
        }
    }

    @Test("reads that arrive while one runs go together as the next batch; each gets its own answer")
    func batches() async throws {
        let held = Held()
        async let first = held.batcher.submit(0)
        for await _ in held.started { break }
        let others = Task {
            try await withThrowingTaskGroup(of: (Int, Int).self) { group in
                for n in 1...20 { group.addTask { (n, try await held.batcher.submit(n)) } }
                return try await group.reduce(into: [Int: Int]()) { $0[$1.0] = $1.1 }
            }
        }
        await held.waitForQueued(20)
        held.release.yield()
        #expect(try await first == 0)
        let answers = try await others.value
        #expect(answers == Dictionary(uniqueKeysWithValues: (1...20).map { ($0, $0 * 10) }))
        let seen = held.batches
        #expect(seen.count == 2, "one read, then one batch of the twenty that waited: \(seen)")
        #expect(seen.last?.sorted() == Array(1...20))
    }

    @Test("a read whose deadline passed while it waited behind a hung batch fails without running")
    func deadlines() async throws {
        let held = Held()
        async let first = held.batcher.submit(0)
        for await _ in held.started { break }
        let late = Task { try await held.batcher.submit(1) }
        await held.waitForQueued(1)
        held.clock.advance(by: .seconds(5))
        held.release.yield()
        _ = try await first
        await #expect(throws: DeadlineExceeded.self) { try await late.value }
        #expect(held.batches == [[0]], "the expired read was never sent")
        // A read asked now has its own five seconds.
        #expect(try await held.batcher.submit(2) == 20)
    }

    @Test("a failed batch fails each of its reads; the next batch runs anew")
    func failures() async throws {
        let calls = Mutex(0)
        let batcher = ReadBatcher<Int, Int>(timeout: .seconds(5), time: MonotonicTime(ManualClock())) { inputs, _ in
            let call = calls.withLock { count -> Int in
                count += 1
                return count
            }
            if call == 1 { throw LedgerError(.storeUnavailable, "the database is gone") }
            return inputs
        }
        await #expect(throws: LedgerError.self) { try await batcher.submit(1) }
        #expect(try await batcher.submit(2) == 2)
    }

    @Test("a batch that answers the wrong number of reads fails them rather than answering one with another's")
    func miscounted() async throws {
        let batcher = ReadBatcher<Int, Int>(timeout: .seconds(5), time: MonotonicTime(ManualClock())) { _, _ in [] }
        await #expect(throws: LedgerError.self) { try await batcher.submit(1) }
    }

    @Test("on PostgreSQL, a row this server cannot read fails only the lookup that asked for it, not the others sent with it")
    func unreadableRow() async throws {
        guard let fixture = try await StoreFixture.make(.postgres), let database = fixture.postgres?.database else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        for name in ["good", "bad"] {
            _ = try StoreConformanceTests.recorded(try await store.recordAuthorization(StoreConformanceTests.record("jti-\(name)", key: "key-\(name)")))
        }
        // As a newer server might write it.
        try await PostgresTestServer.shared!.execute("UPDATE \"authorization\" SET status = 'from_a_newer_server' WHERE id = 'jti-bad'", database: database)

        // The statement a batch of three lookups sends.
        let postgres = try #require(store as? PostgresStore)
        let keys = ["key-bad", "key-good", "key-none"].map { IdempotencyKey(agent: "agent-a", key: $0) }
        let answers = try await PostgresStore.authorizations(keys, client: postgres.client, logger: Logger(label: "test"))
        #expect(answers.count == 3)
        #expect(throws: LedgerError.self) { try answers[0].get() }
        #expect(try answers[1].get()?.id == "jti-good")
        #expect(try answers[2].get() == nil)

        // And through the store, asked at the same moment (so they may share a batch): only the bad row's read fails.
        let bad = Task { try await store.authorization(agent: "agent-a", idempotencyKey: "key-bad", certain: true) }
        let good = Task { try await store.authorization(agent: "agent-a", idempotencyKey: "key-good", certain: true) }
        #expect(try await good.value?.id == "jti-good")
        let error = await #expect(throws: LedgerError.self) { try await bad.value }
        #expect(error?.reason.contains("from_a_newer_server") == true)
    }
}
