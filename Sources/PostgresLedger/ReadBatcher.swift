import CountersignCore
import Ledger

/// Reads that arrive while one is running are sent together as the next: one round trip, one statement, for every
/// request that needed the same kind of answer at the same moment (the group commit's pattern, on its
/// ``CommitQueue``, for reads). Under load this turns a query per request into a query per batch; alone, a read
/// waits for nobody.
final class ReadBatcher<Input: Sendable, Output: Sendable>: Sendable {
    private let queue = CommitQueue<Input, Output>()
    private let maximum: Int
    /// Answers a batch: one output per input, in order.
    private let run: @Sendable ([Input]) async throws -> [Output]

    init(maximum: Int = 256, run: @escaping @Sendable ([Input]) async throws -> [Output]) {
        self.maximum = maximum
        self.run = run
    }

    func submit(_ input: Input) async throws -> Output {
        try await self.queue.submit(input) { await self.flush() }
    }

    /// Reads waiting for the next batch.
    var pendingCount: Int { self.queue.pendingCount }

    private func flush() async {
        while let batch = self.queue.takeGroup(maximum: self.maximum) {
            do {
                let outputs = try await self.run(batch.map(\.write))
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
