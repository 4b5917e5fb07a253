import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Something that lends logged-in sessions: a ``PKCS11SessionPool``, or a ``RecoveringSessionPool`` that
/// replaces its pool when the token is lost.
public protocol PKCS11SessionLender: Sendable {
    /// Lends a logged-in session to `body`, which runs on a thread where blocking is fine.
    func withSession<Result: Sendable>(_ body: @escaping @Sendable (borrowing PKCS11Session) throws -> Result) async throws -> Result
}

extension PKCS11SessionPool: PKCS11SessionLender {}

/// A session pool that survives the token going away and coming back.
///
/// A pool on its own replaces a session the token dropped, which covers a restart that keeps the module's
/// view of its slots. Many modules need more: SoftHSM2 whose token directory went away and came back, and
/// network HSM clients whose appliance restarted, find the token's objects again only after `C_Finalize` and
/// `C_Initialize`. This type watches the outcomes of the leases it lends and, when the token is gone
/// (`CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_SLOT_ID_INVALID`, …) or keeps failing (``Configuration/failureThreshold``
/// consecutive leases failing with device errors or not finding a key that was there), it recovers:
///
/// 1. new leases are refused at once with ``SessionPoolError/Code/recovering``;
/// 2. the pool is closed and every session in use is waited for: nothing is finalized under a call in flight
///    (a call that hangs postpones the recovery until it returns);
/// 3. the module is re-initialized (when this pool may: see ``Configuration/reinitializesModule``), the token
///    is found again by its label and must have the same serial number;
/// 4. a fresh pool opens a session, logs in and runs the caller's check (e.g. every key it needs is found by
///    its `CKA_ID`); only then are leases lent again.
///
/// A failed attempt is retried after a delay that doubles from ``Configuration/initialBackoff`` up to
/// ``Configuration/maximumBackoff``, measured on the injected clock. A wrong or locked PIN stops the attempts:
/// logging in again and again with a wrong PIN would lock the token.
public final class RecoveringSessionPool: PKCS11SessionLender, Sendable {
    public struct Configuration: Sendable {
        public var pool: PKCS11SessionPool.Configuration
        /// Consecutive failed leases (device errors, a key not found) that start a recovery.
        public var failureThreshold: Int
        public var initialBackoff: Duration
        public var maximumBackoff: Duration
        /// How long a recovery waits for the sessions in use before it tries again later.
        public var drainTimeout: Duration
        /// Whether a recovery finalizes and initializes the module. Only the module's one user in the process
        /// may: finalizing ends every other user's sessions. Without it a recovery still finds the token again.
        public var reinitializesModule: Bool

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
        case serving
        /// Recovering since `reason`; `attempt` counts the attempts begun so far.
        case recovering(reason: String, attempt: Int)
        /// The attempts stopped (a wrong or locked PIN): only a restart with the right PIN helps.
        case failed(reason: String)
        case closed

        public var description: String {
            switch self {
            case .serving: "serving"
            case .recovering(let reason, let attempt): "recovering (attempt \(attempt)) after: \(reason)"
            case .failed(let reason): "recovery stopped: \(reason)"
            case .closed: "closed"
            }
        }
    }

    public let module: PKCS11Module
    /// The token's label and serial number as first found: a recovery accepts only the same token.
    public let tokenLabel: String
    public let tokenSerialNumber: String
    /// How many recoveries finished (for metrics).
    public var recoveries: Int { self.completed.load(ordering: .relaxed) }

    private let pin: PIN
    private let configuration: Configuration
    private let threadPool: NIOThreadPool
    private let clock: any Clock<Duration>
    private let backoffSleep: @Sendable (Duration) async throws -> Void
    private let logger: Logger
    private let completed = Atomic<Int>(0)
    private let check = Mutex<@Sendable (borrowing PKCS11Session) throws -> Void>({ _ in })
    private let state: Mutex<State>

    private struct Generation: Sendable {
        var number: Int
        var pool: PKCS11SessionPool
    }

    private struct State {
        var stage: Stage
        var token: PKCS11Token
        var consecutiveFailures = 0
        var recovery: Task<Void, Never>?
    }

    private enum Stage {
        case serving(Generation)
        case recovering(from: Generation, reason: String, attempt: Int)
        case failed(String)
        case closed
    }

    /// - Parameters:
    ///   - token: the token as found at start; recoveries look for it again by its label and serial number.
    ///   - pin: the user PIN, passed to `C_Login` and nowhere else.
    ///   - threadPool: where the blocking calls run; the caller starts and stops it.
    ///   - clock: measures the acquire timeout, and the backoff unless `backoffSleep` is given.
    ///   - backoffSleep: waits between recovery attempts (tests pass their manual clock's sleep).
    public init(
        token: PKCS11Token, pin: PIN, configuration: Configuration = .init(), threadPool: NIOThreadPool,
        clock: any Clock<Duration> = ContinuousClock(), backoffSleep: (@Sendable (Duration) async throws -> Void)? = nil,
        logger: Logger = Logger(label: "countersign.pkcs11")
    ) {
        self.module = token.module
        self.tokenLabel = token.info.label
        self.tokenSerialNumber = token.info.serialNumber
        self.pin = pin
        self.configuration = configuration
        self.threadPool = threadPool
        self.clock = clock
        self.backoffSleep = backoffSleep ?? { try await clock.sleep(for: $0) }
        self.logger = logger
        let pool = PKCS11SessionPool(token: token, pin: pin, configuration: configuration.pool, threadPool: threadPool, clock: clock, logger: logger)
        self.state = Mutex(State(stage: .serving(Generation(number: 0, pool: pool)), token: token))
    }

    /// What a recovery checks on a fresh session before it lends sessions again (and what readiness checks):
    /// typically that every key in use is found by its `CKA_ID`. Errors fail the attempt.
    public func setCheck(_ check: @escaping @Sendable (borrowing PKCS11Session) throws -> Void) {
        self.check.withLock { $0 = check }
    }

    /// Runs the check on a lent session.
    public func runCheck() async throws {
        let check = self.check.withLock { $0 }
        try await self.withSession { session in try check(session) }
    }

    public var health: Health {
        self.state.withLock { state in
            switch state.stage {
            case .serving: .serving
            case .recovering(_, let reason, let attempt): .recovering(reason: reason, attempt: attempt)
            case .failed(let reason): .failed(reason: reason)
            case .closed: .closed
            }
        }
    }

    /// The current pool's statistics; while recovering, nothing is open.
    public var statistics: PKCS11SessionPool.Statistics {
        let pool = self.state.withLock { state -> PKCS11SessionPool? in
            if case .serving(let generation) = state.stage { return generation.pool }
            return nil
        }
        return pool?.statistics ?? .init(capacity: self.configuration.pool.maximumSessions, open: 0, inUse: 0, waiting: 0)
    }

    /// The token as last found (at start or by the last recovery).
    public var token: PKCS11Token { self.state.withLock { $0.token } }

    public func withSession<Result: Sendable>(
        _ body: @escaping @Sendable (borrowing PKCS11Session) throws -> Result
    ) async throws -> Result {
        let generation = try self.state.withLock { state throws(SessionPoolError) -> Generation in
            switch state.stage {
            case .serving(let generation):
                return generation
            case .recovering(_, let reason, _):
                throw SessionPoolError(code: .recovering, reason: "the HSM token was lost (\(reason)); the module is being re-initialized")
            case .failed(let reason):
                throw SessionPoolError(code: .recovering, reason: "the HSM token was lost and cannot be recovered: \(reason)")
            case .closed:
                throw SessionPoolError(code: .poolClosed, reason: "the HSM session pool is closed; the server is shutting down")
            }
        }
        do {
            let result = try await generation.pool.withSession(body)
            self.state.withLock { state in
                if case .serving(let current) = state.stage, current.number == generation.number { state.consecutiveFailures = 0 }
            }
            return result
        } catch let error as SessionPoolError where error.code == .poolClosed {
            // A recovery closed the pool under this lease's wait: say so rather than "shutting down".
            let recovering = self.state.withLock { state -> String? in
                if case .recovering(_, let reason, _) = state.stage { return reason }
                return nil
            }
            if let recovering {
                throw SessionPoolError(code: .recovering, reason: "the HSM token was lost (\(recovering)); the module is being re-initialized")
            }
            throw error
        } catch {
            self.recordFailure(error, in: generation)
            throw error
        }
    }

    /// Stops any recovery and closes the current pool (see ``PKCS11SessionPool/close(timeout:)``).
    @discardableResult
    public func close(timeout: Duration = .seconds(10)) async -> Bool {
        let (pool, recovery) = self.state.withLock { state -> (PKCS11SessionPool?, Task<Void, Never>?) in
            defer {
                state.stage = .closed
                state.recovery = nil
            }
            switch state.stage {
            case .serving(let generation), .recovering(let generation, _, _): return (generation.pool, state.recovery)
            case .failed, .closed: return (nil, state.recovery)
            }
        }
        recovery?.cancel()
        await recovery?.value
        return await pool?.close(timeout: timeout) ?? true
    }

    // MARK: Recovery

    enum FailureKind {
        /// The token or slot is gone: recover now.
        case tokenGone
        /// A device error or a key that is no longer found: recover when it keeps happening.
        case counts
        /// The caller's mistake, a PIN problem, or a timeout: re-initializing would not help.
        case ignored
    }

    static func classify(_ error: any Error) -> FailureKind {
        if let error = error as? KeyError {
            return error.code == .keyNotFound ? .counts : .ignored
        }
        guard let error = error as? PKCS11Error else { return .ignored }
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

    private func recordFailure(_ error: any Error, in generation: Generation) {
        let kind = Self.classify(error)
        guard kind != .ignored else { return }
        let reason = "\(error)"
        self.state.withLock { state in
            guard case .serving(let current) = state.stage, current.number == generation.number else { return }
            state.consecutiveFailures += 1
            guard kind == .tokenGone || state.consecutiveFailures >= self.configuration.failureThreshold else { return }
            let because = kind == .tokenGone ? reason : "\(state.consecutiveFailures) consecutive failures, the last: \(reason)"
            state.stage = .recovering(from: current, reason: because, attempt: 0)
            state.consecutiveFailures = 0
            state.recovery = Task { await self.recover(from: current, reason: because) }
        }
    }

    private func recover(from generation: Generation, reason: String) async {
        self.logger.error(
            "HSM token lost; re-initializing the PKCS#11 module",
            metadata: ["reason": "\(reason)", "token": "\(self.tokenLabel)", "module": "\(self.module.path)"]
        )
        var delay = self.configuration.initialBackoff
        var attempt = 0
        while !Task.isCancelled {
            attempt += 1
            let proceed = self.state.withLock { state -> Bool in
                guard case .recovering(let from, let reason, _) = state.stage else { return false }
                state.stage = .recovering(from: from, reason: reason, attempt: attempt)
                return true
            }
            guard proceed else { return }
            do {
                let pool = try await self.attempt(closing: generation.pool)
                let installed = self.state.withLock { state -> Bool in
                    guard case .recovering = state.stage else { return false }
                    state.stage = .serving(Generation(number: generation.number + 1, pool: pool))
                    state.token = pool.token
                    state.recovery = nil
                    return true
                }
                guard installed else {
                    await pool.close()
                    return
                }
                self.completed.add(1, ordering: .relaxed)
                self.logger.notice(
                    "HSM token recovered; sessions are lent again",
                    metadata: ["attempts": "\(attempt)", "token": "\(self.tokenLabel)", "epoch": "\(self.module.epoch)"]
                )
                return
            } catch let error as PKCS11Error where [.pinIncorrect, .pinLocked, .userPINNotInitialized].contains(error.code) {
                let reason = "\(error); restart the server with the right PIN"
                self.logger.critical("HSM recovery stopped: logging in again with this PIN could lock the token", metadata: ["error": "\(error)"])
                self.state.withLock { state in
                    if case .recovering = state.stage {
                        state.stage = .failed(reason)
                        state.recovery = nil
                    }
                }
                return
            } catch {
                self.logger.warning(
                    "HSM recovery attempt failed; trying again",
                    metadata: ["attempt": "\(attempt)", "error": "\(error)", "next_in": "\(delay)"]
                )
            }
            do {
                try await self.backoffSleep(delay)
            } catch {
                return
            }
            delay = min(delay * 2, self.configuration.maximumBackoff)
        }
    }

    /// One attempt: drain the old pool, re-initialize, find the token, open a fresh pool and check it.
    private func attempt(closing old: PKCS11SessionPool) async throws -> PKCS11SessionPool {
        guard await old.close(timeout: self.configuration.drainTimeout) else {
            throw SessionPoolError(code: .recovering, reason: "a PKCS#11 call is still in flight; the module is not re-initialized under it")
        }
        let module = self.module
        let reinitializes = self.configuration.reinitializesModule
        let (label, serialNumber) = (self.tokenLabel, self.tokenSerialNumber)
        let token = try await self.threadPool.runIfActive { () throws -> PKCS11Token in
            if reinitializes {
                try module.reinitialize()
            }
            let token = try module.token(label: label)
            guard token.info.serialNumber == serialNumber else {
                throw TokenLookupError(
                    code: .tokenNotFound,
                    reason: "the token labelled '\(label)' now has serial number '\(token.info.serialNumber)', not '\(serialNumber)': it is another token"
                )
            }
            return token
        }
        let pool = PKCS11SessionPool(
            token: token, pin: self.pin, configuration: self.configuration.pool, threadPool: self.threadPool, clock: self.clock, logger: self.logger
        )
        let check = self.check.withLock { $0 }
        do {
            try await pool.withSession { session in try check(session) }
        } catch {
            await pool.close()
            throw error
        }
        return pool
    }
}
