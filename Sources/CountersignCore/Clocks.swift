/// Monotonic time for timeouts and windows, from any `Clock` (a `ManualClock` in tests).
public struct MonotonicTime: Sendable {
    private let elapsedSinceStart: @Sendable () -> Duration
    private let sleepFor: @Sendable (Duration) async throws -> Void
    private let timers: (any Timers)?

    /// Time from `clock`. ``after(_:_:)`` schedules on `timers` when given (the server's event loops, for one: a
    /// timer there is an entry in a loop's queue, where a task sleeping on the clock costs a task and a timer on
    /// Dispatch's manager thread), else on a task that sleeps on `clock`.
    public init<C: Clock>(_ clock: C, timers: (any Timers)? = nil) where C.Duration == Duration {
        let start = clock.now
        self.elapsedSinceStart = { start.duration(to: clock.now) }
        self.sleepFor = { try await clock.sleep(for: $0) }
        self.timers = timers
    }

    /// Time since this value was made; only differences mean anything.
    public var now: Duration { self.elapsedSinceStart() }

    /// Suspends for `duration` on the underlying clock; throws `CancellationError` when cancelled.
    public func sleep(for duration: Duration) async throws {
        try await self.sleepFor(duration)
    }

    /// Runs `action` once, `delay` from now, unless the returned value is cancelled first.
    public func after(_ delay: Duration, _ action: @escaping @Sendable () -> Void) -> ScheduledAction {
        if let timers = self.timers {
            return timers.after(delay, action)
        }
        let sleep = self.sleepFor
        let timer = Task {
            guard (try? await sleep(delay)) != nil else { return }  // cancelled
            action()
        }
        return ScheduledAction { timer.cancel() }
    }

    public static let continuous = MonotonicTime(ContinuousClock())
}

/// Where ``MonotonicTime/after(_:_:)`` schedules its actions, when not on tasks that sleep.
public protocol Timers: Sendable {
    /// Runs `action` once, `delay` from now, unless the returned value is cancelled first.
    func after(_ delay: Duration, _ action: @escaping @Sendable () -> Void) -> ScheduledAction
}

/// An action ``MonotonicTime/after(_:_:)`` will run unless cancelled.
public struct ScheduledAction: Sendable {
    private let cancelAction: @Sendable () -> Void

    public init(cancel: @escaping @Sendable () -> Void) {
        self.cancelAction = cancel
    }

    /// Stops the action if it has not started; a no-op after it ran.
    public func cancel() {
        self.cancelAction()
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`: for rates, metrics and reports (never for money).
    public var inSeconds: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }
}

/// Wall-clock time since 1970: whole seconds for the `iat`, `nbf` and `exp` claims, milliseconds where the
/// order of events within a second helps (authorization ids).
public struct WallClock: Sendable {
    private let readMilliseconds: @Sendable () -> Int64

    /// A clock read in whole seconds (as tests set it): its milliseconds are those of the second's start.
    public init(_ read: @escaping @Sendable () -> Int64) {
        self.readMilliseconds = { read() * 1000 }
    }

    private init(readingMilliseconds read: @escaping @Sendable () -> Int64) {
        self.readMilliseconds = read
    }

    /// A clock read in milliseconds.
    public static func milliseconds(_ read: @escaping @Sendable () -> Int64) -> WallClock {
        WallClock(readingMilliseconds: read)
    }

    public var secondsSince1970: Int64 { Self.seconds(of: self.millisecondsSince1970) }

    public var millisecondsSince1970: Int64 { self.readMilliseconds() }

    /// The whole second a time in milliseconds falls in (rounded down, also before 1970).
    public static func seconds(of milliseconds: Int64) -> Int64 {
        milliseconds >= 0 ? milliseconds / 1000 : -((-milliseconds + 999) / 1000)
    }

    public static let system = WallClock.milliseconds {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
