import Audit
import Foundation
import Ledger
import Logging
import Policy
import Wire

/// The audit log over the protocol: checkpoints, inclusion and consistency proofs and entries for auditors, and
/// the record of every admin's and approver's action.
final class AuditDesk: Sendable {
    let store: any Store
    /// Told of every appended entry, so that a checkpoint follows every N entries; `nil` when the server keeps
    /// no audit log.
    let checkpoints: Checkpointer?
    let wallClock: WallClock
    let logger: Logger

    init(store: any Store, checkpoints: Checkpointer?, wallClock: WallClock, logger: Logger) {
        self.store = store
        self.checkpoints = checkpoints
        self.wallClock = wallClock
        self.logger = logger
    }

    private var checkpointer: Checkpointer {
        get throws(WireError) {
            guard let checkpoints = self.checkpoints else { throw WireError(.auditUnavailable, "this server keeps no audit log", retryable: false) }
            return checkpoints
        }
    }

    /// The latest checkpoint, signing one first if the log grew since.
    func latestCheckpoint(covering size: Int? = nil) async throws -> CheckpointRecord {
        let latest = try await storeRead { try await self.store.latestCheckpoint() }
        if let latest, latest.size >= (size ?? self.store.auditSize) { return latest }
        do {
            return try await self.checkpointer.checkpointNow()
        } catch let error as WireError {
            throw error
        } catch {
            throw WireError(.auditUnavailable, "a checkpoint could not be signed: \(error)", retryable: true)
        }
    }

    func auditCheckpoint() async throws -> AuditCheckpoint {
        let record = try await self.latestCheckpoint()
        return AuditCheckpoint(note: record.note, size: record.size, rootHash: record.rootHash.base64EncodedString(), time: record.time)
    }

    func auditProof(_ request: AuditProofRequest) async throws -> AuditInclusionProof {
        var index = request.index
        if let id = request.authorizationID {
            let record = try await storeRead { try await self.store.authorization(id: id) }
            guard let auditIndex = record?.auditIndex else { throw WireError(.authorizationNotFound, "no authorization '\(id)' in the audit log") }
            index = auditIndex
        }
        guard let index, index < Int64(self.store.auditSize) else {
            throw WireError(.invalidRequest, "index \(request.index ?? -1) is not in the log yet (it has \(self.store.auditSize) entries)")
        }
        let checkpoint = try await self.latestCheckpoint(covering: Int(index) + 1)
        let leaves = try await storeRead { try await self.store.auditLeafHashes(size: checkpoint.size) }
        let entry = try await storeRead { try await self.store.auditEntries(from: index, limit: 1) }
        guard leaves.count == checkpoint.size, let first = entry.first, first.index == index else {
            throw WireError(.auditUnavailable, "the log does not match its checkpoint; run countersign audit verify", retryable: false)
        }
        return AuditInclusionProof(
            index: index, entry: String(decoding: first.entry, as: UTF8.self), leafHash: Data(leaves[Int(index)]).base64EncodedString(),
            treeSize: checkpoint.size, auditPath: Merkle.inclusionProof(index: Int(index), leaves: leaves[...]).map { Data($0).base64EncodedString() },
            checkpoint: checkpoint.note
        )
    }

    func auditConsistency(_ request: AuditConsistencyRequest) async throws -> AuditConsistencyProof {
        guard let old = try await storeRead({ try await self.store.checkpoint(size: request.oldSize) }) else {
            throw WireError(.invalidRequest, "no checkpoint of \(request.oldSize) entries; consistency is proved between checkpoints")
        }
        let new: CheckpointRecord
        if let newSize = request.newSize {
            guard let found = try await storeRead({ try await self.store.checkpoint(size: newSize) }) else {
                throw WireError(.invalidRequest, "no checkpoint of \(newSize) entries")
            }
            new = found
        } else {
            new = try await self.latestCheckpoint()
        }
        let leaves = try await storeRead { try await self.store.auditLeafHashes(size: new.size) }
        return AuditConsistencyProof(
            oldSize: old.size, newSize: new.size,
            proof: Merkle.consistencyProof(oldSize: old.size, leaves: leaves[...]).map { Data($0).base64EncodedString() }, oldCheckpoint: old.note,
            newCheckpoint: new.note
        )
    }

    func auditEntries(_ request: AuditEntriesRequest) async throws -> AuditEntries {
        let rows = try await storeRead { try await self.store.auditEntries(from: request.from, limit: request.limit ?? 100) }
        // A page is the unit of work: a reader that left stops here, before its page is encoded.
        try Task.checkCancellation()
        return AuditEntries(entries: rows.map { .init(index: $0.index, entry: String(decoding: $0.entry, as: UTF8.self)) }, size: self.store.auditSize)
    }

    /// Logs an admin's or approver's action; the request fails with `AUDIT_UNAVAILABLE` if it cannot be logged.
    func logAction(_ action: String, by actor: String, subject: String?, details: [String: String]? = nil, kind: String = "admin") async throws {
        let now = self.wallClock.secondsSince1970
        do {
            try await self.store.appendAudit { index in
                AuditEntry(index: index, time: now, kind: kind, action: action, actor: actor, subject: subject, details: details)
            }
            self.checkpoints?.appended()
        } catch {
            self.logger.error("action not written to the audit log", metadata: ["action": "\(action)", "error": "\(error)"])
            throw WireError(.auditUnavailable, "\(action) was done but could not be written to the audit log", retryable: true)
        }
    }
}
