import CountersignCore
import Ledger
import Synchronization
import Testing

@testable import PostgresLedger

@Suite("Batched reads")
struct ReadBatcherTests {
    @Test("reads that arrive while one runs go together as the next batch; each gets its own answer, in order")
    func batches() async throws {
        let batches = Mutex<[[Int]]>([])
        let (firstStarted, started) = AsyncStream.makeStream(of: Void.self)
        let (released, release) = AsyncStream.makeStream(of: Void.self)
        let batcher = ReadBatcher<Int, Int> { inputs in
            batches.withLock { $0.append(inputs) }
            if inputs == [0] {
                started.yield()
                // The first read is held until the others are queued behind it.
                for await _ in released { break }
            }
            return inputs.map { $0 * 10 }
        }
        async let first = batcher.submit(0)
        for await _ in firstStarted { break }
        let others = Task {
            try await withThrowingTaskGroup(of: (Int, Int).self) { group in
                for n in 1...20 { group.addTask { (n, try await batcher.submit(n)) } }
                return try await group.reduce(into: [Int: Int]()) { $0[$1.0] = $1.1 }
            }
        }
        // Wait until the twenty are queued (none can run: the first batch is still reading).
        while true {
            if batches.withLock({ $0.count }) == 1, batcher.pendingCount == 20 { break }
            await Task.yield()
        }
        release.yield()
        #expect(try await first == 0)
        let answers = try await others.value
        #expect(answers == Dictionary(uniqueKeysWithValues: (1...20).map { ($0, $0 * 10) }))
        let seen = batches.withLock { $0 }
        #expect(seen.count == 2, "one read, then one batch of the twenty that waited: \\(seen)")
        #expect(seen.last?.sorted() == Array(1...20))
    }

    @Test("a failed batch fails each of its reads; the next batch runs anew")
    func failures() async throws {
        let calls = Mutex(0)
        let batcher = ReadBatcher<Int, Int> { inputs in
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
        let batcher = ReadBatcher<Int, Int> { _ in [] }
        await #expect(throws: LedgerError.self) { try await batcher.submit(1) }
    }
}
