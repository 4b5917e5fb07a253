import Audit
import CountersignCore
import Crypto
import Foundation
import Ledger
import Logging
import NIOPosix
import Policy
import ServiceLifecycle
import Signing
import Synchronization

/// Signs checkpoints of the audit log with the HSM's audit key: every `interval` (also when nothing
/// happened, so that silence itself is signed), after every `everyEntries` entries, and on demand for a
/// proof. At shutdown it logs the stop and signs a last checkpoint.
final class Checkpointer: Service, Sendable {
    let store: any Store
    let keyRing: KeyRing
    let origin: String
    let interval: Duration
    let everyEntries: Int
    let wallClock: WallClock
    let time: MonotonicTime
    let logger: Logger
    let startRecord: StartRecord
    let metrics: ServerMetrics
    let witness: WitnessFile?
    let witnessServer: WitnessClient?
    private let wake = ApprovalNotifier()
    private let lastSize = Mutex<Int>(-1)
    private let signing = SerialQueue()

    init(
        store: any Store, keyRing: KeyRing, origin: String, interval: Duration, everyEntries: Int, wallClock: WallClock, time: MonotonicTime, logger: Logger,
        startRecord: StartRecord, metrics: ServerMetrics, witness: WitnessFile? = nil, witnessServer: WitnessClient? = nil
    ) {
        self.witness = witness
        self.witnessServer = witnessServer
        self.startRecord = startRecord
        self.metrics = metrics
        self.store = store
        self.keyRing = keyRing
        self.origin = origin
        self.interval = interval
        self.everyEntries = everyEntries
        self.wallClock = wallClock
        self.time = time
        self.logger = logger
    }

    /// An entry was appended: wake the loop once `everyEntries` have gathered since the last checkpoint.
    func appended() {
        let last = self.lastSize.withLock { $0 }
        if self.store.auditSize - max(last, 0) >= self.everyEntries { self.wake.changed("checkpoint") }
    }

    /// What happens with a new checkpoint and the witness (`audit.witness`), if there is one.
    enum WitnessDelivery {
        /// Sent in the background (the newest waiting one is sent).
        case background
        /// Sent before this returns, as at the stop.
        case wait
        /// Not sent: the caller sends it and reads the outcome (the start).
        case none
    }

    /// Signs and stores a checkpoint of the log as it is now.
    @discardableResult
    func checkpointNow(witness delivery: WitnessDelivery = .background) async throws -> CheckpointRecord {
        try await self.signing.run {
            guard let key = self.keyRing.auditKey else { throw StartupError("no active audit key") }
            let head = self.store.auditHead
            let checkpoint = Checkpoint(origin: self.origin, size: head.size, rootHash: head.root, time: self.wallClock.secondsSince1970)
            let raw = try await key.sign(Array(checkpoint.body.utf8))
            let signature = try P256.Signing.ECDSASignature(rawRepresentation: raw)
            let publicKey = try P256.Signing.PublicKey(x963Representation: key.publicKeyX963)
            let record = CheckpointRecord(
                size: head.size, rootHash: Data(head.root), time: checkpoint.time,
                note: checkpoint.note(keyName: self.origin, publicKey: publicKey, signature: signature),
                kid: key.keyID.kid
            )
            try await self.store.storeCheckpoint(record)
            if let witness = self.witness {
                do {
                    // A synced file write: on a thread of its own, not on the event loop that runs this task.
                    let note = record.note
                    try await NIOThreadPool.singleton.runIfActive { try witness.append(note) }
                } catch {
                    // The checkpoint is signed and stored; only its copy elsewhere is missing, and the next one covers it.
                    self.logger.error("checkpoint not kept in the witness file", metadata: ["error": "\(error)"])
                }
            }
            _ = self.keyRing.countSignature(key.keyID)
            self.metrics.checkpointSigned(at: checkpoint.time)
            self.lastSize.withLock { $0 = head.size }
            switch (self.witnessServer, delivery) {
            case (let witness?, .background):
                // Off the signing path: a slow witness delays nobody's proof.
                witness.offer(record)
            case (let witness?, .wait):
                await witness.submit(record)
            case (nil, _), (_, .none):
                break
            }
            return record
        }
    }

    /// At start, before serving: a checkpoint of the log as stored, sent to the witness. A witness that refuses it
    /// (the store was rolled back or rewritten since it cosigned) stops the start; one that cannot be reached does
    /// not (it is told at the next checkpoint).
    /// - Throws: ``StartupError`` `AUDIT_LOG_MISMATCH` when the witness refuses the log.
    func checkWithWitness() async throws {
        guard let witness = self.witnessServer else { return }
        let record = try await self.checkpointNow(witness: .none)
        switch await witness.submit(record) {
        case .cosigned, .covered:
            return
        case .unreachable(let reason):
            self.logger.warning("the witness could not be asked at start; serving, and asking again at the next checkpoint", metadata: ["error": "\(reason)"])
        case .refused(let reason):
            throw StartupError(
                "AUDIT_LOG_MISMATCH: the witness \(witness.cosigner.name) refuses this audit log: \(reason). The store is not the one whose "
                    + "checkpoints it cosigned; restore the store from a backup that extends them (`countersign audit verify --store <file> --from-checkpoint …`)."
            )
        }
    }

    /// Pending approvals past their deadline become `expired` decisions in the log.
    private func expireApprovals() async throws {
        let now = self.wallClock.secondsSince1970
        let expired = try await self.store.expirePendingApprovals(at: now) { index, record in
            AuditEntry(
                index: index, time: now, kind: "decision", action: "expired", actor: "server", subject: record.id,
                decision: DecisionSummary(
                    outcome: "expired", code: "APPROVAL_EXPIRED", amount: record.amount, currency: record.currency, merchant: record.merchant, tier: record.tier
                )
            )
        }
        for record in expired {
            self.logger.notice("approval expired", metadata: ["authorization": "\(record.id)", "agent": "\(record.agent)"])
        }
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let generation = self.wake.generation
                await self.wake.wait(for: "checkpoint", since: generation, timeout: self.interval, time: self.time)
                if Task.isCancelled { break }
                // In a cluster one server (the lease's holder) expires approvals and signs the periodic checkpoints.
                guard self.store.leadsCheckpoints else { continue }
                do {
                    try await self.expireApprovals()
                    try await self.checkpointNow()
                } catch {
                    self.metrics.checkpointFailed()
                    self.logger.error("checkpoint not signed", metadata: ["error": "\(error)"])
                }
            }
        }
        // A server that never started (a port in use, another process on the data directory) stops without a trace.
        guard self.startRecord.isWritten else { return }
        do {
            try await self.store.appendAudit { index in
                AuditEntry(index: index, time: self.wallClock.secondsSince1970, kind: "server", action: "server.stop", actor: "server")
            }
        } catch {
            self.logger.error("the stop could not be written to the audit log", metadata: ["error": "\(error)"])
            return
        }
        do {
            try await self.checkpointNow(witness: .wait)
            self.logger.notice("the stop is in the audit log, under a signed checkpoint")
        } catch {
            self.logger.error("the stop is in the audit log, but its checkpoint could not be signed", metadata: ["error": "\(error)"])
        }
    }
}

/// The `server.start` audit entry, written once every listener is bound and before the first connection is
/// served; the stop is written only after it.
final class StartRecord: Sendable {
    private let write: @Sendable () async throws -> Void
    private let written = Atomic<Bool>(false)

    init(_ write: @escaping @Sendable () async throws -> Void) {
        self.write = write
    }

    func record() async throws {
        try await self.write()
        self.written.store(true, ordering: .releasing)
    }

    var isWritten: Bool { self.written.load(ordering: .acquiring) }
}
