import Audit
import CountersignCore
import Foundation
import GRDB
import Ledger
import Logging
import PostgresNIO

/// `countersignd migrate-store --from <data dir>`: an SQLite installation copied into an empty PostgreSQL
/// database, every row of every table, in one transaction (all of it or nothing), then checked: the copy's audit
/// log opens (every entry against its leaf hash, the latest checkpoint's root) and its tree has the source's root.
public enum StoreMigration {
    /// What was copied.
    public struct Report: Sendable {
        public var rows: [(table: String, count: Int)]
        public var auditSize: Int
        public var root: Merkle.Hash
    }

    /// Tables in an order that satisfies the foreign keys, with the columns both schemas share.
    static let tables: [(name: String, columns: [String])] = [
        ("principal", ["id", "role", "algorithm", "publicKey", "createdAt", "revokedAt", "previousAlgorithm", "previousPublicKey", "previousKeyExpiresAt"]),
        (
            "keyVersion",
            [
                "name", "version", "backend", "state", "publicKey", "sealedPrivateKey", "hsmLabel", "hsmID", "createdAt", "activatedAt", "rotatedAt",
                "retiredAt",
                "destroyedAt", "adopted",
            ]
        ),
        ("keyDestruction", ["kid", "requestedBy", "requestedAt", "expiresAt"]),
        ("setting", ["name", "value"]),
        (
            "authorization",
            [
                "id", "agent", "idempotencyKey", "requestHash", "response", "amount", "currency", "merchant", "tier", "kid", "expiresAt", "createdAt",
                "voidedAt", "status", "decision", "request", "quorum", "approvalExpiresAt", "auditIndex",
            ]
        ),
        ("hold", ["authorizationID", "scope", "currency", "amount", "createdAt", "expiresAt", "releasedAt"]),
        ("approval", ["authorizationID", "approver", "verdict", "decidedAt"]),
        ("refusal", ["id", "agent", "idempotencyKey", "code", "decision", "createdAt", "auditIndex", "request"]),
        ("auditEntry", ["idx", "entry", "leafHash", "createdAt"]),
        ("checkpoint", ["id", "size", "rootHash", "time", "note", "kid"]),
        ("passkey", ["credentialID", "principal", "publicKey", "algorithm", "signCount", "createdAt", "lastUsedAt"]),
        ("enrollment", ["tokenHash", "principal", "createdBy", "createdAt", "expiresAt", "usedAt"]),
    ]

    /// Copies the SQLite store at `sqlitePath` (not changed, opened read-only; stop its server first) into the
    /// PostgreSQL database of `configuration`, which must hold no ledger yet.
    /// - Throws: ``LedgerError`` when the source's log does not verify, the target is not empty, or the copy's
    ///   root differs from the source's.
    public static func copy(sqlitePath: String, to configuration: PostgresStoreConfiguration, logger: Logger) async throws -> Report {
        var readOnly = GRDB.Configuration()
        readOnly.readonly = true
        let source = try DatabaseQueue(path: sqlitePath, configuration: readOnly)
        let sourceRoot = try await source.read { db -> (Int, Merkle.Hash) in
            let latest = try CheckpointRecord.order(Column("id").desc).fetchOne(db)
            let stored = try Row.fetchAll(db, sql: "SELECT idx, entry, leafHash FROM auditEntry ORDER BY idx").map {
                StoredAuditEntry(index: $0["idx"], entry: $0["entry"], leafHash: $0["leafHash"])
            }
            let checked = try AuditLogCheck.verify(stored, latest: latest)
            guard checked.holes.isEmpty else {
                throw LedgerError(
                    .auditLogMismatch,
                    "the source's audit log has holes at \(checked.holes.prefix(5)): start its server once (it fills them) and stop it, then migrate")
            }
            return (checked.frontier.size, checked.frontier.root)
        }
        let client = PostgresClient(configuration: try configuration.clientConfiguration(), backgroundLogger: logger)
        do {
            return try await Self.copy(from: source, sourceRoot: sourceRoot, client: client, logger: logger)
        } catch {
            throw PostgresStore.failure(error, doing: "copy the store into \(configuration.location)")
        }
    }

    private static func copy(from source: DatabaseQueue, sourceRoot: (Int, Merkle.Hash), client: PostgresClient, logger: Logger) async throws -> Report {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            _ = try await PostgresSchema.migrate(client, logger: logger)
            let rows = try await client.withTransaction(logger: logger) { connection -> [(table: String, count: Int)] in
                let existing =
                    try await connection.query("SELECT (SELECT COUNT(*) FROM auditEntry) + (SELECT COUNT(*) FROM principal)", logger: logger)
                    .first(Int64.self) ?? 0
                guard existing == 0 else {
                    throw LedgerError(.storeUnavailable, "the PostgreSQL database already holds a ledger; migrate into an empty database")
                }
                var counts: [(table: String, count: Int)] = []
                for table in Self.tables {
                    counts.append((table.name, try await Self.copyTable(table.name, columns: table.columns, from: source, to: connection, logger: logger)))
                }
                // Identities and the audit sequence go on after the copied rows.
                try await connection.query("SELECT setval('refusal_id_seq', COALESCE((SELECT MAX(id) FROM refusal), 0) + 1, false)", logger: logger)
                try await connection.query("SELECT setval('checkpoint_id_seq', COALESCE((SELECT MAX(id) FROM checkpoint), 0) + 1, false)", logger: logger)
                try await connection.query(
                    "SELECT setval('auditIndex', COALESCE((SELECT MAX(idx) + 1 FROM auditEntry), 0), false)", logger: logger)
                return counts
            }
            let copied = try await SharedAuditLog.open(client: client, logger: logger)
            guard copied.size == sourceRoot.0, copied.root == sourceRoot.1 else {
                throw LedgerError(.auditLogMismatch, "the copy's audit log (\(copied.size) entries) does not have the source's root; nothing should use it")
            }
            return Report(rows: rows, auditSize: copied.size, root: copied.root)
        }
    }

    /// What a column added by a later SQLite migration holds in a store from before it.
    static let missingColumnDefaults = ["kid": "''"]

    private static func copyTable(
        _ table: String, columns: [String], from source: DatabaseQueue, to connection: PostgresConnection, logger: Logger
    )
        async throws -> Int
    {
        let quoted = table == "authorization" ? "\"authorization\"" : table
        // A store last written by an older countersignd lacks the newer columns (the file is read-only here, so its
        // migrations do not run): those are copied as NULL, which is what the migration would have given them.
        let rows = try source.read { db in
            guard try db.tableExists(table) else { return [Row]() }
            let present = Set(try db.columns(in: table).map(\.name))
            let selected = columns.map { present.contains($0) ? $0 : "\(Self.missingColumnDefaults[$0] ?? "NULL") AS \($0)" }
            return try Row.fetchAll(db, sql: "SELECT \(selected.joined(separator: ", ")) FROM \(quoted)")
        }
        let placeholders = (1...columns.count).map { "$\($0)" }.joined(separator: ", ")
        let sql = "INSERT INTO \(quoted) (\(columns.joined(separator: ", "))) VALUES (\(placeholders))"
        for row in rows {
            var bindings = PostgresBindings()
            for column in columns {
                let value: DatabaseValue = row[column]
                switch value.storage {
                case .null: bindings.appendNull()
                case .int64(let integer):
                    if column == "adopted" { bindings.append(integer != 0) } else { bindings.append(integer) }
                case .double(let double):
                    throw LedgerError(.storeUnavailable, "\(table).\(column) holds a floating-point value (\(double)); nothing in the ledger is one")
                case .string(let text): bindings.append(text)
                case .blob(let data): bindings.append(ByteBuffer(bytes: data))
                }
            }
            try await connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger)
        }
        return rows.count
    }
}
