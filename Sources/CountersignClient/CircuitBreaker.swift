/// One server's circuit breaker: after `threshold` consecutive connection failures it opens, and nothing is sent to
/// that server for `cooldown`; then one probe is let through (half-open), whose success closes it and whose failure
/// opens it for another cool-down.
///
/// Only a failure of the connection counts (refused, reset, lost, no answer in time, the server going away): a
/// refusal proves the server alive. A value type: ``ClusterClient`` keeps one per server under its lock.
public struct CircuitBreaker: Sendable, Hashable {
    /// Where the breaker is.
    public enum State: String, Sendable, Hashable {
        /// Requests go through.
        case closed
        /// Nothing is sent until the cool-down ends.
        case open
        /// The cool-down ended: the next request is the probe.
        case halfOpen = "half-open"
    }

    /// Consecutive failures that open the breaker.
    public let threshold: Int
    /// How long it stays open.
    public let cooldown: Duration
    private var failures = 0
    private var openUntil: Duration?
    private var probing = false

    /// A closed breaker.
    /// - Parameters:
    ///   - threshold: consecutive connection failures that open it (at least 1).
    ///   - cooldown: how long it then stays open.
    public init(threshold: Int, cooldown: Duration) {
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
    }

    /// The state at `now` (a monotonic time: only differences matter).
    public func state(at now: Duration) -> State {
        guard let openUntil else { return .closed }
        return now < openUntil || self.probing ? .open : .halfOpen
    }

    /// Whether a request may go to this server at `now`; in half-open, only the first caller's (the probe).
    public mutating func allow(at now: Duration) -> Bool {
        guard let openUntil else { return true }
        guard now >= openUntil, !self.probing else { return false }
        self.probing = true
        return true
    }

    /// Whether a probe is in flight: its outcome, soon, decides whether the breaker closes or opens again.
    public var isProbing: Bool { self.probing }

    /// How long until a probe will be allowed (zero when closed or half-open).
    public func retryAfter(at now: Duration) -> Duration {
        guard let openUntil, openUntil > now else { return .zero }
        return openUntil - now
    }

    /// The server answered: the breaker closes.
    public mutating func succeeded() {
        self.failures = 0
        self.openUntil = nil
        self.probing = false
    }

    /// The connection failed at `now`.
    public mutating func failed(at now: Duration) {
        self.failures += 1
        if self.probing || self.failures >= self.threshold {
            self.openUntil = now + self.cooldown
            self.probing = false
        }
    }

    /// A probe ended without an outcome (cancelled): the next caller may probe.
    public mutating func released() {
        self.probing = false
    }
}
