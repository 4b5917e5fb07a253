import Synchronization

/// The deadline passed before the work finished.
public struct DeadlineExceeded: Error, Sendable {
    public var timeout: Duration

    public init(timeout: Duration) {
        self.timeout = timeout
    }
}

/// Runs `work` and returns its result, or throws ``DeadlineExceeded`` after `timeout` on `time`.
///
/// Unlike a task group, this does not wait for `work` to finish once the deadline passes: a PKCS#11 call
/// that hangs cannot be cancelled, and the caller must not hang with it. The abandoned work finishes (or
/// not) on its own; its result is discarded.
public func withDeadline<Result: Sendable>(
    _ timeout: Duration,
    time: MonotonicTime,
    _ work: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    let outcome = ResumeOnce<Result>()
    return try await withCheckedThrowingContinuation { continuation in
        outcome.set(continuation)
        let timer = time.after(timeout) {
            outcome.take()?.resume(throwing: DeadlineExceeded(timeout: timeout))
        }
        // On the caller's preferred executor (an unstructured task does not inherit it by itself).
        Task(executorPreference: PreferredTaskExecutor.current) {
            let result: Swift.Result<Result, any Error>
            do { result = .success(try await work()) } catch { result = .failure(error) }
            timer.cancel()
            outcome.take()?.resume(with: result)
        }
    }
}

/// A continuation that exactly one of several racers resumes.
private final class ResumeOnce<Result: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<Result, any Error>?>(nil)

    func set(_ continuation: CheckedContinuation<Result, any Error>) {
        self.continuation.withLock { $0 = continuation }
    }

    func take() -> CheckedContinuation<Result, any Error>? {
        self.continuation.withLock { $0.take() }
    }
}
