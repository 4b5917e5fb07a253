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

    /// What the caller may do now. An admitted caller reports its outcome with the ticket it got, so an
    /// outcome that arrives after the breaker changed state (a slow request admitted before it opened) is
    /// ignored rather than closing the breaker early or stretching its cooldown.
    public enum Admission: Sendable, Hashable {
        case allowed(Ticket)
        case probe(Ticket)
        case refused(retryAfter: Duration)
    }

    public struct Ticket: Sendable, Hashable {
        fileprivate let generation: UInt64
    }

    private let failures = Atomic<Int>(0)
    private let trips = Atomic<Int>(0)

    /// Every failure recorded since the start, and every time the breaker opened (for metrics).
    public var failureCount: Int { self.failures.load(ordering: .relaxed) }
    public var tripCount: Int { self.trips.load(ordering: .relaxed) }

    private let failureThreshold: Int
    private let cooldown: Duration
    private let time: MonotonicTime
    private let state = Mutex((state: State.closed(consecutiveFailures: 0), generation: UInt64(0)))

    public init(failureThreshold: Int = 3, cooldown: Duration = .seconds(5), time: MonotonicTime) {
        self.failureThreshold = max(1, failureThreshold)
        self.cooldown = cooldown
        self.time = time
    }

    public var currentState: State { self.state.withLock { $0.state } }

    public func admit() -> Admission {
        let now = self.time.now
        return self.state.withLock { breaker in
            switch breaker.state {
            case .closed:
                return .allowed(Ticket(generation: breaker.generation))
            case .open(let until) where now >= until:
                breaker.state = .halfOpen
                breaker.generation += 1
                return .probe(Ticket(generation: breaker.generation))
            case .open(let until):
                return .refused(retryAfter: until - now)
            case .halfOpen:
                return .refused(retryAfter: self.cooldown)
            }
        }
    }

    public func recordSuccess(_ ticket: Ticket) {
        self.state.withLock { breaker in
            guard ticket.generation == breaker.generation else { return }
            if case .closed = breaker.state {
                breaker.state = .closed(consecutiveFailures: 0)
            } else {
                breaker.state = .closed(consecutiveFailures: 0)
                breaker.generation += 1
            }
        }
    }

    /// The admitted call never reached the token (it was refused before, e.g. while the token is being
    /// recovered): nothing is learned. A probe's place goes to the next caller at once.
    public func abandon(_ ticket: Ticket) {
        let now = self.time.now
        self.state.withLock { breaker in
            guard ticket.generation == breaker.generation, case .halfOpen = breaker.state else { return }
            breaker.state = .open(until: now)
            breaker.generation += 1
        }
    }

    public func recordFailure(_ ticket: Ticket) {
        let now = self.time.now
        self.failures.add(1, ordering: .relaxed)
        let opened = self.state.withLock { breaker -> Bool in
            guard ticket.generation == breaker.generation else { return false }
            switch breaker.state {
            case .closed(let failures) where failures + 1 >= self.failureThreshold:
                breaker.state = .open(until: now + self.cooldown)
                breaker.generation += 1
                return true
            case .closed(let failures):
                breaker.state = .closed(consecutiveFailures: failures + 1)
                return false
            case .halfOpen, .open:
                breaker.state = .open(until: now + self.cooldown)
                breaker.generation += 1
                return true
            }
        }
        if opened { self.trips.add(1, ordering: .relaxed) }
    }
}
