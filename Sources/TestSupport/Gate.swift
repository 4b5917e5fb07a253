import Foundation

/// A gate that blocks threads until a test opens it: holds a pooled session busy for exactly as long as
/// the test needs, without timing anything.
public final class Gate: Sendable {
    private let condition = NSCondition()
    nonisolated(unsafe) private var isOpen = false  // guarded by `condition`

    public init() {}

    /// Blocks the calling thread until ``open()``.
    public func wait() {
        self.condition.lock()
        while !self.isOpen {
            self.condition.wait()
        }
        self.condition.unlock()
    }

    public func open() {
        self.condition.lock()
        self.isOpen = true
        self.condition.broadcast()
        self.condition.unlock()
    }
}

/// Waits until `condition` holds, giving other tasks and threads the chance to get there; fails after
/// `limit` of real time so a broken test ends instead of hanging. It asserts nothing about speed.
public func eventually(
    _ description: String,
    limit: Duration = .seconds(30),
    _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + limit
    while !condition() {
        guard ContinuousClock.now < deadline else {
            throw FixtureError(reason: "never happened: \(description)")
        }
        await Task.yield()
        try await Task.sleep(for: .milliseconds(1))
    }
}

/// ``eventually(_:limit:_:)`` for a condition that must await (e.g. a store read).
public func eventually(
    _ description: String,
    limit: Duration = .seconds(30),
    _ condition: () async -> Bool
) async throws {
    let deadline = ContinuousClock.now + limit
    while !(await condition()) {
        guard ContinuousClock.now < deadline else {
            throw FixtureError(reason: "never happened: \(description)")
        }
        try await Task.sleep(for: .milliseconds(1))
    }
}
