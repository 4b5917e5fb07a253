import CountersignCore
import Ledger
import Logging
import PostgresNIO

/// The PostgreSQL schema: every migration, in order, each applied once in its own transaction and recorded in
/// `countersign_schema`. A store whose schema is newer than this build knows is refused rather than written
/// by code that does not know its columns.
///
/// Column names are unquoted, so PostgreSQL folds them to lower case (`idempotencyKey` is `idempotencykey`);
/// the statements spell them the same way. `authorization` is a reserved word and is always quoted.
enum PostgresSchema {
    struct Migration: Sendable {
        var version: Int
        var name: String
        var statements: [String]
    }

    static let migrations: [Migration] = [
        Migration(
            version: 1, name: "the whole ledger",
            statements: [
                """
                CREATE TABLE principal (
                    id text PRIMARY KEY, role text NOT NULL, algorithm text NOT NULL, publicKey bytea NOT NULL, createdAt bigint NOT NULL,
                    revokedAt bigint, previousAlgorithm text, previousPublicKey bytea, previousKeyExpiresAt bigint)
                """,
                """
                CREATE TABLE keyVersion (
                    name text NOT NULL, version bigint NOT NULL, backend text NOT NULL, state text NOT NULL, publicKey bytea NOT NULL,
                    sealedPrivateKey bytea, hsmLabel text, hsmID bytea, createdAt bigint NOT NULL, activatedAt bigint, rotatedAt bigint,
                    retiredAt bigint, destroyedAt bigint, adopted boolean NOT NULL DEFAULT false, PRIMARY KEY (name, version))
                """,
                "CREATE TABLE keyDestruction (kid text PRIMARY KEY, requestedBy text NOT NULL, requestedAt bigint NOT NULL, expiresAt bigint NOT NULL)",
                "CREATE TABLE setting (name text PRIMARY KEY, value bytea NOT NULL)",
                """
                CREATE TABLE "authorization" (
                    id text PRIMARY KEY, agent text NOT NULL, idempotencyKey text NOT NULL, requestHash bytea NOT NULL, response bytea NOT NULL,
                    amount bigint NOT NULL, currency text NOT NULL, merchant text NOT NULL DEFAULT '', tier text NOT NULL, kid text NOT NULL,
                    expiresAt bigint NOT NULL, createdAt bigint NOT NULL, voidedAt bigint, status text NOT NULL, decision bytea, request bytea,
                    quorum bigint, approvalExpiresAt bigint, auditIndex bigint, UNIQUE (agent, idempotencyKey))
                """,
                "CREATE INDEX authorization_spending ON \"authorization\" (agent, currency, createdAt)",
                "CREATE INDEX authorization_merchant ON \"authorization\" (agent, merchant, currency, createdAt)",
                "CREATE INDEX authorization_kid ON \"authorization\" (kid, expiresAt)",
                "CREATE INDEX authorization_pending ON \"authorization\" (approvalExpiresAt) WHERE status = 'pending_approval'",
                """
                CREATE TABLE hold (
                    authorizationID text NOT NULL REFERENCES "authorization" (id) ON DELETE CASCADE, scope text NOT NULL, currency text NOT NULL,
                    amount bigint NOT NULL, createdAt bigint NOT NULL, expiresAt bigint, releasedAt bigint, PRIMARY KEY (authorizationID, scope))
                """,
                "CREATE INDEX hold_spending ON hold (scope, currency, createdAt)",
                // One row per budget scope and currency, locked (in key order) by every transaction that checks a limit
                // of that scope: the check and the hold are one step across every server.
                "CREATE TABLE budgetLock (key text PRIMARY KEY)",
                """
                CREATE TABLE approval (
                    authorizationID text NOT NULL REFERENCES "authorization" (id) ON DELETE CASCADE, approver text NOT NULL, verdict text NOT NULL,
                    decidedAt bigint NOT NULL, PRIMARY KEY (authorizationID, approver))
                """,
                """
                CREATE TABLE refusal (
                    id bigserial PRIMARY KEY, agent text NOT NULL, idempotencyKey text NOT NULL, code text NOT NULL, decision bytea NOT NULL,
                    createdAt bigint NOT NULL, auditIndex bigint)
                """,
                "CREATE INDEX refusal_time ON refusal (createdAt)",
                "CREATE TABLE auditEntry (idx bigint PRIMARY KEY, entry bytea NOT NULL, leafHash bytea NOT NULL, createdAt bigint NOT NULL)",
                // Every server reserves its indexes here: one sequence, one log.
                "CREATE SEQUENCE auditIndex AS bigint MINVALUE 0 START WITH 0",
                """
                CREATE TABLE checkpoint (
                    id bigserial PRIMARY KEY, size bigint NOT NULL, rootHash bytea NOT NULL, time bigint NOT NULL, note text NOT NULL,
                    kid text NOT NULL DEFAULT '')
                """,
                "CREATE INDEX checkpoint_size ON checkpoint (size)",
            ]
        ),
        // So `countersign policy replay` sees refused requests as well as authorized ones.
        Migration(version: 2, name: "the request of a refusal", statements: ["ALTER TABLE refusal ADD COLUMN request bytea"]),
        Migration(
            version: 3, name: "passkeys and enrollment links of the approvals console",
            statements: [
                """
                CREATE TABLE passkey (
                    credentialID bytea PRIMARY KEY, principal text NOT NULL, publicKey bytea NOT NULL, algorithm text NOT NULL, signCount bigint NOT NULL,
                    createdAt bigint NOT NULL, lastUsedAt bigint)
                """,
                "CREATE INDEX passkey_principal ON passkey (principal)",
                """
                CREATE TABLE enrollment (
                    tokenHash bytea PRIMARY KEY, principal text NOT NULL, createdBy text NOT NULL, createdAt bigint NOT NULL, expiresAt bigint NOT NULL,
                    usedAt bigint)
                """,
            ]),
    ]

    /// The newest schema this build knows.
    static var latestVersion: Int { Self.migrations.last?.version ?? 0 }

    /// Creates the schema or brings it up to date, one transaction per migration, under a lock so that servers
    /// starting together migrate once.
    /// - Throws: ``LedgerError`` `STORE_UNAVAILABLE` naming the schema's version when it is newer than this build's.
    static func migrate(_ client: PostgresClient, logger: Logger) async throws -> Int {
        try await client.withTransaction(logger: logger) { connection in
            // Transaction-scoped: released at the commit, whatever connection the pool gives next.
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS countersign_schema (version bigint PRIMARY KEY, name text NOT NULL, appliedAt timestamptz NOT NULL DEFAULT now())",
                logger: logger
            )
            var current = 0
            for try await version in try await connection.query("SELECT COALESCE(MAX(version), 0) FROM countersign_schema", logger: logger).decode(Int.self) {
                current = version
            }
            guard current <= Self.latestVersion else {
                throw LedgerError(
                    .storeUnavailable,
                    "the database's schema is version \(current), newer than this countersignd knows (\(Self.latestVersion)); upgrade countersignd before it serves from this database"
                )
            }
            for migration in Self.migrations where migration.version > current {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO countersign_schema (version, name) VALUES (\(migration.version), \(migration.name))", logger: logger)
                current = migration.version
            }
            return current
        }
    }

    /// `pg_advisory_xact_lock` keys of this schema: the migration's, and the checkpoint leader's (session-level).
    static let migrationLock: Int64 = 0x636f_756e_7465_7201
    static let checkpointLeaderLock: Int64 = 0x636f_756e_7465_7202
}
