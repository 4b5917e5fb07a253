// What configures a ``RecoveringSessionPool``, what it reports, and how it reads the errors of the leases it lends.
extension RecoveringSessionPool {
    /// How each session pool is configured, and when and how a recovery is tried.
    public struct Configuration: Sendable {
        /// The configuration of the session pool; every recovery opens a fresh pool with it.
        public var pool: PKCS11SessionPool.Configuration
        /// Consecutive failed leases (device errors, a key not found) that start a recovery.
        public var failureThreshold: Int
        /// The delay after the first failed recovery attempt; it doubles after each further failed attempt.
        public var initialBackoff: Duration
        /// The longest delay between two recovery attempts.
        public var maximumBackoff: Duration
        /// How long a recovery waits for the sessions in use before it tries again later.
        public var drainTimeout: Duration
        /// Whether a recovery finalizes and initializes the module. Only the module's one user in the process
        /// may: finalizing ends every other user's sessions. Without it a recovery still finds the token again.
        public var reinitializesModule: Bool

        /// Defaults: a recovery after 3 consecutive failures, attempts 250 ms to 5 s apart, a 10 s drain timeout, and
        /// re-initializing the module. A `failureThreshold` below 1 is raised to 1.
        public init(
            pool: PKCS11SessionPool.Configuration = .init(), failureThreshold: Int = 3, initialBackoff: Duration = .milliseconds(250),
            maximumBackoff: Duration = .seconds(5), drainTimeout: Duration = .seconds(10), reinitializesModule: Bool = true
        ) {
            self.pool = pool
            self.failureThreshold = max(1, failureThreshold)
            self.initialBackoff = initialBackoff
            self.maximumBackoff = maximumBackoff
            self.drainTimeout = drainTimeout
            self.reinitializesModule = reinitializesModule
        }
    }

    /// Whether leases are lent now.
    public enum Health: Sendable, Hashable, CustomStringConvertible {
        /// Leases are lent.
        case serving
        /// Recovering since `reason`; `attempt` counts the attempts begun so far.
        case recovering(reason: String, attempt: Int)
        /// The attempts stopped (a wrong or locked PIN): only a restart with the right PIN helps.
        case failed(reason: String)
        /// ``RecoveringSessionPool/close(timeout:)`` was called; no lease is lent again.
        case closed

        /// A phrase for logs and health endpoints, e.g. `recovering (attempt 2) after: …`.
        public var description: String {
            switch self {
            case .serving: "serving"
            case .recovering(let reason, let attempt): "recovering (attempt \(attempt)) after: \(reason)"
            case .failed(let reason): "recovery stopped: \(reason)"
            case .closed: "closed"
            }
        }
    }

    /// What a lease's error says about the token, for the recovery (``classify(_:)``).
    enum FailureKind: Equatable {
        /// The token or slot is gone: recover now.
        case tokenGone
        /// A device error: recover when it keeps happening.
        case counts
        /// A key that was there is not found: recover when it keeps happening, unless a recovery already
        /// found the token without it (then it is gone from the token, not hidden, and recovering cannot help).
        case keyMissing
        /// The PIN is wrong, expired or locked: stop lending, as every new session would try it again and
        /// could lock the token.
        case pinProblem
        /// The caller's mistake or a timeout: re-initializing would not help.
        case ignored
    }

    static func classify(_ error: any Error) -> FailureKind {
        if let error = error as? KeyError {
            return error.code == .keyNotFound ? .keyMissing : .ignored
        }
        guard let error = error as? PKCS11Error else { return .ignored }
        if error.code.isPINProblem { return .pinProblem }
        switch error.code {
        case .deviceRemoved, .tokenNotPresent, .tokenNotRecognized, .slotIDInvalid, .cryptokiNotInitialized:
            return .tokenGone
        case .deviceError, .deviceMemory, .generalError, .functionFailed, .sessionHandleInvalid, .sessionClosed,
            .userNotLoggedIn, .objectHandleInvalid, .keyHandleInvalid:
            return .counts
        default:
            return .ignored
        }
    }
}
