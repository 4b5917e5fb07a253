import HSMSigning
import Logging
import NIOCore
import NIOPosix
import PKCS11
import Policy
import Synchronization

/// The HSM as the server uses it: the module, the token, a thread pool for blocking calls, the session
/// pool and the signer with its circuit breaker.
public final class HSMRuntime: Sendable {
    private let isShutDown = Atomic<Bool>(false)
    public let module: PKCS11Module
    public let token: PKCS11Token
    public let pool: PKCS11SessionPool
    public let signer: HSMSigner
    private let threadPool: NIOThreadPool
    /// Whether this runtime loaded the module and so finalizes it; an injected module belongs to its giver.
    private let ownsModule: Bool
    private let logger: Logger

    /// The AES-256 key on the token that seals software signing keys.
    static let sealingKeyLabel = "countersign-seal"

    /// Loads the module, finds the token and starts the pool. Nothing is signed yet.
    /// - Throws: ``ModuleLoadError``, ``TokenLookupError`` or ``PKCS11Error`` with a clear reason.
    public init(configuration: ServerConfiguration.HSM, pin: PIN, time: MonotonicTime, logger: Logger, module: PKCS11Module? = nil) throws {
        self.ownsModule = module == nil
        self.logger = logger
        self.module = try module ?? PKCS11Module.load(path: configuration.modulePath)
        self.token = try self.module.token(label: configuration.tokenLabel)
        self.threadPool = NIOThreadPool(numberOfThreads: max(2, System.coreCount))
        self.threadPool.start()
        self.pool = PKCS11SessionPool(
            token: self.token,
            pin: pin,
            configuration: .init(maximumSessions: configuration.maximumSessions, acquireTimeout: configuration.timeout),
            threadPool: self.threadPool,
            clock: ContinuousClock(),
            logger: logger
        )
        self.signer = HSMSigner(
            pool: self.pool,
            configuration: .init(timeout: configuration.timeout, failureThreshold: configuration.breakerFailures, cooldown: configuration.breakerCooldown),
            time: time,
            logger: logger
        )
    }

    /// Closes the pool (waiting for sessions in use), stops the thread pool and finalizes the module.
    public func shutdown() async {
        // Once: the graceful stop and the end of a failed service group may both ask.
        guard !self.isShutDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
        guard await self.pool.close(timeout: .seconds(10)) else {
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

import Foundation
