import CountersignCore
import Crypto
import Foundation
import Logging
import PKCS11
import Policy
import Signing
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Signs with keys on the HSM, through the session pool, within a deadline, behind a circuit breaker.
///
/// An HSM that errors or stops answering costs a caller at most ``Configuration/timeout``; then the breaker
/// opens and callers are refused at once with `HSM_UNAVAILABLE` until a probe succeeds. There is no fallback
/// to a software key, ever.
public final class HSMSigner: Sendable {
    public struct Configuration: Sendable {
        /// The longest a signature may take, waiting for a session included.
        public var timeout: Duration
        public var failureThreshold: Int
        public var cooldown: Duration

        public init(timeout: Duration = .seconds(2), failureThreshold: Int = 3, cooldown: Duration = .seconds(5)) {
            self.timeout = timeout
            self.failureThreshold = failureThreshold
            self.cooldown = cooldown
        }
    }

    public let pool: any PKCS11SessionLender
    public let breaker: CircuitBreaker
    private let timeout: Duration
    private let time: MonotonicTime
    private let logger: Logger
    private let signingNanoseconds = Atomic<UInt64>(0)

    /// The CPU time the signing calls took on the session pool's threads: the PKCS#11 module's own work (with
    /// SoftHSM, in this process, the signature itself; with a network HSM, little more than the round trip's I/O).
    public var signingCPUTime: Duration { .nanoseconds(Int64(clamping: self.signingNanoseconds.load(ordering: .relaxed))) }

    public init(pool: any PKCS11SessionLender, configuration: Configuration = .init(), time: MonotonicTime, logger: Logger = Logger(label: "countersign.hsm")) {
        self.pool = pool
        self.timeout = configuration.timeout
        self.time = time
        self.logger = logger
        self.breaker = CircuitBreaker(failureThreshold: configuration.failureThreshold, cooldown: configuration.cooldown, time: time)
    }

    /// Signs a SHA-256 digest with a private key on the token; returns raw `r‖s`.
    ///
    /// - Throws: ``SigningError`` with `HSM_UNAVAILABLE` when the breaker is open, the token fails, or the
    ///   deadline passes.
    public func sign(digest: SHA256Digest, with privateKey: TokenKeyReference) async throws -> [UInt8] {
        let ticket: CircuitBreaker.Ticket
        switch self.breaker.admit() {
        case .refused(let retryAfter):
            throw SigningError(.hsmUnavailable, "the HSM is failing; high-value signing is paused (next probe in \(retryAfter.roundedUpToSeconds) s)")
        case .allowed(let admitted), .probe(let admitted):
            ticket = admitted
        }
        let pool = self.pool
        do {
            let signature = try await withDeadline(self.timeout, time: self.time) {
                try await pool.withSession { session in
                    let started = threadCPUNanoseconds()
                    defer {
                        let ended = threadCPUNanoseconds()
                        if ended > started { self.signingNanoseconds.add(ended - started, ordering: .relaxed) }
                    }
                    let handle = try privateKey.handle(in: session)
                    do {
                        return Array(try session.signECDSA(digest: digest, with: handle).rawRepresentation)
                    } catch let error as PKCS11Error where error.code == .objectHandleInvalid || error.code == .keyHandleInvalid {
                        // Handles of private objects do not survive a logout (SoftHSM renumbers them when the
                        // token's last session closes); find the key again by its CKA_ID.
                        let fresh = try privateKey.handle(in: session, refresh: true)
                        return Array(try session.signECDSA(digest: digest, with: fresh).rawRepresentation)
                    }
                }
            }
            self.breaker.recordSuccess(ticket)
            return signature
        } catch let error as DeadlineExceeded {
            self.breaker.recordFailure(ticket)
            self.logger.error("HSM signing timed out", metadata: ["timeout": "\(error.timeout)", "breaker": "\(self.breaker.currentState)"])
            throw SigningError(.hsmUnavailable, "the HSM did not answer within \(self.timeout)")
        } catch let error as SessionPoolError where error.code == .poolClosed {
            // Shutting down is not the token's fault.
            self.breaker.abandon(ticket)
            throw SigningError(.hsmUnavailable, "the server is shutting down")
        } catch let error as SessionPoolError where error.code == .recovering {
            // Nothing was sent to the token: the breaker has nothing to learn from this.
            self.breaker.abandon(ticket)
            throw SigningError(.hsmUnavailable, "the HSM is being re-initialized after the token was lost; retry shortly")
        } catch let error as SessionPoolError where error.code == .tokenLost {
            self.breaker.abandon(ticket)
            throw SigningError(.hsmUnavailable, "the HSM token was lost and cannot be recovered without the operator; the server log has the details")
        } catch {
            self.breaker.recordFailure(ticket)
            // The details (function, return code, key id) are for the operator's log, not for the agent.
            self.logger.error("HSM signing failed", metadata: ["error": "\(error)", "breaker": "\(self.breaker.currentState)"])
            let code = (error as? PKCS11Error).map { " (\($0.code.name ?? "vendor error"))" } ?? ""
            throw SigningError(.hsmUnavailable, "the HSM could not sign\(code); the server log has the details")
        }
    }
}

/// A private key on the token, found by its `CKA_ID`; the handle is cached and looked up again when the
/// token no longer knows it or the module was re-initialized since (handles belong to one initialization,
/// and a stale one could name another object).
public final class TokenKeyReference: Sendable {
    public let id: [UInt8]
    private let cached = Mutex<(handle: ObjectHandle, epoch: UInt64)?>(nil)

    /// A key to be found by `id` when first used.
    public init(id: [UInt8]) {
        self.id = id
    }

    /// A key just found (or made) as `handle` in `session`.
    public init(id: [UInt8], handle: ObjectHandle, foundIn session: borrowing PKCS11Session) {
        self.id = id
        self.cached.withLock { $0 = (handle, session.token.module.epoch) }
    }

    /// The key's handle in `session`, from the cache when it was found in the module's current epoch.
    public func handle(in session: borrowing PKCS11Session, refresh: Bool = false) throws -> ObjectHandle {
        let epoch = session.token.module.epoch
        if !refresh, let cached = self.cached.withLock({ $0 }), cached.epoch == epoch {
            return cached.handle
        }
        let handle = try session.findKey(.privateKey, id: self.id)
        self.cached.withLock { $0 = (handle, epoch) }
        return handle
    }
}

/// A P-256 signing key version on the HSM.
public struct HSMSigningKey: AuthorizationSigningKey {
    public let keyID: KeyID
    public let publicKeyX963: Data
    public var backend: KeyBackend { .hsm }
    public let privateKey: TokenKeyReference
    private let signer: HSMSigner

    public init(keyID: KeyID, publicKeyX963: Data, privateKey: TokenKeyReference, signer: HSMSigner) {
        self.keyID = keyID
        self.publicKeyX963 = publicKeyX963
        self.privateKey = privateKey
        self.signer = signer
    }

    public func sign(_ message: [UInt8]) async throws -> [UInt8] {
        try await self.signer.sign(digest: SHA256.hash(data: message), with: self.privateKey)
    }
}

/// The calling thread's CPU time so far (0 if the clock cannot be read: then nothing is counted).
private func threadCPUNanoseconds() -> UInt64 {
    var now = timespec()
    guard clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now) == 0 else { return 0 }
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

extension Duration {
    var roundedUpToSeconds: Int64 {
        let (seconds, attoseconds) = self.components
        return attoseconds > 0 ? seconds + 1 : seconds
    }
}
