import NIOCore

/// An event loop as the task executor (SE-0417) of a connection's tasks: they run on the connection's own loop,
/// where its reads and writes happen, and their hops to the generic executor cost nothing.
///
/// NIO runs Swift's global jobs on its loops (`NIOSingletons`' take-over), but as the loop's *serial* executor:
/// every nonisolated async function the task enters, or resumes after an `await`, is then not "on the generic
/// executor", so the runtime enqueues the task once more before running it (51 `swift_task_enqueueGlobal` per
/// authorization, counted with uprobes). A task that prefers a task executor runs on the generic executor *of*
/// that task executor, so the runtime runs those hops inline.
///
/// The loop's group must outlive every task that prefers it: a loop that has shut down drops what it is given, and
/// the task would never resume (the server uses NIO's shared group, which never shuts down).
final class EventLoopExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
