import Policy
import Synchronization

/// Stops sending work to a failing HSM, and lets one request through now and then to find out whether it
/// has recovered.
///
/// Closed: requests pass; `failureThreshold` consecutive failures open it. Open: requests are refused at once
/// until `cooldown` has passed, then the next request is let through as a probe (half-open); its success
/// closes the breaker, its failure opens it for another cooldown.
public final class CircuitBreaker: Sendable {
    public enum State: Sendable, Hashable, CustomStringConvertible {
        case closed(consecutiveFailures: Int)
        case open(until: Duration)
        case halfOpen

        public var description: String {
            switch self {
            case .closed: "closed"
            case .open: "open"
            case .halfOpen: "half-open"
            }
        }
    }

    /// What the caller may do now.
    public enum Admission: Sendable, Hashable {
        case allowed
        case probe
        case refused(retryAfter: Duration)
    }

    private let failureThreshold: Int
    private let cooldown: Duration
    private let time: MonotonicTime
    private let state = Mutex(State.closed(consecutiveFailures: 0))

    public init(failureThreshold: Int = 3, cooldown: Duration = .seconds(5), time: MonotonicTime) {
        self.failureThreshold = max(1, failureThreshold)
        self.cooldown = cooldown
        self.time = time
    }

    public var currentState: State { self.state.withLock { $0 } }

    public func admit() -> Admission {
        let now = self.time.now
        return self.state.withLock { state in
            switch state {
            case .closed:
                return .allowed
            case .open(let until) where now >= until:
                state = .halfOpen
                return .probe
            case .open(let until):
                return .refused(retryAfter: until - now)
            case .halfOpen:
                return .refused(retryAfter: self.cooldown)
            }
        }
    }

    public func recordSuccess() {
        self.state.withLock { $0 = .closed(consecutiveFailures: 0) }
    }

    public func recordFailure() {
        let now = self.time.now
        self.state.withLock { state in
            switch state {
            case .closed(let failures) where failures + 1 >= self.failureThreshold:
                state = .open(until: now + self.cooldown)
            case .closed(let failures):
                state = .closed(consecutiveFailures: failures + 1)
            case .halfOpen, .open:
                state = .open(until: now + self.cooldown)
            }
        }
    }
}
