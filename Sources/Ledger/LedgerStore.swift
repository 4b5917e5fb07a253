import Audit
import CountersignCore
import Foundation
import GRDB
import Policy

/// The durable store: authorizations and their holds, principals, key versions, approvals, the audit log and settings
/// (SQLite through GRDB, WAL mode), one file per concern, the schema in Schema.swift.
///
/// Every method is async and runs on GRDB's own queues, never on an event loop. The schema is created
/// and migrated on open.
public final class LedgerStore: Store {
    public let path: String
    public var location: String { self.path }
    /// The time of the rows the store makes itself.
    let wallClock: WallClock
    let database: DatabasePool
    let committer: GroupCommitter
    let sequencer: AuditSequencer
    let keyFilter: KeyFilter
    let health = WriteHealth()

    /// Opens (creating if needed) the store at `path`.
    /// - Throws: ``LedgerError`` when the file cannot be opened or migrated.
    /// - Parameter wallClock: the time written with rows the store makes itself (`createdAt` of audit rows, `lost` fillers).
    public convenience init(path: String, wallClock: WallClock = .system) throws {
        try self.init(path: path, walTopUpInterval: 10, wallClock: wallClock)
    }

    /// - Parameter walTopUpInterval: transactions between the committer's WAL top-ups (see `WALCheckpointer`).
    @_spi(Testing) public init(path: String, walTopUpInterval: Int, wallClock: WallClock = .system) throws {
        self.path = path
        self.wallClock = wallClock
        Self.restrictMode(of: path)
        do {
            var configuration = Configuration()
            configuration.busyMode = .timeout(5)
            configuration.prepareDatabase { db in
                try db.execute(sql: "PRAGMA wal_autocheckpoint = \(WALCheckpointer.backstopPages)")
                // Every decision looks its idempotency key up in an index of random keys: a 16 MB page cache per
                // connection (instead of 2) keeps the indexes in memory rather than one pread per page.
                try db.execute(sql: "PRAGMA cache_size = -16384")
            }
            self.database = try DatabasePool(path: path, configuration: configuration)
            // WAL mode with NORMAL may lose the last commits on power loss; an answered request must not. GRDB
            // sets NORMAL on the writer after `prepareDatabase` has run, so FULL is set here, on the writer itself.
            try self.database.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
            try Self.migrator.migrate(self.database)
            self.sequencer = try Self.openAuditLog(self.database, now: wallClock.secondsSince1970)
            let pairs = try self.database.read { db in try Self.idempotencyPairs(in: db) }
            self.keyFilter = KeyFilter(pairs)
            self.committer = GroupCommitter(
                database: self.database, sequencer: self.sequencer, keyFilter: self.keyFilter,
                checkpointer: try WALCheckpointer(path: path, topUpInterval: walTopUpInterval),
                health: self.health, wallClock: wallClock
            )
        } catch let error as LedgerError {
            throw error
        } catch {
            throw LedgerError(.storeUnavailable, "cannot open the store at '\(path)': \(error)")
        }
    }

    /// The store holds the decision records, holds, principals' public keys and sealed software keys: it is
    /// readable by its owner only (0600), and so are the WAL and shared-memory files, which SQLite creates with
    /// the database file's mode. An existing file made with a looser mode is tightened.
    private static func restrictMode(of path: String) {
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
            chmod(path + suffix, 0o600)
        }
    }

    /// How many transactions the group committer ran, and for how many records.
    public var groupCommitStatistics: (transactions: Int, records: Int) { self.committer.statistics }

    /// Holds group commits back until ``resumeCommits()`` (for tests of grouping).
    @_spi(Testing) public func pauseCommits() { self.committer.pause() }
    @_spi(Testing) public func resumeCommits() { self.committer.resume() }
    @_spi(Testing) public var pendingCommits: Int { self.committer.pendingCount }
    /// Makes or brings the store at `path` up to the migration named `target`, and no further (tests of a later
    /// migration start from there).
    @_spi(Testing) public static func migrate(path: String, upTo target: String) throws {
        try Self.migrator.migrate(try DatabaseQueue(path: path), upTo: target)
    }

    /// The writer's `PRAGMA synchronous` (2 is FULL: every commit is synced before it returns).
    @_spi(Testing) public func writerSynchronousMode() async throws -> Int {
        try await self.database.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }
    /// WAL checkpoints completed so far (beside the writer or on it).
    @_spi(Testing) public var walCheckpoints: Int { self.committer.checkpointer?.completed ?? 0 }
    @_spi(Testing) public var walCheckpointRunning: Bool { self.committer.checkpointer?.isRunning ?? false }

    // MARK: Access

    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await self.database.read(body)
        } catch let error as LedgerError {
            throw error
        } catch {
            throw LedgerError(.storeUnavailable, "the store at '\(self.path)' could not be read: \(error)")
        }
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            let result = try await self.database.write(body)
            self.health.succeeded()
            return result
        } catch let error as LedgerError {
            // A refusal decided inside the transaction (not found, a conflict): the store itself is fine.
            throw error
        } catch is CancellationError {
            // The caller went away (a stop): the store itself is fine.
            throw LedgerError(.storeUnavailable, "the write to '\(self.path)' was cancelled")
        } catch {
            self.health.failed(error)
            throw LedgerError(.storeUnavailable, "the store at '\(self.path)' could not be written: \(error)")
        }
    }

    /// The only server of its store signs every checkpoint.
    public var leadsCheckpoints: Bool { true }

    /// GRDB closes the database when the store is released.
    public func close() async {}

    /// One server writes this store (the data directory's lock says so): nobody else changes anything.
    public func changes() -> AsyncStream<StoreChange> {
        AsyncStream { $0.finish() }
    }

    /// Store transactions that failed since it opened (each failed its writes closed).
    public var writeFailures: Int { self.health.failureCount }

    /// Why the store is not fit to serve, or `nil`: the last write failed (and none has succeeded since), the
    /// audit log on disk is ahead of this process's (another process wrote it), or a read fails.
    public func notReadyBecause() async -> String? {
        if let failure = self.health.failure {
            return "the last write to the store failed (\(failure))"
        }
        let stored: Int64?
        do {
            stored = try await self.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(idx) FROM auditEntry") }
        } catch {
            return "the store cannot be read (\(error))"
        }
        if let stored, stored >= Int64(self.sequencer.reservedCount) {
            return "the audit log holds index \(stored), which this server never reserved: another process wrote it"
        }
        return nil
    }
}
