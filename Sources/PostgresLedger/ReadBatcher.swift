import CountersignCore
import Ledger

/// Reads that arrive while one is running are sent together as the next: one round trip, one statement, for every
/// request that needed the same kind of answer at the same moment (the group commit's pattern, on its
/// ``CommitQueue``, for reads). Under load this turns a query per request into a query per batch; alone, a read
/// waits for nobody.
///
/// Each read keeps its own deadline, counted from when it was asked: a batch runs with the time its most pressed
/// read has left, and a read whose time ran out while it waited for its turn (a batch before it hung) fails with
/// ``DeadlineExceeded`` without running. No read outlives its `timeout`, however many wait.
final class ReadBatcher<Input: Sendable, Output: Sendable>: Sendable {
    private struct Request: Sendable {
        let input: Input
        let deadline: Duration
    }

    private let queue = CommitQueue<Request, Output>()
    private let maximum: Int
    private let timeout: Duration
    private let time: MonotonicTime
    /// Answers a batch within the time given: one output per input, in order.
    private let run: @Sendable ([Input], Duration) async throws -> [Output]

    init(
        timeout: Duration, time: MonotonicTime, maximum: Int = 256, run: @escaping @Sendable (_ batch: [Input], _ within: Duration) async throws -> [Output]
    ) {
        self.timeout = timeout
        self.time = time
        self.maximum = maximum
        self.run = run
    }

    func submit(_ input: Input) async throws -> Output {
        try await self.queue.submit(Request(input: input, deadline: self.time.now + self.timeout)) { await self.flush() }
    }

    /// Reads waiting for the next batch.
    var pendingCount: Int { self.queue.pendingCount }

    private func flush() async {
        while let taken = self.queue.takeGroup(maximum: self.maximum) {
            let now = self.time.now
            var batch: [CommitQueue<Request, Output>.Pending] = []
            for pending in taken {
                if pending.write.deadline > now {
                    batch.append(pending)
                } else {
                    pending.continuation.resume(throwing: DeadlineExceeded(timeout: self.timeout))
                }
            }
            guard let earliest = batch.map(\.write.deadline).min() else { continue }
            do {
                let outputs = try await self.run(batch.map(\.write.input), earliest - now)
                guard outputs.count == batch.count else {
                    throw LedgerError(.storeUnavailable, "a batched read gave \(outputs.count) answers for \(batch.count) requests")
                }
                for (pending, output) in zip(batch, outputs) { pending.continuation.resume(returning: output) }
            } catch {
                for pending in batch { pending.continuation.resume(throwing: error) }
            }
        }
    }
}
