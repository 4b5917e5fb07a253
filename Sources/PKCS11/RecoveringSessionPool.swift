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
    /// The module the token is on; a recovery re-initializes it if ``Configuration/reinitializesModule`` allows.
    public let module: PKCS11Module
    /// The token's label and serial number as first found: a recovery accepts only the same token.
    public let tokenLabel: String
    /// The token's serial number as first found; a recovery accepts a token with the label only if it has this serial number.
    public let tokenSerialNumber: String
    /// How many recoveries finished (for metrics).
    public var recoveries: Int { self.completed.load(ordering: .relaxed) }

    private let pin: PIN
    private let configuration: Configuration
    private let threadPool: NIOThreadPool
    private let timers: PKCS11SessionPool.Timers
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
        /// Whether every key was found since the last recovery (or start); see ``FailureKind/keyMissing``.
        var keysFoundSinceRecovery = true
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
    ///   - configuration: the session pool's size and timeout, and how recoveries are tried.
    ///   - threadPool: where the blocking calls run; the caller starts and stops it.
    ///   - clock: measures the backoff, unless `backoffSleep` is given.
    ///   - timers: where the pools' acquire timeouts and the grace of ``close(timeout:)`` are measured
    ///     (``PKCS11SessionPool/Timers``).
    ///   - backoffSleep: waits between recovery attempts (tests pass their manual clock's sleep).
    ///   - logger: where the pool reports dropped sessions, recoveries and their failures.
    public init(
        token: PKCS11Token, pin: PIN, configuration: Configuration = .init(), threadPool: NIOThreadPool,
        clock: any Clock<Duration> = ContinuousClock(), backoffSleep: (@Sendable (Duration) async throws -> Void)? = nil,
        timers: PKCS11SessionPool.Timers = .shared, logger: Logger = Logger(label: "countersign.pkcs11")
    ) {
        self.module = token.module
        self.tokenLabel = token.info.label
        self.tokenSerialNumber = token.info.serialNumber
        self.pin = pin
        self.configuration = configuration
        self.threadPool = threadPool
        self.timers = timers
        self.backoffSleep = backoffSleep ?? { try await clock.sleep(for: $0) }
        self.logger = logger
        let pool = PKCS11SessionPool(token: token, pin: pin, configuration: configuration.pool, threadPool: threadPool, timers: timers, logger: logger)
        self.state = Mutex(State(stage: .serving(Generation(number: 0, pool: pool)), token: token))
    }

    /// What a recovery checks on a fresh session before it lends sessions again (and what readiness checks):
    /// typically that every key in use is found by its `CKA_ID`. Errors fail the attempt.
    public func setCheck(_ check: @escaping @Sendable (borrowing PKCS11Session) throws -> Void) {
        self.check.withLock { $0 = check }
    }

    /// Runs the check on a lent session. Its failures count towards a recovery like any lease's; its
    /// successes do not make up for other leases' failures (a readiness probe every few seconds must not hide
    /// a signing path that keeps failing).
    public func runCheck() async throws {
        let check = self.check.withLock { $0 }
        try await self.lease(countsAsSuccess: false) { session in try check(session) }
        self.state.withLock { $0.keysFoundSinceRecovery = true }
    }

    /// Whether leases are lent now, and if not, why. Safe to read from any task; it may change as soon as it is read.
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

    /// Lends a logged-in session of the current pool to `body`, which runs on the thread pool.
    ///
    /// A lease whose pool a recovery closed before it got a session moves to the recovered pool if one already serves.
    /// Its failures count towards a recovery (see the type's discussion); a wrong or locked PIN stops lending for good.
    /// - Throws: ``SessionPoolError`` (`HSM_RECOVERING`, `HSM_TOKEN_LOST`, `HSM_POOL_CLOSED`, `HSM_SESSION_TIMEOUT`);
    ///   ``PKCS11Error`` from opening or logging in a session; whatever `body` throws.
    public func withSession<Result: Sendable>(
        _ body: @escaping @Sendable (borrowing PKCS11Session) throws -> Result
    ) async throws -> Result {
        try await self.lease(countsAsSuccess: true, body)
    }

    private func lease<Result: Sendable>(
        countsAsSuccess: Bool, _ body: @escaping @Sendable (borrowing PKCS11Session) throws -> Result
    ) async throws -> Result {
        var generation = try self.currentGeneration()
        while true {
            do {
                let result = try await generation.pool.withSession(body)
                if countsAsSuccess {
                    self.state.withLock { state in
                        if case .serving(let current) = state.stage, current.number == generation.number { state.consecutiveFailures = 0 }
                    }
                }
                return result
            } catch let error as SessionPoolError where error.code == .poolClosed {
                // A recovery closed this pool under the lease: once a newer one serves, the lease goes there;
                // while recovering (or closed), the current stage says why.
                let current = try self.currentGeneration()
                guard current.number != generation.number else { throw error }
                generation = current
            } catch {
                self.recordFailure(error, in: generation)
                throw error
            }
        }
    }

    private func currentGeneration() throws(SessionPoolError) -> Generation {
        try self.state.withLock { state throws(SessionPoolError) -> Generation in
            switch state.stage {
            case .serving(let generation):
                return generation
            case .recovering:
                throw SessionPoolError(code: .recovering, reason: "the HSM token was lost; the PKCS#11 module is being re-initialized")
            case .failed:
                throw SessionPoolError(code: .tokenLost, reason: "the HSM token was lost and cannot be recovered without the operator")
            case .closed:
                throw SessionPoolError(code: .poolClosed, reason: "the HSM session pool is closed; the server is shutting down")
            }
        }
    }

    /// Stops any recovery and closes the current pool (see ``PKCS11SessionPool/close(timeout:)``).
    ///
    /// - Returns: whether every session came back and no recovery is still inside a PKCS#11 call within
    ///   `timeout`: only then is it safe to finalize the module.
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
        if let recovery {
            recovery.cancel()
            guard await Self.finishes(recovery, within: timeout, timers: self.timers) else {
                self.logger.error("an HSM recovery is still inside a PKCS#11 call; the module is left as it is")
                return false
            }
        }
        return await pool?.close(timeout: timeout) ?? true
    }

    /// Whether `task` ends within `timeout` (it is not waited for beyond that).
    private static func finishes(_ task: Task<Void, Never>, within timeout: Duration, timers: PKCS11SessionPool.Timers) async -> Bool {
        final class Outcome: Sendable {
            let continuation = Mutex<CheckedContinuation<Bool, Never>?>(nil)
            func resume(_ value: Bool) { self.continuation.withLock { $0.take() }?.resume(returning: value) }
        }
        let outcome = Outcome()
        return await withCheckedContinuation { continuation in
            outcome.continuation.withLock { $0 = continuation }
            let cancelTimeout = timers.schedule(after: timeout) { outcome.resume(false) }
            Task {
                await task.value
                cancelTimeout()
                outcome.resume(true)
            }
        }
    }

    // MARK: Recovery

    private func recordFailure(_ error: any Error, in generation: Generation) {
        let kind = Self.classify(error)
        guard kind != .ignored else { return }
        if kind == .pinProblem {
            self.stop(because: "\(error)")
            return
        }
        self.state.withLock { state in
            guard case .serving(let current) = state.stage, current.number == generation.number else { return }
            if kind == .keyMissing, !state.keysFoundSinceRecovery { return }
            state.consecutiveFailures += 1
            guard kind == .tokenGone || state.consecutiveFailures >= self.configuration.failureThreshold else { return }
            let because = kind == .tokenGone ? "\(error)" : "\(state.consecutiveFailures) consecutive failures, the last: \(error)"
            state.stage = .recovering(from: current, reason: because, attempt: 0)
            state.consecutiveFailures = 0
            state.recovery = Task { await self.recover(from: current, reason: because) }
        }
    }

    /// Stops lending for good: a PIN problem. Sessions in use finish; the pool is closed.
    private func stop(because reason: String) {
        let pool = self.state.withLock { state -> PKCS11SessionPool? in
            switch state.stage {
            case .closed, .failed:
                return nil
            case .serving(let generation), .recovering(let generation, _, _):
                state.stage = .failed("\(reason); restart the server with the right PIN")
                state.recovery?.cancel()
                state.recovery = nil
                return generation.pool
            }
        }
        guard let pool else { return }
        self.logger.critical("HSM sessions stopped: logging in again with this PIN could lock the token", metadata: ["error": "\(reason)"])
        Task { await pool.close() }
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
                let (pool, missing) = try await self.attempt(closing: generation.pool)
                let installed = self.state.withLock { state -> Bool in
                    guard case .recovering = state.stage else { return false }
                    state.stage = .serving(Generation(number: generation.number + 1, pool: pool))
                    state.token = pool.token
                    state.recovery = nil
                    state.keysFoundSinceRecovery = missing == nil
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
                if let missing {
                    self.logger.error(
                        "after re-initialization the token still lacks a key it must hold: it is gone from the token, not hidden; restore it from the HSM's backup",
                        metadata: ["error": "\(missing)"]
                    )
                }
                return
            } catch let error as PKCS11Error where error.code.isPINProblem {
                self.stop(because: "\(error)")
                return
            } catch is CancellationError {
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

    /// One attempt: drain the old pool, re-initialize, find the token, open a fresh pool, log in and run the check.
    /// - Returns: the pool, and the check's `KEY_NOT_FOUND` if a key is still missing (the token is back; the key is
    ///   not: waiting would not bring it back, so the pool serves what it has).
    private func attempt(closing old: PKCS11SessionPool) async throws -> (PKCS11SessionPool, KeyError?) {
        guard await old.close(timeout: self.configuration.drainTimeout) else {
            throw SessionPoolError(code: .recovering, reason: "a PKCS#11 call is still in flight; the module is not re-initialized under it")
        }
        try Task.checkCancellation()
        let module = self.module
        let reinitializes = self.configuration.reinitializesModule
        let (label, serialNumber) = (self.tokenLabel, self.tokenSerialNumber)
        let token = try await self.threadPool.runIfActive { () throws -> PKCS11Token in
            try Task.checkCancellation()
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
            token: token, pin: self.pin, configuration: self.configuration.pool, threadPool: self.threadPool, timers: self.timers, logger: self.logger
        )
        let check = self.check.withLock { $0 }
        do {
            try Task.checkCancellation()
            try await pool.withSession { session in try check(session) }
            return (pool, nil)
        } catch let error as KeyError where error.code == .keyNotFound {
            return (pool, error)
        } catch {
            await pool.close()
            throw error
        }
    }
}
