import Audit
import CountersignCore
import Foundation
import GRDB
import Policy

/// Principals: agents, admins, approvers and auditors, known by their public credential keys.
extension LedgerStore {
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
            let principal = try PrincipalRecord.rotating(
                try PrincipalRecord.fetchOne(db, key: id), id: id, algorithm: algorithm, publicKey: publicKey, graceUntil: graceUntil)
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
