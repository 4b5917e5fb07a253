import CountersignCore
import Foundation
import Ledger
import Logging
import PostgresNIO

extension PostgresStore {
    public func insertEnrollment(_ enrollment: EnrollmentRecord) async throws {
        try await self.write("issue an enrollment link") { connection, logger in
            try await connection.query(
                """
                INSERT INTO enrollment (tokenHash, principal, createdBy, createdAt, expiresAt, usedAt)
                VALUES (\(bytea(enrollment.tokenHash)), \(enrollment.principal), \(enrollment.createdBy), \(enrollment.createdAt), \(enrollment.expiresAt),
                        \(enrollment.usedAt))
                """, logger: logger)
        }
    }

    public func enrollment(tokenHash: Data) async throws -> EnrollmentRecord? {
        try await self.read("read an enrollment link") { client in
            for try await (hash, principal, createdBy, createdAt, expiresAt, usedAt) in try await client.query(
                "SELECT tokenHash, principal, createdBy, createdAt, expiresAt, usedAt FROM enrollment WHERE tokenHash = \(bytea(tokenHash))",
                logger: self.logger
            ).decode((Data, String, String, Int64, Int64, Int64?).self) {
                return EnrollmentRecord(tokenHash: hash, principal: principal, createdBy: createdBy, createdAt: createdAt, expiresAt: expiresAt, usedAt: usedAt)
            }
            return nil
        }
    }

    public func completeEnrollment(tokenHash: Data, passkey: PasskeyRecord, at now: Int64) async throws {
        try await self.write("register a passkey") { connection, logger in
            // The link is used by exactly one transaction, on any server.
            let used = try await connection.query(
                """
                UPDATE enrollment SET usedAt = \(now)
                WHERE tokenHash = \(bytea(tokenHash)) AND usedAt IS NULL AND expiresAt > \(now) AND principal = \(passkey.principal)
                RETURNING principal
                """, logger: logger
            ).first(String.self)
            guard used != nil else {
                throw LedgerError(.enrollmentInvalid, "this enrollment link is unknown, already used, or past its 15 minutes: ask an admin for a new one")
            }
            let inserted = try await connection.query(
                """
                INSERT INTO passkey (credentialID, principal, publicKey, algorithm, signCount, createdAt, lastUsedAt)
                VALUES (\(bytea(passkey.credentialID)), \(passkey.principal), \(bytea(passkey.publicKey)), \(passkey.algorithm), \(passkey.signCount),
                        \(passkey.createdAt), \(passkey.lastUsedAt))
                ON CONFLICT (credentialID) DO NOTHING RETURNING principal
                """, logger: logger
            ).first(String.self)
            guard inserted != nil else { throw LedgerError(.principalExists, "this passkey is already registered") }
        }
    }

    public func passkeys(principal: String) async throws -> [PasskeyRecord] {
        try await self.passkeys(where: "principal = $1", binding: .principal(principal))
    }

    public func passkey(credentialID: Data) async throws -> PasskeyRecord? {
        try await self.passkeys(where: "credentialID = $1", binding: .credential(credentialID)).first
    }

    private enum Binding {
        case principal(String)
        case credential(Data)
    }

    private func passkeys(where condition: String, binding: Binding) async throws -> [PasskeyRecord] {
        try await self.read("read passkeys") { client in
            var bindings = PostgresBindings()
            switch binding {
            case .principal(let principal): bindings.append(principal)
            case .credential(let id): bindings.append(bytea(id))
            }
            var records: [PasskeyRecord] = []
            for try await (id, principal, publicKey, algorithm, signCount, createdAt, lastUsedAt) in try await client.query(
                PostgresQuery(
                    unsafeSQL:
                        "SELECT credentialID, principal, publicKey, algorithm, signCount, createdAt, lastUsedAt FROM passkey WHERE \(condition) ORDER BY createdAt",
                    binds: bindings), logger: self.logger
            ).decode((Data, String, Data, String, Int64, Int64, Int64?).self) {
                records.append(
                    PasskeyRecord(
                        credentialID: id, principal: principal, publicKey: publicKey, algorithm: algorithm, signCount: signCount, createdAt: createdAt,
                        lastUsedAt: lastUsedAt))
            }
            return records
        }
    }

    public func advanceSignCount(credentialID: Data, to count: Int64, at now: Int64) async throws -> Bool {
        try await self.write("advance a passkey's counter") { connection, logger in
            try await connection.query(
                """
                UPDATE passkey SET signCount = \(count), lastUsedAt = \(now)
                WHERE credentialID = \(bytea(credentialID)) AND (signCount < \(count) OR (signCount = 0 AND \(count) = 0)) RETURNING principal
                """, logger: logger
            ).first(String.self) != nil
        }
    }
}
