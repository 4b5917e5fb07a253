import Audit
import CountersignConfiguration
import Crypto
import Foundation
import HSMSigning
import Ledger
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PKCS11
import Policy
import PostgresLedger
import ServiceLifecycle
import Signing
import Wire

/// What the server takes from its surroundings; tests replace any of it.
public struct ServerEnvironment: Sendable {
    /// Deadlines are timers on NIO's shared event loops.
    public var time: MonotonicTime = .eventLoops()
    public var wallClock: WallClock = .system
    public var random: RandomSource = .system
    public var logger = Logger(label: "countersign")
    /// A module to use instead of loading `hsm.module` (tests inject faults through one).
    public var pkcs11Module: PKCS11Module?
    /// Whether a recovery may finalize and initialize `pkcs11Module` (only when nothing else uses it).
    public var reinitializesInjectedModule = false
    public var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

    public init() {}
}

/// The assembled server: store, HSM, keys, principals and both listeners, as services for one `ServiceGroup`.
public final class CountersignApplication: Sendable {
    public let configuration: ServerConfiguration
    public let store: any Store
    public let hsm: HSMRuntime
    public let keyRing: KeyRing
    public let framedServer: FramedServer
    public let httpServer: HTTPServer
    public let metrics: ServerMetrics
    /// Held for the application's life: no second server (nor `init`) can write this data directory meanwhile.
    let dataLock: DataDirectoryLock
    let keyRotation: KeyRotationService
    let checkpointer: Checkpointer
    let clusterFollower: ClusterFollower
    let logger: Logger

    /// Opens the store, logs in to the HSM, loads every tier's key and the principals.
    /// - Throws: ``StartupError``, ``ConfigurationError`` or an HSM error, each with a reason to act on.
    public init(configuration: ServerConfiguration, pin: PIN, environment: ServerEnvironment = .init()) async throws {
        try configuration.validateTransportSecurity()
        self.configuration = configuration
        self.logger = environment.logger
        (self.dataLock, self.store) = try await Self.openStore(configuration, environment: environment)
        self.hsm = try HSMRuntime(
            configuration: configuration.hsm, pin: pin, time: environment.time, logger: environment.logger, module: environment.pkcs11Module,
            reinitializesInjectedModule: environment.reinitializesInjectedModule
        )
        do {
            self.keyRing = try await KeyRing.load(
                tiers: configuration.tiers, store: self.store, hsm: self.hsm, random: environment.random, logger: environment.logger,
                policies: configuration.keyPolicies
            )
            self.hsm.requireKeys { [weak keyRing = self.keyRing] in keyRing?.tokenKeys ?? [] }
        } catch {
            await self.hsm.shutdown()
            await self.store.close()
            throw error
        }
        let latestCheckpoint: CheckpointRecord?
        do {
            latestCheckpoint = try await self.store.latestCheckpoint()
            let auditKeys = Self.auditKeys(self.keyRing)
            try Self.verifyLatestCheckpoint(latestCheckpoint, keys: auditKeys)
            if let path = configuration.audit.witnessFile {
                if !FileManager.default.fileExists(atPath: path), latestCheckpoint != nil {
                    environment.logger.warning(
                        "the witness file does not exist although checkpoints were signed before; it starts again with the next one (was it moved, or is its disk not mounted?)",
                        metadata: ["witness_file": "\(path)"]
                    )
                }
                try await WitnessFile(path: path).check(store: self.store, auditKeys: auditKeys)
            }
        } catch {
            await self.hsm.shutdown()
            await self.store.close()
            throw error
        }
        let principals = PrincipalDirectory(store: self.store, wallClock: environment.wallClock)
        try await principals.load()
        let metrics = ServerMetrics(tiers: configuration.tiers.tiers.map(\.name) + ["none"], requestTypes: MessageType.requests.compactMap(\.name).sorted())
        self.metrics = metrics
        if let latestCheckpoint { metrics.lastCheckpoint(at: latestCheckpoint.time) }
        let modes = try await Self.loadModes(store: self.store, policy: configuration.policy, logger: environment.logger)
        let store = self.store
        let startRecord = StartRecord {
            try await store.appendAudit { index in
                AuditEntry(
                    index: index, time: environment.wallClock.secondsSince1970, kind: "server", action: "server.start", actor: "server",
                    details: [
                        "policy_version": configuration.policy.version, "issuer": configuration.issuer, "listen": "\(configuration.listen)",
                        "tiers": configuration.tiers.tiers.map(\.name).joined(separator: ","),
                    ]
                )
            }
        }
        let checkpointer = Checkpointer(
            store: self.store, keyRing: self.keyRing, origin: configuration.audit.origin ?? "\(configuration.issuer)/audit",
            interval: configuration.audit.checkpointInterval, everyEntries: configuration.audit.checkpointEntries, wallClock: environment.wallClock,
            time: environment.time, logger: environment.logger, startRecord: startRecord, metrics: metrics,
            witness: configuration.audit.witnessFile.map(WitnessFile.init(path:)),
            witnessServer: try configuration.audit.witness.map {
                try WitnessClient(configuration: $0, store: store, metrics: metrics, logger: environment.logger)
            }
        )
        self.checkpointer = checkpointer
        do {
            try await checkpointer.checkWithWitness()
        } catch {
            await self.hsm.shutdown()
            await self.store.close()
            throw error
        }
        let (services, notifier) = Services.assemble(
            store: self.store, keyRing: self.keyRing, principals: principals, modes: modes, checkpoints: checkpointer, configuration: configuration,
            environment: environment, metrics: metrics
        )
        let requests = RequestHandler(
            services: services, time: environment.time, metrics: metrics, logger: environment.logger,
            logReaders: configuration.limits.maximumLogReaders, logReadShare: configuration.limits.logReadShare
        )
        let connections = ConnectionHandler(
            requests: requests, principals: principals, limits: configuration.limits, time: environment.time, random: environment.random,
            metrics: metrics, logger: environment.logger
        )
        self.keyRotation = KeyRotationService(keyRing: self.keyRing, wallClock: environment.wallClock, time: environment.time, logger: environment.logger)
        self.clusterFollower = ClusterFollower(
            store: self.store, principals: principals, modes: modes, policy: configuration.policy, keyRing: self.keyRing, notifier: notifier,
            logger: environment.logger
        )
        let keyRing = self.keyRing
        let hsm = self.hsm
        let stopping = ShutdownFlag()
        self.httpServer = try HTTPServer(
            endpoint: configuration.http,
            routes: HTTPServer.Routes(
                keySet: { keyRing.keySet },
                metrics: {
                    metrics.update(await Self.snapshot(hsm: hsm, store: store, policy: configuration.policy, now: environment.wallClock.secondsSince1970))
                    return metrics.exposition()
                },
                notReadyBecause: {
                    guard !stopping.isSet else { return "shutting down" }
                    guard startRecord.isWritten else { return "starting: the start is not yet in the audit log" }
                    if let reason = await store.notReadyBecause() { return reason }
                    // The details (codes, key ids) are in the server log, not on this port.
                    switch hsm.sessions.health {
                    case .serving: break
                    case .recovering: return "the HSM token was lost; recovering (see the server log)"
                    case .failed: return "the HSM token was lost and cannot be recovered without the operator (see the server log)"
                    case .closed: return "shutting down"
                    }
                    guard await hsm.isReady() else { return "the HSM does not answer, or a key it must hold is missing" }
                    return nil
                }
            ),
            console: services.console, tls: configuration.console?.tls,
            group: environment.eventLoopGroup,
            logger: environment.logger
        )
        let httpServer = self.httpServer
        self.framedServer = FramedServer(
            endpoint: configuration.listen, tls: try configuration.tls.map(Self.tlsContext), limits: configuration.limits,
            connectionHandler: connections, group: environment.eventLoopGroup, metrics: metrics, logger: environment.logger,
            beforeServing: {
                // Nothing is written before every port is bound: a process that cannot listen leaves no trace.
                _ = try await httpServer.localAddress
                try await startRecord.record()
            },
            onShutdown: {
                stopping.set()
                notifier.close()
            }
        )
    }

    /// After the service group has ended, however it ended: the HSM is shut down and the data directory let
    /// go (both at most once; a graceful stop has done it already, in order).
    public func finish() async {
        await self.hsm.shutdown()
        await self.store.close()
        self.dataLock.release()
    }

    /// The services in start order; `ServiceGroup` stops them in reverse: the framed listener first (in-flight
    /// requests are answered), then HTTP, the checkpointer (the stop is logged), then the HSM (sessions closed,
    /// module finalized), and last the store (its connections) and the data directory's lock.
    public var services: [any Service] {
        [
            DataDirectoryService(lock: self.dataLock, store: self.store), HSMShutdownService(hsm: self.hsm), self.checkpointer, self.clusterFollower,
            self.keyRotation, self.httpServer, self.framedServer,
        ]
    }

    /// The store's log was checked against its latest checkpoint when it opened; here that checkpoint's own
    /// signature is checked with the audit key, so a rewritten log with a checkpoint made to match is refused too.
    static func verifyLatestCheckpoint(_ latest: CheckpointRecord?, keys: [P256.Signing.PublicKey]) throws {
        guard let latest else { return }
        guard let signed = try? Checkpoint.parse(latest.note), keys.contains(where: signed.isSigned(by:)) else {
            throw StartupError(
                "the audit log's latest checkpoint (\(latest.size) entries, at \(latest.time)) is not signed by the audit key: the store was changed. "
                    + "`countersign audit verify --store <file>` shows every difference; restore the store from a backup that verifies."
            )
        }
    }

    /// Verifies the whole audit log against every signed checkpoint in the store (and the witness file's, if one
    /// is configured), as `countersign audit verify` does offline: each checkpoint's signature by an audit key
    /// version, each entry against its leaf hash and index, each checkpoint's root over the entries it covers.
    /// The start-up check covers the latest checkpoint only; this covers every one.
    ///
    /// - Parameter progress: called every `progressEvery` entries with the count done and the total.
    /// - Throws: ``StartupError`` naming the first index that is not as signed.
    public func verifyWholeLog(progressEvery: Int = 100_000, progress: @escaping (Int, Int) -> Void = { _, _ in }) async throws -> AuditVerifier.Report {
        let log: StoredAuditLog
        switch self.configuration.store {
        case .sqlite:
            log = try .file((self.configuration.dataDirectory as NSString).appendingPathComponent("countersign.sqlite"))
        case .postgres(let settings):
            log = try await .postgres(PostgresStoreConfiguration(settings), logger: self.logger)
        }
        var notes = log.notes
        if let witness = self.configuration.audit.witnessFile, let last = try WitnessFile(path: witness).last() {
            notes.append(last)
        }
        do {
            // Every version the audit key ever had, retired and destroyed ones too: their public halves still vouch for
            // the checkpoints they signed.
            let keys = try await self.store.keyVersions().filter { $0.name == KeyRing.auditKeyName }.compactMap {
                try? P256.Signing.PublicKey(x963Representation: $0.publicKey)
            }
            return try AuditVerifier(publicKeys: keys).verify(
                checkpoints: notes, forEachEntry: log.forEachEntry, progressEvery: progressEvery
            ) { progress($0, log.count) }
        } catch let problem as AuditVerifier.Problem {
            throw StartupError(
                "AUDIT_LOG_MISMATCH: the audit log is not the one that was signed, \(problem). The store was changed or damaged; "
                    + "`countersign audit verify --store <file>` shows it offline. Restore the store from a backup that verifies."
            )
        }
    }

    /// Every published version of the audit key.
    static func auditKeys(_ keyRing: KeyRing) -> [P256.Signing.PublicKey] {
        keyRing.keySet.keys.filter { $0.kid.hasPrefix("\(KeyRing.auditKeyName)/") }.compactMap { try? $0.publicKey() }
    }

    /// What a metrics scrape reads: the HSM pool and breaker, the store, pending approvals and every budget.
    static func snapshot(hsm: HSMRuntime, store: any Store, policy: PolicyEngine, now: Int64) async -> ServerMetrics.Snapshot {
        let statistics = hsm.sessions.statistics
        let breaker = hsm.signer.breaker
        var snapshot = ServerMetrics.Snapshot(
            hsmSessionsOpen: statistics.open, hsmSessionsInUse: statistics.inUse, hsmSessionWaiters: statistics.waiting,
            hsmBreakerOpen: { if case .closed = breaker.currentState { false } else { true } }(), hsmFailures: breaker.failureCount,
            hsmBreakerTrips: breaker.tripCount, auditEntries: store.auditSize, storeWriteFailures: store.writeFailures
        )
        (snapshot.storeCommits, snapshot.storeCommittedRecords) = store.groupCommitStatistics
        snapshot.hsmSigningCPUSeconds = hsm.signer.signingCPUTime.inSeconds
        switch hsm.sessions.health {
        case .serving, .closed: snapshot.hsmRecovering = 0
        case .recovering: snapshot.hsmRecovering = 1
        case .failed: snapshot.hsmRecovering = 2
        }
        snapshot.hsmRecoveries = hsm.sessions.recoveries
        snapshot.approvalsPending = (try? await store.pendingApprovals(now: now).count) ?? 0
        for budget in policy.budgets.budgets {
            for (currency, limit) in budget.limits.sorted(by: { $0.key < $1.key }) where limit > 0 {
                guard let spent = try? await store.spent(scope: budget.scope, currency: currency, since: budget.window.start(at: now), now: now) else {
                    continue
                }
                snapshot.budgets.append((budget.scope.key, budget.window.versionKey, currency, Double(spent) / Double(limit)))
            }
        }
        return snapshot
    }

    /// The modes admins switched on before the restart; a mode no longer in the configuration is dropped.
    static func loadModes(store: any Store, policy: PolicyEngine, logger: Logger) async throws -> ContextModes {
        let stored = try await store.setting(ContextModes.setting).flatMap { try? JSONDecoder().decode([String].self, from: $0) } ?? []
        let known = Set(policy.contexts.filter(\.isMode).map(\.name))
        let active = Set(stored).intersection(known)
        if !active.isEmpty { logger.notice("modes in force", metadata: ["modes": "\(active.sorted())"]) }
        return ContextModes(active: active)
    }

    /// Locks the data directory (creating it if needed), then opens the store: the SQLite file in it, or the
    /// cluster's PostgreSQL database.
    static func openStore(_ configuration: ServerConfiguration, environment: ServerEnvironment) async throws -> (DataDirectoryLock, any Store) {
        let dataDirectory = configuration.dataDirectory
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw StartupError("cannot create the data directory '\(dataDirectory)': \(error.localizedDescription)")
        }
        let lock: DataDirectoryLock
        do {
            lock = try DataDirectoryLock(directory: dataDirectory)
        } catch let error as LedgerError {
            throw StartupError(error.reason)
        }
        do {
            switch configuration.store {
            case .sqlite:
                return (lock, try LedgerStore(path: (dataDirectory as NSString).appendingPathComponent("countersign.sqlite"), wallClock: environment.wallClock))
            case .postgres(let postgres):
                let store = try await PostgresStore(
                    configuration: PostgresStoreConfiguration(postgres), logger: environment.logger, wallClock: environment.wallClock, time: environment.time)
                return (lock, store)
            }
        } catch {
            lock.release()
            throw error
        }
    }

    static func tlsContext(_ tls: ServerConfiguration.TLS) throws -> NIOSSLContext {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(tls.certificatePath).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: tls.privateKeyPath, format: .pem)
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            configuration.minimumTLSVersion = .tlsv12
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw StartupError("cannot load the TLS certificate '\(tls.certificatePath)' and key '\(tls.privateKeyPath)': \(error)")
        }
    }
}
