/// The task executor (SE-0417) the running task prefers, where unstructured tasks can read it.
///
/// A preference set with `withTaskExecutorPreference` is inherited by child tasks, not by unstructured ones: a
/// `Task {}` started inside (as ``withDeadline(_:time:_:)`` starts one, to be able to give up on work that hangs)
/// runs on the global executor instead. Where NIO's event loops are that executor, each such task hops back onto a
/// loop's queue at every nonisolated call and resumption (27 `swift_task_enqueueGlobal` per HSM-tier authorization,
/// counted with uprobes, against 0.3 in the software tier). Such tasks ask for ``current`` instead.
public enum PreferredTaskExecutor {
    /// Set by ``withPreferredTaskExecutor(_:operation:)``. Task-locals, unlike preferences, are inherited by
    /// unstructured tasks too, so this alone would also name the executor inside a `Task {}` that prefers none.
    @TaskLocal static var remembered: (any TaskExecutor)?

    /// The executor set by the innermost ``withPreferredTaskExecutor(_:operation:)``, if the running task prefers
    /// it; `nil` in a task that only inherited it, e.g. a batch loop started by one request that then serves every
    /// connection's requests, which must not be tied to that request's loop.
    public static var current: (any TaskExecutor)? {
        guard let executor = Self.remembered else { return nil }
        let running = withUnsafeCurrentTask { $0?.unownedTaskExecutor }
        return running == executor.asUnownedTaskExecutor() ? executor : nil
    }
}

/// Runs `operation` preferring `executor`: its child tasks too (as `withTaskExecutorPreference`), and the
/// unstructured tasks it starts with `Task(executorPreference: PreferredTaskExecutor.current)`.
public func withPreferredTaskExecutor<Result: Sendable>(
    _ executor: any TaskExecutor,
    operation: @Sendable () async throws -> Result
) async rethrows -> Result {
    try await PreferredTaskExecutor.$remembered.withValue(executor) {
        try await withTaskExecutorPreference(executor) { try await operation() }
    }
}
