import CountersignCore
import NIOCore
import NIOPosix

extension MonotonicTime {
    /// The system's monotonic clock, whose ``MonotonicTime/after(_:_:)`` is a timer on `group`'s event loops: an
    /// entry in a loop's queue of scheduled tasks, on the caller's own loop when it runs on one of the group's.
    /// `group` must outlive every deadline armed on it: a loop that has shut down runs no scheduled task (the server
    /// uses NIO's shared group, which is never shut down).
    ///
    /// Every HSM signature and every PostgreSQL statement runs under a deadline. A deadline made of a task sleeping
    /// on `ContinuousClock` costs a task, and a timer armed and disarmed on Dispatch's manager thread, which wakes
    /// for each (docs/benchmarks.md).
    public static func eventLoops(_ group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) -> MonotonicTime {
        MonotonicTime(ContinuousClock(), timers: EventLoopTimers(group: group))
    }
}

/// ``Timers`` as NIO's scheduled tasks.
struct EventLoopTimers: Timers {
    let group: any EventLoopGroup

    func after(_ delay: Duration, _ action: @escaping @Sendable () -> Void) -> ScheduledAction {
        // The caller's own loop when it is one of the group's (no lock, no wake-up), else the next one.
        let loop = self.group.any()
        let scheduled = loop.scheduleTask(in: TimeAmount(delay)) { action() }
        return ScheduledAction { scheduled.cancel() }
    }
}
