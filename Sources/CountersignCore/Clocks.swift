/// Monotonic time for timeouts and windows, from any `Clock` (a `ManualClock` in tests).
public struct MonotonicTime: Sendable {
    private let elapsedSinceStart: @Sendable () -> Duration
    private let sleepFor: @Sendable (Duration) async throws -> Void

    public init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let start = clock.now
        self.elapsedSinceStart = { start.duration(to: clock.now) }
        self.sleepFor = { try await clock.sleep(for: $0) }
    }

    /// Time since this value was made; only differences mean anything.
    public var now: Duration { self.elapsedSinceStart() }

    /// Suspends for `duration` on the underlying clock; throws `CancellationError` when cancelled.
    public func sleep(for duration: Duration) async throws {
        try await self.sleepFor(duration)
    }

    public static let continuous = MonotonicTime(ContinuousClock())
}

/// Wall-clock time in whole seconds since 1970, for the `iat`, `nbf` and `exp` claims.
public struct WallClock: Sendable {
    private let read: @Sendable () -> Int64

    public init(_ read: @escaping @Sendable () -> Int64) {
        self.read = read
    }

    public var secondsSince1970: Int64 { self.read() }

    public static let system = WallClock {
        Int64(time(nil))
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
