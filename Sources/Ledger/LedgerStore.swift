import Audit
import CountersignCore
import Foundation
import GRDB
import Policy

/// The durable store: principals and key versions (SQLite through GRDB, WAL mode).
///
/// Every method is async and runs on GRDB's own queues, never on an event loop. The schema is created
/// and migrated on open.
public final class LedgerStore: Sendable {
    public let path: String
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
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if descriptor >= 0 { close(descriptor) }
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
            chmod(path + suffix, 0o600)
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: principals and key versions") { db in
            try db.create(table: "principal") { table in
                table.primaryKey("id", .text)
                table.column("role", .text).notNull()
                table.column("algorithm", .text).notNull()
                table.column("publicKey", .blob).notNull()
                table.column("createdAt", .integer).notNull()
                table.column("revokedAt", .integer)
            }
            try db.create(table: "keyVersion") { table in
                table.column("name", .text).notNull()
                table.column("version", .integer).notNull()
                table.column("backend", .text).notNull()
                table.column("state", .text).notNull()
                table.column("publicKey", .blob).notNull()
                table.column("sealedPrivateKey", .blob)
                table.column("hsmLabel", .text)
                table.column("hsmID", .blob)
                table.column("createdAt", .integer).notNull()
                table.primaryKey(["name", "version"])
            }
        }
        migrator.registerMigration("v1: settings") { db in
            try db.create(table: "setting") { table in
                table.primaryKey("name", .text)
                table.column("value", .blob).notNull()
            }
        }
        migrator.registerMigration("v2: authorizations") { db in
            try db.create(table: "authorization") { table in
                table.primaryKey("id", .text)
                table.column("agent", .text).notNull()
                table.column("idempotencyKey", .text).notNull()
                table.column("requestHash", .blob).notNull()
                table.column("response", .blob).notNull()
                table.column("amount", .integer).notNull()
                table.column("currency", .text).notNull()
                table.column("tier", .text).notNull()
                table.column("kid", .text).notNull()
                table.column("expiresAt", .integer).notNull()
                table.column("createdAt", .integer).notNull()
                table.uniqueKey(["agent", "idempotencyKey"])
            }
        }
        migrator.registerMigration("v3: spending index") { db in
            try db.create(index: "authorization_spending", on: "authorization", columns: ["agent", "currency", "createdAt"])
        }
        migrator.registerMigration("v4: voids") { db in
            try db.alter(table: "authorization") { table in table.add(column: "voidedAt", .integer) }
        }
        migrator.registerMigration("v5: holds at every scope, approvals, refusals") { db in
            try db.alter(table: "authorization") { table in
                table.add(column: "merchant", .text).notNull().defaults(to: "")
                table.add(column: "status", .text).notNull().defaults(to: "authorized")
                table.add(column: "decision", .blob)
                table.add(column: "request", .blob)
                table.add(column: "quorum", .integer)
                table.add(column: "approvalExpiresAt", .integer)
            }
            try db.create(index: "authorization_merchant", on: "authorization", columns: ["agent", "merchant", "currency", "createdAt"])
            try db.create(index: "authorization_status", on: "authorization", columns: ["status"])
            try db.create(table: "hold") { table in
                table.column("authorizationID", .text).notNull().references("authorization", onDelete: .cascade)
                table.column("scope", .text).notNull()
                table.column("currency", .text).notNull()
                table.column("amount", .integer).notNull()
                table.column("createdAt", .integer).notNull()
                table.column("expiresAt", .integer)
                table.column("releasedAt", .integer)
                table.primaryKey(["authorizationID", "scope"])
            }
            try db.create(index: "hold_spending", on: "hold", columns: ["scope", "currency", "createdAt"])
            try db.execute(
                sql: """
                    INSERT INTO hold (authorizationID, scope, currency, amount, createdAt, expiresAt, releasedAt)
                    SELECT id, 'agent:' || agent, currency, amount, createdAt, NULL, voidedAt FROM authorization
                    """
            )
            try db.create(table: "approval") { table in
                table.column("authorizationID", .text).notNull().references("authorization", onDelete: .cascade)
                table.column("approver", .text).notNull()
                table.column("verdict", .text).notNull()
                table.column("decidedAt", .integer).notNull()
                table.primaryKey(["authorizationID", "approver"])
            }
            try db.create(table: "refusal") { table in
                table.autoIncrementedPrimaryKey("id")
                table.column("agent", .text).notNull()
                table.column("idempotencyKey", .text).notNull()
                table.column("code", .text).notNull()
                table.column("decision", .blob).notNull()
                table.column("createdAt", .integer).notNull()
            }
            try db.create(index: "refusal_time", on: "refusal", columns: ["createdAt"])
        }
        migrator.registerMigration("v6: key lifecycle, credential rotation") { db in
            try db.alter(table: "keyVersion") { table in
                table.add(column: "activatedAt", .integer)
                table.add(column: "rotatedAt", .integer)
                table.add(column: "retiredAt", .integer)
                table.add(column: "destroyedAt", .integer)
                table.add(column: "adopted", .boolean).notNull().defaults(to: false)
            }
            try db.execute(sql: "UPDATE keyVersion SET activatedAt = createdAt WHERE state = 'active'")
            try db.create(table: "keyDestruction") { table in
                table.primaryKey("kid", .text)
                table.column("requestedBy", .text).notNull()
                table.column("requestedAt", .integer).notNull()
                table.column("expiresAt", .integer).notNull()
            }
            try db.alter(table: "principal") { table in
                table.add(column: "previousAlgorithm", .text)
                table.add(column: "previousPublicKey", .blob)
                table.add(column: "previousKeyExpiresAt", .integer)
            }
            try db.create(index: "authorization_kid", on: "authorization", columns: ["kid", "expiresAt"])
        }
        migrator.registerMigration("v7: audit log") { db in
            try db.create(table: "auditEntry") { table in
                table.primaryKey("idx", .integer)
                table.column("entry", .blob).notNull()
                table.column("leafHash", .blob).notNull()
                table.column("createdAt", .integer).notNull()
            }
            try db.create(table: "checkpoint") { table in
                table.autoIncrementedPrimaryKey("id")
                table.column("size", .integer).notNull()
                table.column("rootHash", .blob).notNull()
                table.column("time", .integer).notNull()
                table.column("note", .text).notNull()
            }
            try db.create(index: "checkpoint_size", on: "checkpoint", columns: ["size"])
            try db.alter(table: "authorization") { table in table.add(column: "auditIndex", .integer) }
            try db.alter(table: "refusal") { table in table.add(column: "auditIndex", .integer) }
        }
        migrator.registerMigration("v8: a partial index for pending approvals") { db in
            // An index on status alone made SQLite scan every authorized row to answer "paid this merchant
            // before?" (found by `countersign bench`); pending approvals are few, so index only them.
            try db.drop(index: "authorization_status")
            try db.execute(sql: "CREATE INDEX authorization_pending ON authorization(approvalExpiresAt) WHERE status = 'pending_approval'")
        }
        migrator.registerMigration("v9: the key that signed each checkpoint") { db in
            // So the audit key's signatures are counted like any other key's (checkpoints before this: '').
            try db.alter(table: "checkpoint") { table in table.add(column: "kid", .text).notNull().defaults(to: "") }
        }
        return migrator
    }

    // MARK: Authorizations

    /// Records an authorization (signed, or pending approval) durably with a hold at each of `scopes`, grouped
    /// with concurrent writes into one transaction, unless it would take a scope past one of `limits` (checked
    /// in the same transaction, so the check and the reservation are one atomic step).
    ///
    /// - Returns: the record stored for the agent's idempotency key (`record`, or the one a concurrent request
    ///   with the same key stored first), or the limit it would pass.
    /// - Throws: ``LedgerError`` with `STORE_UNAVAILABLE` when the transaction fails; then nothing was stored.
    public func recordAuthorization(
        _ record: AuthorizationRecord, scopes: [BudgetScope]? = nil, limits: [BudgetCheck] = [], audit: AuditEntry? = nil,
        alternatives: AuditAlternatives? = nil
    ) async throws -> RecordingOutcome {
        var record = record
        let entry =
            audit
            ?? AuditEntry(
                index: self.sequencer.reserve(), time: record.createdAt, kind: "decision", action: record.status.rawValue, actor: record.agent,
                subject: record.id
            )
        record.auditIndex = entry.index
        return try await self.committer.commit(
            .authorization(record, scopes: scopes ?? [.agent(record.agent)], limits: limits, audit: AuditWrite(entry), alternatives: alternatives)
        )
    }

    /// Records a refused request's decision and its audit entry, grouped with concurrent writes.
    public func recordRefusal(_ refusal: RefusalRecord, audit: AuditEntry? = nil) async throws {
        var refusal = refusal
        let entry =
            audit
            ?? AuditEntry(
                index: self.sequencer.reserve(), time: refusal.createdAt, kind: "decision", action: "denied", actor: refusal.agent,
                decision: DecisionSummary(outcome: "denied", code: refusal.code)
            )
        refusal.auditIndex = entry.index
        _ = try await self.committer.commit(.refusal(refusal, audit: AuditWrite(entry)))
    }

    public func refusals(agent: String) async throws -> [RefusalRecord] {
        try await self.read { db in try RefusalRecord.filter(Column("agent") == agent).order(Column("id")).fetchAll(db) }
    }

    /// What counts against a scope's budget at `now`: its holds in the currency since the window's start, less
    /// the released ones and the pending ones past their approval deadline.
    static func counted(in db: Database, scope: String, currency: String, since windowStart: Int64, now: Int64) throws -> Int64 {
        let statement = try db.cachedStatement(
            sql: """
                SELECT COALESCE(SUM(amount), 0) FROM hold
                WHERE scope = ? AND currency = ? AND createdAt >= ? AND releasedAt IS NULL AND (expiresAt IS NULL OR expiresAt > ?)
                """
        )
        return try Int64.fetchOne(statement, arguments: [scope, currency, windowStart, now]) ?? 0
    }

    /// The authorization an agent obtained with an idempotency key, through a cached statement (it runs for
    /// every request).
    static func authorization(in db: Database, agent: String, idempotencyKey: String) throws -> AuthorizationRecord? {
        let statement = try db.cachedStatement(sql: "SELECT * FROM authorization WHERE agent = ? AND idempotencyKey = ?")
        return try AuthorizationRecord.fetchOne(statement, arguments: [agent, idempotencyKey])
    }

    /// Voids an agent's own authorization.
    /// - Returns: the record, with the time it was first voided.
    /// - Throws: ``LedgerError`` with `AUTHORIZATION_NOT_FOUND` (no such id, or another agent's),
    ///   `AUTHORIZATION_EXPIRED` (nothing left to withdraw).
    public func voidAuthorization(id: String, agent: String, at now: Int64) async throws -> AuthorizationRecord {
        try await self.write { db in
            // Another agent's authorization is answered as an unknown one, in the same words: an agent
            // learns nothing about ids that are not its own.
            guard var record = try AuthorizationRecord.fetchOne(db, key: id), record.agent == agent else {
                throw LedgerError(.authorizationNotFound, "no authorization '\(id)'")
            }
            if record.voidedAt != nil { return record }
            let status = record.status(at: now)
            guard status == .authorized || status == .pendingApproval, now < record.expiresAt else {
                throw LedgerError(
                    .authorizationExpired, "authorization '\(id)' is \(status == .authorized ? "expired" : status.rawValue); there is nothing to void")
            }
            record.voidedAt = now
            try record.update(db)
            try Self.releaseHolds(in: db, of: id, at: now)
            return record
        }
    }

    static func releaseHolds(in db: Database, of id: String, at now: Int64) throws {
        try db.execute(sql: "UPDATE hold SET releasedAt = ? WHERE authorizationID = ? AND releasedAt IS NULL", arguments: [now, id])
    }

    /// What counts against `scope`'s budget in `currency` since `windowStart`, at `now`.
    public func spent(scope: BudgetScope, currency: String, since windowStart: Int64, now: Int64) async throws -> Int64 {
        try await self.read { db in try Self.counted(in: db, scope: scope.key, currency: currency, since: windowStart, now: now) }
    }

    /// What an agent spent in `currency` since `windowStart` (its own scope).
    public func spent(agent: String, currency: String, since windowStart: Int64, now: Int64 = .max - 1) async throws -> Int64 {
        try await self.spent(scope: .agent(agent), currency: currency, since: windowStart, now: now)
    }

    /// A scope's spending in one window, with the part held for pending approvals.
    public func spending(scope: BudgetScope, currency: String, since windowStart: Int64, now: Int64) async throws -> ScopeSpending {
        try await self.read { db in
            let counted = try Self.counted(in: db, scope: scope.key, currency: currency, since: windowStart, now: now)
            let pending =
                try Int64.fetchOne(
                    db,
                    sql: """
                        SELECT COALESCE(SUM(amount), 0) FROM hold
                        WHERE scope = ? AND currency = ? AND createdAt >= ? AND releasedAt IS NULL AND expiresAt IS NOT NULL AND expiresAt > ?
                        """,
                    arguments: [scope.key, currency, windowStart, now]
                ) ?? 0
            return ScopeSpending(counted: counted, pending: pending)
        }
    }

    /// The agent's history for escalation, in one read: its authorizations in `currency` since `historySince`
    /// (count and mean), whether it was ever authorized to pay `merchant`, and what it holds for `merchant`
    /// since `splittingSince`.
    public func spendingFacts(
        agent: String, currency: String, merchant: String, historySince: Int64, splittingSince: Int64, now: Int64
    ) async throws -> SpendingFacts {
        try await self.read { db in
            let history = try Row.fetchOne(
                db,
                sql: """
                    SELECT COUNT(*) AS count, COALESCE(SUM(amount), 0) AS total FROM authorization
                    WHERE agent = ? AND currency = ? AND createdAt >= ? AND +status = 'authorized' AND voidedAt IS NULL
                    """,
                arguments: [agent, currency, historySince]
            )
            let paidBefore =
                try Bool.fetchOne(
                    db,
                    // `+status`: the status column must not steer SQLite away from the (agent, merchant) index.
                    sql: "SELECT EXISTS (SELECT 1 FROM authorization WHERE agent = ? AND merchant = ? AND +status = 'authorized')",
                    arguments: [agent, merchant]
                ) ?? false
            let recent =
                try Int64.fetchOne(
                    db,
                    sql: """
                        SELECT COALESCE(SUM(a.amount), 0) FROM authorization a JOIN hold h ON h.authorizationID = a.id AND h.scope = 'agent:' || a.agent
                        WHERE a.agent = ? AND a.merchant = ? AND a.currency = ? AND a.createdAt >= ?
                          AND h.releasedAt IS NULL AND (h.expiresAt IS NULL OR h.expiresAt > ?)
                        """,
                    arguments: [agent, merchant, currency, splittingSince, now]
                ) ?? 0
            // Integers throughout: the mean of minor units, rounded half up, never through a floating-point value.
            let count: Int64 = history?["count"] ?? 0
            let total: Int64 = history?["total"] ?? 0
            let mean = count > 0 ? (total + count / 2) / count : 0
            return SpendingFacts(historyCount: Int(count), historyMeanAmount: mean, merchantPaidBefore: paidBefore, recentSpendAtMerchant: recent)
        }
    }

    /// The authorization an agent obtained with an idempotency key, if any.
    ///
    /// A key the store has certainly never seen is answered from memory, without reading the database.
    /// `certain: true` always reads (for a refusal that must not miss a twin recorded a moment ago).
    public func authorization(agent: String, idempotencyKey: String, certain: Bool = false) async throws -> AuthorizationRecord? {
        if !certain, !self.keyFilter.mayContain(agent: agent, key: idempotencyKey) { return nil }
        return try await self.read { db in try Self.authorization(in: db, agent: agent, idempotencyKey: idempotencyKey) }
    }

    /// Every (agent, idempotency key) the store holds, to fill the key filter.
    static func idempotencyPairs(in db: Database) throws -> [(String, String)] {
        try Row.fetchAll(db, sql: "SELECT agent, idempotencyKey FROM authorization").map { ($0["agent"] as String, $0["idempotencyKey"] as String) }
    }

    public func authorization(id: String) async throws -> AuthorizationRecord? {
        try await self.read { db in try AuthorizationRecord.fetchOne(db, key: id) }
    }

    public func authorizationCount() async throws -> Int {
        try await self.read { db in try AuthorizationRecord.fetchCount(db) }
    }

    /// How many transactions the group committer ran, and for how many records.
    public var groupCommitStatistics: (transactions: Int, records: Int) { self.committer.statistics }

    /// Holds group commits back until ``resumeCommits()`` (for tests of grouping).
    @_spi(Testing) public func pauseCommits() { self.committer.pause() }
    @_spi(Testing) public func resumeCommits() { self.committer.resume() }
    @_spi(Testing) public var pendingCommits: Int { self.committer.pendingCount }
    /// The writer's `PRAGMA synchronous` (2 is FULL: every commit is synced before it returns).
    @_spi(Testing) public func writerSynchronousMode() async throws -> Int {
        try await self.database.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }
    /// WAL checkpoints completed so far (beside the writer or on it).
    @_spi(Testing) public var walCheckpoints: Int { self.committer.checkpointer?.completed ?? 0 }
    @_spi(Testing) public var walCheckpointRunning: Bool { self.committer.checkpointer?.isRunning ?? false }

    // MARK: Settings

    /// The value stored under `name`, storing `proposed` first if there is none. Atomic: two callers racing
    /// get the same value.
    public func setting(_ name: String, storingIfAbsent proposed: Data) async throws -> Data {
        try await self.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO setting (name, value) VALUES (?, ?)", arguments: [name, proposed])
            return try Data.fetchOne(db, sql: "SELECT value FROM setting WHERE name = ?", arguments: [name])!
        }
    }

    /// Stores `value` under `name`, replacing any value.
    public func setSetting(_ name: String, to value: Data) async throws {
        try await self.write { db in
            try db.execute(
                sql: "INSERT INTO setting (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value", arguments: [name, value])
        }
    }

    public func setting(_ name: String) async throws -> Data? {
        try await self.read { db in try Data.fetchOne(db, sql: "SELECT value FROM setting WHERE name = ?", arguments: [name]) }
    }

    // MARK: Principals

    /// Registers a principal.
    /// - Throws: ``LedgerError`` with `PRINCIPAL_EXISTS` when the id is taken, even by a revoked principal.
    public func insertPrincipal(_ principal: PrincipalRecord) async throws {
        try await self.write { db in
            if try PrincipalRecord.fetchOne(db, key: principal.id) != nil {
                throw LedgerError(.principalExists, "a principal named '\(principal.id)' already exists; ids are never reused")
            }
            try principal.insert(db)
        }
    }

    public func principal(id: String) async throws -> PrincipalRecord? {
        try await self.read { db in try PrincipalRecord.fetchOne(db, key: id) }
    }

    public func principals() async throws -> [PrincipalRecord] {
        try await self.read { db in try PrincipalRecord.order(Column("id")).fetchAll(db) }
    }

    /// Replaces a principal's credential key; the old one is still accepted until `graceUntil`.
    /// - Throws: ``LedgerError`` with `PRINCIPAL_NOT_FOUND` (also for a revoked principal).
    public func rotatePrincipalKey(id: String, algorithm: String, publicKey: Data, graceUntil: Int64) async throws -> PrincipalRecord {
        try await self.write { db in
            guard var principal = try PrincipalRecord.fetchOne(db, key: id), principal.revokedAt == nil else {
                throw LedgerError(.principalNotFound, "no active principal named '\(id)'")
            }
            principal.previousAlgorithm = principal.algorithm
            principal.previousPublicKey = principal.publicKey
            principal.previousKeyExpiresAt = graceUntil
            principal.algorithm = algorithm
            principal.publicKey = publicKey
            try principal.update(db)
            return principal
        }
    }

    /// Marks a principal revoked; it can never authenticate again.
    /// - Throws: ``LedgerError`` with `PRINCIPAL_NOT_FOUND`.
    public func revokePrincipal(id: String, at time: Int64) async throws -> PrincipalRecord {
        try await self.write { db in
            guard var principal = try PrincipalRecord.fetchOne(db, key: id) else {
                throw LedgerError(.principalNotFound, "no principal named '\(id)'")
            }
            if principal.revokedAt == nil {
                principal.revokedAt = time
                try principal.update(db)
            }
            return principal
        }
    }

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

/// A principal: an agent or an admin, known by its public credential key only.
public struct PrincipalRecord: Codable, Sendable, Hashable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "principal"

    public var id: String
    /// `agent`, `admin` or `approver`.
    public var role: String
    /// `ES256` or `Ed25519`.
    public var algorithm: String
    public var publicKey: Data
    public var createdAt: Int64
    public var revokedAt: Int64?
    /// The credential before the last rotation, accepted until `previousKeyExpiresAt`.
    public var previousAlgorithm: String?
    public var previousPublicKey: Data?
    public var previousKeyExpiresAt: Int64?

    public init(id: String, role: String, algorithm: String, publicKey: Data, createdAt: Int64, revokedAt: Int64? = nil) {
        self.id = id
        self.role = role
        self.algorithm = algorithm
        self.publicKey = publicKey
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}

/// The store refused or failed. A failure of the store itself (`STORE_UNAVAILABLE`, and the codes that stay inside
/// the server) reaches a client as `STORE_UNAVAILABLE` "the store does not answer": its details are for the log.
public struct LedgerError: CountersignError, Hashable {
    public typealias Code = ErrorCode

    public var code: ErrorCode
    public var reason: String

    public init(_ code: ErrorCode, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var wireError: WireError {
        if self.code == .storeUnavailable || self.code.audience == .server {
            return WireError(.storeUnavailable, "the store does not answer")
        }
        return WireError(self.code, self.reason)
    }
}
