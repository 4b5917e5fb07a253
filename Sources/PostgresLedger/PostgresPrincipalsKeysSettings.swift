import CountersignCore
import Foundation
import Ledger
import Logging
import PostgresNIO

extension PostgresStore {
    public func insertPrincipal(_ principal: PrincipalRecord) async throws {
        try await self.write("register a principal") { connection, logger in
            let inserted = try await connection.query(
                """
                INSERT INTO principal (\(unescaped: PostgresRows.principalColumns))
                VALUES (\(principal.id), \(principal.role), \(principal.algorithm), \(bytea(principal.publicKey)), \(principal.createdAt), \(principal.revokedAt),
                        \(principal.previousAlgorithm), \(bytea(principal.previousPublicKey)), \(principal.previousKeyExpiresAt))
                ON CONFLICT (id) DO NOTHING RETURNING id
                """,
                logger: logger
            ).first(String.self)
            if inserted == nil {
                throw LedgerError(.principalExists, "a principal named '\(principal.id)' already exists; ids are never reused")
            }
            try await ChangeFeed.notify(.principal(id: principal.id), on: connection, logger: logger)
        }
    }

    public func principal(id: String) async throws -> PrincipalRecord? {
        try await self.principals(where: "id = $1", id).first
    }

    public func principals() async throws -> [PrincipalRecord] {
        try await self.principals(where: "TRUE", nil)
    }

    private func principals(where condition: String, _ id: String?) async throws -> [PrincipalRecord] {
        try await self.read("read principals") { client in
            var bindings = PostgresBindings()
            if let id { bindings.append(id) }
            var records: [PrincipalRecord] = []
            for try await row in try await client.query(
                PostgresQuery(unsafeSQL: "SELECT \(PostgresRows.principalColumns) FROM principal WHERE \(condition) ORDER BY id", binds: bindings),
                logger: self.logger
            ) {
                records.append(try PostgresRows.principal(row))
            }
            return records
        }
    }

    static func principal(id: String, on connection: PostgresConnection, logger: Logger) async throws -> PrincipalRecord? {
        for try await row in try await connection.query(
            "SELECT \(unescaped: PostgresRows.principalColumns) FROM principal WHERE id = \(id) FOR UPDATE", logger: logger)
        {
            return try PostgresRows.principal(row)
        }
        return nil
    }

    public func rotatePrincipalKey(id: String, algorithm: String, publicKey: Data, graceUntil: Int64) async throws -> PrincipalRecord {
        try await self.write("rotate a credential") { connection, logger in
            let principal = try PrincipalRecord.rotating(
                try await Self.principal(id: id, on: connection, logger: logger), id: id, algorithm: algorithm, publicKey: publicKey, graceUntil: graceUntil)
            try await connection.query(
                """
                UPDATE principal SET previousAlgorithm = algorithm, previousPublicKey = publicKey, previousKeyExpiresAt = \(graceUntil),
                    algorithm = \(algorithm), publicKey = \(bytea(publicKey))
                WHERE id = \(id)
                """,
                logger: logger
            )
            try await ChangeFeed.notify(.principal(id: id), on: connection, logger: logger)
            return principal
        }
    }

    public func revokePrincipal(id: String, at time: Int64) async throws -> PrincipalRecord {
        try await self.write("revoke a principal") { connection, logger in
            guard var principal = try await Self.principal(id: id, on: connection, logger: logger) else {
                throw LedgerError(.principalNotFound, "no principal named '\(id)'")
            }
            if principal.revokedAt == nil {
                principal.revokedAt = time
                try await connection.query("UPDATE principal SET revokedAt = \(time) WHERE id = \(id)", logger: logger)
                try await ChangeFeed.notify(.principal(id: id), on: connection, logger: logger)
            }
            return principal
        }
    }
}

extension PostgresStore {
    public func insertKeyVersion(_ key: KeyVersionRecord) async throws {
        try await self.write("store a key version") { connection, logger in
            let inserted = try await connection.query(
                """
                INSERT INTO keyVersion (\(unescaped: PostgresRows.keyVersionColumns))
                VALUES (\(key.name), \(Int64(key.version)), \(key.backend), \(key.state.rawValue), \(bytea(key.publicKey)), \(bytea(key.sealedPrivateKey)),
                        \(key.hsmLabel), \(bytea(key.hsmID)), \(key.createdAt), \(key.activatedAt), \(key.rotatedAt), \(key.retiredAt), \(key.destroyedAt),
                        \(key.adopted))
                ON CONFLICT (name, version) DO NOTHING RETURNING name
                """,
                logger: logger
            ).first(String.self)
            if inserted == nil {
                throw LedgerError(.keyVersionExists, "key '\(key.kid)' already exists; versions are never reused")
            }
            try await ChangeFeed.notify(.keyVersions, on: connection, logger: logger)
        }
    }

    public func keyVersions() async throws -> [KeyVersionRecord] {
        try await self.read("read key versions") { client in
            var records: [KeyVersionRecord] = []
            for try await row in try await client.query(
                "SELECT \(unescaped: PostgresRows.keyVersionColumns) FROM keyVersion ORDER BY name, version", logger: self.logger)
            {
                records.append(try PostgresRows.keyVersion(row))
            }
            return records
        }
    }

    public func keyVersion(name: String, version: Int) async throws -> KeyVersionRecord? {
        try await self.read("read a key version") { client in
            for try await row in try await client.query(
                "SELECT \(unescaped: PostgresRows.keyVersionColumns) FROM keyVersion WHERE name = \(name) AND version = \(Int64(version))", logger: self.logger)
            {
                return try PostgresRows.keyVersion(row)
            }
            return nil
        }
    }

    static func keyVersion(name: String, version: Int, on connection: PostgresConnection, logger: Logger) async throws -> KeyVersionRecord {
        for try await row in try await connection.query(
            "SELECT \(unescaped: PostgresRows.keyVersionColumns) FROM keyVersion WHERE name = \(name) AND version = \(Int64(version)) FOR UPDATE",
            logger: logger)
        {
            return try PostgresRows.keyVersion(row)
        }
        throw LedgerError(.keyNotFound, "no key '\(name)/v\(version)'")
    }

    public func nextKeyVersion(name: String) async throws -> Int {
        try await self.read("read key versions") { client in
            Int(
                try await client.query("SELECT COALESCE(MAX(version), 0)::bigint FROM keyVersion WHERE name = \(name)", logger: self.logger).first(Int64.self)
                    ?? 0)
                + 1
        }
    }

    public func activateKeyVersion(name: String, version: Int, at now: Int64) async throws -> [KeyVersionRecord] {
        try await self.write("activate a key version") { connection, logger in
            var target = try await Self.keyVersion(name: name, version: version, on: connection, logger: logger)
            guard target.state == .pending else {
                throw LedgerError(.keyStateConflict, "key '\(target.kid)' is \(target.state.rawValue); only a pending version can become active")
            }
            var changed: [KeyVersionRecord] = []
            for try await row in try await connection.query(
                """
                UPDATE keyVersion SET state = 'verify-only', rotatedAt = \(now) WHERE name = \(name) AND state = 'active'
                RETURNING \(unescaped: PostgresRows.keyVersionColumns)
                """,
                logger: logger
            ) {
                changed.append(try PostgresRows.keyVersion(row))
            }
            target.state = .active
            target.activatedAt = now
            try await connection.query(
                "UPDATE keyVersion SET state = 'active', activatedAt = \(now) WHERE name = \(name) AND version = \(Int64(version))", logger: logger)
            try await ChangeFeed.notify(.keyVersions, on: connection, logger: logger)
            return [target] + changed
        }
    }

    public func retireKeyVersion(name: String, version: Int, force: Bool, at now: Int64) async throws -> KeyVersionRecord {
        try await self.write("retire a key version") { connection, logger in
            var record = try await Self.keyVersion(name: name, version: version, on: connection, logger: logger)
            guard record.state == .verifyOnly || (force && record.state == .pending) else {
                throw LedgerError(
                    .keyStateConflict,
                    "key '\(record.kid)' is \(record.state.rawValue); only a verify-only version can be retired (rotate an active key first)"
                )
            }
            let unexpired =
                try await connection.query(
                    "SELECT COUNT(*)::bigint FROM \"authorization\" WHERE kid = \(record.kid) AND expiresAt > \(now)", logger: logger
                ).first(Int64.self) ?? 0
            if unexpired > 0, !force {
                throw LedgerError(
                    .keyInUse, "\(unexpired) authorization(s) signed by '\(record.kid)' are still unexpired; retire it after they expire, or force it")
            }
            record.state = .retired
            record.retiredAt = now
            try await connection.query(
                "UPDATE keyVersion SET state = 'retired', retiredAt = \(now) WHERE name = \(name) AND version = \(Int64(version))", logger: logger)
            try await ChangeFeed.notify(.keyVersions, on: connection, logger: logger)
            return record
        }
    }

    public func requestDestruction(name: String, version: Int, by admin: String, at now: Int64, confirmWithin: Int64) async throws -> DestructionStep {
        try await self.write("request a key's destruction") { connection, logger in
            let record = try await Self.keyVersion(name: name, version: version, on: connection, logger: logger)
            guard record.state == .retired else {
                throw LedgerError(.keyStateConflict, "key '\(record.kid)' is \(record.state.rawValue); only a retired version can be destroyed")
            }
            for try await (requestedBy, expiresAt) in try await connection.query(
                "SELECT requestedBy, expiresAt FROM keyDestruction WHERE kid = \(record.kid)", logger: logger
            ).decode((String, Int64).self) where expiresAt > now {
                guard requestedBy != admin else {
                    throw LedgerError(.dualControl, "'\(admin)' already asked to destroy '\(record.kid)'; a different admin must confirm before \(expiresAt)")
                }
                try await connection.query("DELETE FROM keyDestruction WHERE kid = \(record.kid)", logger: logger)
                return .confirmed(record, requestedBy: requestedBy)
            }
            try await connection.query(
                """
                INSERT INTO keyDestruction (kid, requestedBy, requestedAt, expiresAt) VALUES (\(record.kid), \(admin), \(now), \(now + confirmWithin))
                ON CONFLICT (kid) DO UPDATE SET requestedBy = excluded.requestedBy, requestedAt = excluded.requestedAt, expiresAt = excluded.expiresAt
                """,
                logger: logger
            )
            return .awaitingConfirmation(requestedBy: admin, expiresAt: now + confirmWithin)
        }
    }

    public func markDestroyed(name: String, version: Int, at now: Int64) async throws -> KeyVersionRecord {
        try await self.write("mark a key destroyed") { connection, logger in
            var record = try await Self.keyVersion(name: name, version: version, on: connection, logger: logger)
            record.state = .destroyed
            record.destroyedAt = now
            record.sealedPrivateKey = nil
            try await connection.query(
                """
                UPDATE keyVersion SET state = 'destroyed', destroyedAt = \(now), sealedPrivateKey = NULL
                WHERE name = \(name) AND version = \(Int64(version))
                """,
                logger: logger
            )
            try await ChangeFeed.notify(.keyVersions, on: connection, logger: logger)
            return record
        }
    }

    public func signatureCounts() async throws -> [String: Int] {
        try await self.read("count signatures") { client in
            var counts: [String: Int] = [:]
            for try await (kid, count) in try await client.query(
                """
                SELECT kid, COUNT(*)::bigint FROM "authorization" WHERE kid != '' GROUP BY kid
                UNION ALL SELECT kid, COUNT(*)::bigint FROM checkpoint WHERE kid != '' GROUP BY kid
                """,
                logger: self.logger
            ).decode((String, Int64).self) {
                counts[kid, default: 0] += Int(count)
            }
            return counts
        }
    }
}

extension PostgresStore {
    public func setting(_ name: String, storingIfAbsent proposed: Data) async throws -> Data {
        try await self.write("store a setting") { connection, logger in
            let inserted = try await connection.query(
                "INSERT INTO setting (name, value) VALUES (\(name), \(bytea(proposed))) ON CONFLICT (name) DO NOTHING RETURNING name", logger: logger
            ).first(String.self)
            if inserted != nil { try await ChangeFeed.notify(.setting(name: name), on: connection, logger: logger) }
            guard let value = try await connection.query("SELECT value FROM setting WHERE name = \(name)", logger: logger).first(Data.self) else {
                throw LedgerError(.storeUnavailable, "setting '\(name)' vanished")
            }
            return value
        }
    }

    public func setSetting(_ name: String, to value: Data) async throws {
        try await self.write("store a setting") { connection, logger in
            try await connection.query(
                "INSERT INTO setting (name, value) VALUES (\(name), \(bytea(value))) ON CONFLICT (name) DO UPDATE SET value = excluded.value", logger: logger)
            try await ChangeFeed.notify(.setting(name: name), on: connection, logger: logger)
        }
    }

    public func setting(_ name: String) async throws -> Data? {
        try await self.read("read a setting") { client in
            try await client.query("SELECT value FROM setting WHERE name = \(name)", logger: self.logger).first(Data.self)
        }
    }
}
