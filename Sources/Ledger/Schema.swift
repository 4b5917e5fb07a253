import GRDB

/// The whole schema: every migration, in order, in this one file. A store is created and brought up to date on open.
extension LedgerStore {
    static var migrator: DatabaseMigrator {
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
        migrator.registerMigration("v10: the request of a refusal") { db in
            // So `countersign policy replay` sees refused requests as well as authorized ones.
            try db.alter(table: "refusal") { table in table.add(column: "request", .blob) }
        }
        migrator.registerMigration("v11: passkeys and enrollment links of the approvals console") { db in
            try db.create(table: "passkey") { table in
                table.primaryKey("credentialID", .blob)
                table.column("principal", .text).notNull()
                table.column("publicKey", .blob).notNull()
                table.column("algorithm", .text).notNull()
                table.column("signCount", .integer).notNull()
                table.column("createdAt", .integer).notNull()
                table.column("lastUsedAt", .integer)
            }
            try db.create(index: "passkey_principal", on: "passkey", columns: ["principal"])
            try db.create(table: "enrollment") { table in
                table.primaryKey("tokenHash", .blob)
                table.column("principal", .text).notNull()
                table.column("createdBy", .text).notNull()
                table.column("createdAt", .integer).notNull()
                table.column("expiresAt", .integer).notNull()
                table.column("usedAt", .integer)
            }
        }
        migrator.registerMigration("v12: the idempotency key first in its unique index") { db in
            // With the agent first, each agent's keys made one insertion point of the index, and random keys
            // (UUIDv4) one page per request: a third of the WAL (docs/benchmarks.md). With the key first, keys that
            // grow with time (UUIDv7, order numbers) append at one end of the index, whatever the number of agents.
            // The pair stays unique; a table's constraint cannot be altered, so the table is made again (SQLite's
            // "making other kinds of table schema changes": new table, copy, drop, rename), its indexes with it.
            try db.execute(
                sql: """
                    CREATE TABLE "authorization_v12" ("id" TEXT PRIMARY KEY NOT NULL, "agent" TEXT NOT NULL, "idempotencyKey" TEXT NOT NULL,
                        "requestHash" BLOB NOT NULL, "response" BLOB NOT NULL, "amount" INTEGER NOT NULL, "currency" TEXT NOT NULL,
                        "tier" TEXT NOT NULL, "kid" TEXT NOT NULL, "expiresAt" INTEGER NOT NULL, "createdAt" INTEGER NOT NULL,
                        "voidedAt" INTEGER, "merchant" TEXT NOT NULL DEFAULT '', "status" TEXT NOT NULL DEFAULT 'authorized',
                        "decision" BLOB, "request" BLOB, "quorum" INTEGER, "approvalExpiresAt" INTEGER, "auditIndex" INTEGER,
                        UNIQUE ("idempotencyKey", "agent"));
                    INSERT INTO "authorization_v12" SELECT "id", "agent", "idempotencyKey", "requestHash", "response", "amount",
                        "currency", "tier", "kid", "expiresAt", "createdAt", "voidedAt", "merchant", "status", "decision", "request",
                        "quorum", "approvalExpiresAt", "auditIndex" FROM "authorization" ORDER BY rowid;
                    DROP TABLE "authorization";
                    ALTER TABLE "authorization_v12" RENAME TO "authorization";
                    CREATE INDEX "authorization_spending" ON "authorization"("agent", "currency", "createdAt");
                    CREATE INDEX "authorization_merchant" ON "authorization"("agent", "merchant", "currency", "createdAt");
                    CREATE INDEX "authorization_kid" ON "authorization"("kid", "expiresAt");
                    CREATE INDEX authorization_pending ON authorization(approvalExpiresAt) WHERE status = 'pending_approval';
                    """
            )
        }
        return migrator
    }
}
