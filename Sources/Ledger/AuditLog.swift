import Audit
import CountersignCore
import Foundation
import GRDB
import Policy
import Synchronization

/// An audit entry at its reserved index, as canonical JSON.
public struct AuditWrite: Sendable, Hashable {
    public var index: Int64
    public var entry: Data
    /// RFC 6962 leaf hash of `entry`, computed by the request's own task rather than in the serialized commit.
    public var leafHash: [UInt8]

    public init(_ entry: AuditEntry) {
        self.index = entry.index
        self.entry = entry.canonicalJSON
        self.leafHash = Merkle.leafHash(self.entry)
    }
}

/// What an authorization's audit entry becomes if the commit does not store the authorization.
public struct AuditAlternatives: Sendable {
    /// The entry when a budget check fails at the commit.
    public var overLimit: @Sendable (_ index: Int64) -> AuditEntry
    /// The entry when a concurrent request with the same idempotency key was recorded first.
    public var duplicate: @Sendable (_ index: Int64, _ recordedID: String) -> AuditEntry

    public init(overLimit: @escaping @Sendable (Int64) -> AuditEntry, duplicate: @escaping @Sendable (Int64, String) -> AuditEntry) {
        self.overLimit = overLimit
        self.duplicate = duplicate
    }
}

/// Hands out audit indices and keeps the tree over the contiguous prefix of committed entries.
///
/// An index is reserved before the authorization is signed (its claims carry it) and written with the
/// decision in the group commit. Entries may commit out of order; the tree, and so every checkpoint, covers
/// only the prefix with no gap. An index whose write failed is a hole, filled with a `lost` entry by the next
/// transaction (or at the next start), so the log never has a permanent gap.
package final class AuditSequencer: Sendable {
    private struct State {
        var next: Int64
        var frontier = MerkleFrontier()
        /// Committed beyond the contiguous prefix, by index.
        var waiting: [Int64: Merkle.Hash] = [:]
        var holes: [Int64] = []
    }

    private let state: Mutex<State>

    init(next: Int64, frontier: MerkleFrontier) {
        self.state = Mutex(State(next: next, frontier: frontier))
    }

    func reserve() -> Int64 {
        self.state.withLock { state in
            defer { state.next += 1 }
            return state.next
        }
    }

    /// How many indexes this process has handed out (the next index to reserve).
    var reservedCount: Int64 {
        self.state.withLock { $0.next }
    }

    func committed(_ writes: [AuditWrite]) {
        self.state.withLock { state in
            for write in writes { state.waiting[write.index] = write.leafHash }
            while let hash = state.waiting.removeValue(forKey: Int64(state.frontier.size)) {
                state.frontier.append(hash)
            }
        }
    }

    func lost(_ indices: [Int64]) {
        self.state.withLock { $0.holes += indices }
    }

    func takeHoles() -> [Int64] {
        self.state.withLock { state in
            defer { state.holes = [] }
            return state.holes
        }
    }

    /// The size of the contiguous prefix (cheap: no hashing).
    var size: Int {
        self.state.withLock { $0.frontier.size }
    }

    /// The size and root of the contiguous prefix.
    var head: (size: Int, root: Merkle.Hash) {
        self.state.withLock { ($0.frontier.size, $0.frontier.root) }
    }

    /// The entry that fills a hole.
    package static func filler(index: Int64, at time: Int64) -> AuditWrite {
        AuditWrite(
            AuditEntry(
                index: index, time: time, kind: "server", action: "lost", actor: "server",
                details: ["reason": "the decision reserved at this index was never recorded (store failure or crash); its request got no authorization"]
            )
        )
    }
}

/// A stored, signed checkpoint. Several may state the same size: an idle log is still checkpointed.
public struct CheckpointRecord: Codable, Sendable, Hashable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "checkpoint"

    public var id: Int64?
    public var size: Int
    public var rootHash: Data
    public var time: Int64
    /// The signed note.
    public var note: String
    /// The audit key version that signed it (`''` for checkpoints stored before this was recorded).
    public var kid: String

    enum CodingKeys: String, CodingKey {
        case id, size, rootHash, time, note, kid
    }

    /// Stores written before the `kid` column (read-only copies, archived backups) still read.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.id = try container.decodeIfPresent(Int64.self, forKey: .id)
        self.size = try container.decode(Int.self, forKey: .size)
        self.rootHash = try container.decode(Data.self, forKey: .rootHash)
        self.time = try container.decode(Int64.self, forKey: .time)
        self.note = try container.decode(String.self, forKey: .note)
        self.kid = try container.decodeIfPresent(String.self, forKey: .kid) ?? ""
    }

    public init(size: Int, rootHash: Data, time: Int64, note: String, kid: String) {
        self.id = nil
        self.size = size
        self.rootHash = rootHash
        self.time = time
        self.note = note
        self.kid = kid
    }
}

extension LedgerStore {
    /// Reserves the next audit index; the caller must write it (``recordAuthorization``, ``recordRefusal``,
    /// ``appendAudit(_:)``) or it becomes a `lost` entry.
    public func reserveAuditIndex() -> Int64 {
        self.sequencer.reserve()
    }

    /// Appends an entry (admin actions, server events), durably, in the next group commit.
    /// - Returns: its index.
    @discardableResult
    public func appendAudit(_ make: (Int64) -> AuditEntry) async throws -> Int64 {
        let index = self.sequencer.reserve()
        _ = try await self.committer.commit(.audit(AuditWrite(make(index))))
        return index
    }

    /// Runs `body` in a write transaction that also stores `audit`; the entry's index is filled with a `lost`
    /// entry later if the transaction fails.
    public func writeAudited<T: Sendable>(_ audit: AuditWrite, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            let result = try await self.write { db in
                let result = try body(db)
                try Self.insertAudit(audit, in: db, at: self.wallClock.secondsSince1970)
                return result
            }
            self.sequencer.committed([audit])
            return result
        } catch {
            self.sequencer.lost([audit.index])
            throw error
        }
    }

    /// Writes the entry of an index reserved earlier, in the next group commit.
    public func recordAudit(_ entry: AuditEntry) async throws {
        _ = try await self.committer.commit(.audit(AuditWrite(entry)))
    }

    /// The size and root of the log's contiguous prefix, as the next checkpoint would state them.
    public var auditHead: (size: Int, root: Merkle.Hash) { self.sequencer.head }

    /// The number of entries in the log's contiguous prefix.
    public var auditSize: Int { self.sequencer.size }

    public func storeCheckpoint(_ checkpoint: CheckpointRecord) async throws {
        try await self.write { db in
            var checkpoint = checkpoint
            try checkpoint.insert(db)
        }
    }

    public func latestCheckpoint() async throws -> CheckpointRecord? {
        try await self.read { db in try CheckpointRecord.order(Column("id").desc).fetchOne(db) }
    }

    /// The latest checkpoint of exactly `size` entries.
    public func checkpoint(size: Int) async throws -> CheckpointRecord? {
        try await self.read { db in try CheckpointRecord.filter(Column("size") == size).order(Column("id").desc).fetchOne(db) }
    }

    public func checkpointCount() async throws -> Int {
        try await self.read { db in try CheckpointRecord.fetchCount(db) }
    }

    /// Entries `[from, from + limit)`, in order.
    public func auditEntries(from: Int64, limit: Int) async throws -> [(index: Int64, entry: Data)] {
        try await self.read { db in
            try Row.fetchAll(db, sql: "SELECT idx, entry FROM auditEntry WHERE idx >= ? ORDER BY idx LIMIT ?", arguments: [from, limit]).map {
                (index: $0["idx"], entry: $0["entry"])
            }
        }
    }

    /// The leaf hashes of the first `size` entries.
    public func auditLeafHashes(size: Int) async throws -> [Merkle.Hash] {
        try await self.read { db in
            try Data.fetchAll(db, sql: "SELECT leafHash FROM auditEntry WHERE idx < ? ORDER BY idx", arguments: [size]).map { Array($0) }
        }
    }

    /// Opens the log at start: the tree over the stored entries (hashed again from their bytes), and a `lost`
    /// entry in every gap a crash left.
    /// Reads the log back, checking it before anything is written: every entry must still match the leaf hash
    /// recorded with it, no index that the latest checkpoint covers may be missing, and the entries it covers
    /// must hash to its root. A server does not serve on a log it cannot vouch for (the checkpoint's signature
    /// is checked by the server, which has the audit key). Only then are the holes a crash left (past the
    /// checkpoint) filled with `lost` entries.
    /// - Throws: ``LedgerError`` `AUDIT_LOG_MISMATCH` saying what differs, at which index.
    static func openAuditLog(_ database: DatabasePool, now: Int64) throws -> AuditSequencer {
        try database.write { db in
            let latest = try CheckpointRecord.order(Column("id").desc).fetchOne(db)
            let stored = try Row.fetchAll(db, sql: "SELECT idx, entry, leafHash FROM auditEntry ORDER BY idx").map {
                StoredAuditEntry(index: $0["idx"], entry: $0["entry"], leafHash: $0["leafHash"])
            }
            let checked = try AuditLogCheck.verify(stored, latest: latest)
            guard !checked.holes.isEmpty else { return AuditSequencer(next: checked.next, frontier: checked.frontier) }
            // Holes past the checkpoint (a crash between reserving an index and committing it) become `lost`
            // entries, and the tree is built again with them in place.
            for index in checked.holes {
                try Self.insertAudit(AuditSequencer.filler(index: index, at: now), in: db, at: now)
            }
            var filled = MerkleFrontier()
            for row in try Row.fetchAll(db, sql: "SELECT leafHash FROM auditEntry ORDER BY idx") {
                filled.append(Array(row["leafHash"] as Data))
            }
            return AuditSequencer(next: checked.next, frontier: filled)
        }
    }

    static func insertAudit(_ write: AuditWrite, in db: Database, at now: Int64) throws {
        try db.cachedStatement(sql: "INSERT INTO auditEntry (idx, entry, leafHash, createdAt) VALUES (?, ?, ?, ?)")
            .execute(arguments: [write.index, write.entry, Data(write.leafHash), now])
    }
}

/// Reads a store's audit log without changing it, for `countersign audit verify`.
public final class AuditLogFile: Sendable {
    private let database: DatabaseQueue

    /// - Throws: when the file cannot be opened.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.readonly = true
        self.database = try DatabaseQueue(path: path, configuration: configuration)
    }

    public func entryCount() throws -> Int {
        try self.database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM auditEntry") ?? 0 }
    }

    /// Calls `body` with every stored row in index order: its stored index, entry bytes and stored leaf hash.
    public func forEachEntry(_ body: (Int64, Data, Data) throws -> Void) throws {
        try self.database.read { db in
            let cursor = try Row.fetchCursor(db, sql: "SELECT idx, entry, leafHash FROM auditEntry ORDER BY idx")
            while let row = try cursor.next() {
                try body(row["idx"], row["entry"], row["leafHash"])
            }
        }
    }

    public func checkpoints() throws -> [CheckpointRecord] {
        try self.database.read { db in try CheckpointRecord.order(Column("id")).fetchAll(db) }
    }
}

extension CheckpointRecord {
    public mutating func didInsert(_ inserted: InsertionSuccess) {
        self.id = inserted.rowID
    }
}

/// A stored audit log as ``AuditVerifier`` reads it: every checkpoint's signed note, the number of rows, and every
/// row in index order. From an SQLite file (``file(_:)``) or from a cluster's PostgreSQL database (PostgresLedger),
/// so that `countersign audit verify` and `countersignd serve --verify-log` read either the same way.
public struct StoredAuditLog: Sendable {
    public let notes: [String]
    public let count: Int
    private let rows: @Sendable ((Int64, Data, Data) throws -> Void) throws -> Void

    /// - Parameter rows: calls its argument with every row (stored index, entry bytes, stored leaf hash) in index order.
    public init(notes: [String], count: Int, rows: @escaping @Sendable ((Int64, Data, Data) throws -> Void) throws -> Void) {
        self.notes = notes
        self.count = count
        self.rows = rows
    }

    /// Calls `body` with every stored row in index order: its stored index, entry bytes and stored leaf hash.
    public func forEachEntry(_ body: (Int64, Data, Data) throws -> Void) throws {
        try withoutActuallyEscaping(body) { try self.rows($0) }
    }

    /// The log of the SQLite store at `path`, opened read-only.
    /// - Throws: when the file cannot be opened or read.
    public static func file(_ path: String) throws -> StoredAuditLog {
        let log = try AuditLogFile(path: path)
        return StoredAuditLog(notes: try log.checkpoints().map(\.note), count: try log.entryCount()) { try log.forEachEntry($0) }
    }
}
