import CountersignConfiguration
import Foundation
import HSMSigning
import Logging
import NIOCore
import NIOPosix
import PKCS11
import Policy
import Synchronization

/// The HSM as the server uses it: the module, a thread pool for blocking calls, the session pool that
/// re-initializes the module when the token is lost, and the signer with its circuit breaker.
public final class HSMRuntime: Sendable {
    private let isShutDown = Atomic<Bool>(false)
    public let module: PKCS11Module
    public let sessions: RecoveringSessionPool
    public let signer: HSMSigner
    private let threadPool: NIOThreadPool
    /// Whether this runtime loaded the module and so finalizes it; an injected module belongs to its giver.
    private let ownsModule: Bool
    private let timeout: Duration
    private let time: MonotonicTime
    private let logger: Logger

    /// The AES-256 key on the token that seals software signing keys.
    static let sealingKeyLabel = "countersign-seal"

    /// Loads the module, finds the token and starts the pool. Nothing is signed yet.
    /// - Parameters:
    ///   - module: a module to use instead of loading the configured one (tests inject faults through one).
    ///   - reinitializesInjectedModule: whether a recovery may finalize and initialize an injected module;
    ///     a module this runtime loads itself is always re-initialized when the token is lost.
    /// - Throws: ``ModuleLoadError``, ``TokenLookupError`` or ``PKCS11Error`` with a clear reason.
    public init(
        configuration: ServerConfiguration.HSM, pin: PIN, time: MonotonicTime, logger: Logger, module: PKCS11Module? = nil,
        reinitializesInjectedModule: Bool = false
    ) throws {
        self.ownsModule = module == nil
        self.logger = logger
        self.timeout = configuration.timeout
        self.time = time
        self.module = try module ?? PKCS11Module.load(path: configuration.modulePath)
        let token = try self.module.token(label: configuration.tokenLabel)
        // One thread per session: a PKCS#11 call blocks its thread for as long as the token takes (a network HSM: a
        // round trip), so with fewer threads than sessions the sessions wait for threads, not for the token: two threads
        // (this machine's cores) make at most 500 calls/s to a token that takes 4 ms, whatever max_sessions says. The pool
        // also needs them so: a thread that returns a session goes on with the waiting signatures, and a lease queued
        // by a task must find a thread free beside those (PKCS11SessionPool's init).
        self.threadPool = NIOThreadPool(numberOfThreads: max(2, System.coreCount, configuration.maximumSessions))
        self.threadPool.start()
        self.sessions = RecoveringSessionPool(
            token: token,
            pin: pin,
            configuration: .init(
                pool: .init(maximumSessions: configuration.maximumSessions, acquireTimeout: configuration.timeout),
                // Only the module's one user may finalize it: not when another library in the process initialized it.
                reinitializesModule: (module == nil && self.module.initializedHere) || reinitializesInjectedModule
            ),
            threadPool: self.threadPool,
            backoffSleep: { try await time.sleep(for: $0) },
            logger: logger
        )
        self.signer = HSMSigner(
            pool: self.sessions,
            configuration: .init(timeout: configuration.timeout, failureThreshold: configuration.breakerFailures, cooldown: configuration.breakerCooldown),
            time: time,
            logger: logger
        )
    }

    /// The token as last found.
    public var token: PKCS11Token { self.sessions.token }

    /// Keeps `keys` as what the token must hold: a recovery finds each again by its `CKA_ID` before it lends
    /// sessions, and readiness checks them. Hold the keys' owner weakly: the runtime outlives nothing.
    func requireKeys(_ keys: @escaping @Sendable () -> [TokenKeyReference]) {
        self.sessions.setCheck { session in
            for key in keys() {
                _ = try key.handle(in: session, refresh: true)
            }
        }
    }

    /// Whether HSM tiers can sign now: the token is not being recovered, the breaker is not open, and every
    /// key it must hold is found within the HSM timeout.
    public func isReady() async -> Bool {
        if case .open(let until) = self.signer.breaker.currentState, self.time.now < until { return false }
        guard case .serving = self.sessions.health else { return false }
        let sessions = self.sessions
        return (try? await withDeadline(self.timeout, time: self.time) { try await sessions.runCheck() }) != nil
    }

    /// Closes the pool (waiting for sessions in use), stops the thread pool and finalizes the module.
    public func shutdown() async {
        // Once: the graceful stop and the end of a failed service group may both ask.
        guard !self.isShutDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
        guard await self.sessions.close(timeout: .seconds(10)) else {
            // A PKCS#11 call still hangs: finalizing under it could crash, and waiting could hang the
            // shutdown. The process is exiting; the token's sessions end with it.
            self.logger.error("HSM sessions still in use after 10 s; leaving the PKCS#11 module initialized")
            return
        }
        try? await self.threadPool.shutdownGracefully()
        if self.ownsModule {
            try? self.module.finalize()
        }
    }
}

/// Reads the HSM user PIN: from `pinFile` when given, else `COUNTERSIGN_HSM_PIN_FILE`, else `COUNTERSIGN_HSM_PIN`.
public enum HSMPINSource {
    public static func read(pinFile: String?, environment: [String: String]) throws -> PIN {
        if let path = pinFile ?? environment["COUNTERSIGN_HSM_PIN_FILE"] {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ConfigurationError(file: path, line: nil, reason: "cannot read the HSM PIN file")
            }
            let text = String(decoding: data, as: UTF8.self)
            let pin = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            guard !pin.isEmpty else { throw ConfigurationError(file: path, line: nil, reason: "the HSM PIN file is empty") }
            return PIN(pin)
        }
        if let pin = environment["COUNTERSIGN_HSM_PIN"], !pin.isEmpty {
            return PIN(pin)
        }
        throw ConfigurationError(
            file: "environment",
            line: nil,
            reason: "no HSM PIN: set COUNTERSIGN_HSM_PIN_FILE (preferred) or COUNTERSIGN_HSM_PIN, or hsm.pin_file in the configuration"
        )
    }
}
