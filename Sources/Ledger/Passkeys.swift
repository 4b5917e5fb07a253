import CountersignCore
import Foundation
import GRDB

/// A passkey (WebAuthn credential) a person registered for the approvals console: its public key and counter.
public struct PasskeyRecord: Codable, Sendable, Hashable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "passkey"

    public var credentialID: Data
    public var principal: String
    /// The COSE_Key, as the authenticator encoded it.
    public var publicKey: Data
    /// `ES256` or `EdDSA`.
    public var algorithm: String
    /// The authenticator's signature counter, as last seen.
    public var signCount: Int64
    public var createdAt: Int64
    public var lastUsedAt: Int64?

    public init(credentialID: Data, principal: String, publicKey: Data, algorithm: String, signCount: Int64, createdAt: Int64, lastUsedAt: Int64? = nil) {
        self.credentialID = credentialID
        self.principal = principal
        self.publicKey = publicKey
        self.algorithm = algorithm
        self.signCount = signCount
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
    }
}

/// A one-time enrollment link an admin issued: only the SHA-256 of its token is stored.
public struct EnrollmentRecord: Codable, Sendable, Hashable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "enrollment"

    public var tokenHash: Data
    public var principal: String
    public var createdBy: String
    public var createdAt: Int64
    public var expiresAt: Int64
    public var usedAt: Int64?

    public init(tokenHash: Data, principal: String, createdBy: String, createdAt: Int64, expiresAt: Int64, usedAt: Int64? = nil) {
        self.tokenHash = tokenHash
        self.principal = principal
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usedAt = usedAt
    }

    /// Whether it can still be used at `now`.
    public func isOpen(at now: Int64) -> Bool { self.usedAt == nil && now < self.expiresAt }
}

extension EnrollmentRecord {
    /// The one refusal for a link that cannot be used, whatever the reason (an unknown token says no more).
    static func invalid() -> LedgerError {
        LedgerError(.enrollmentInvalid, "this enrollment link is unknown, already used, or past its 15 minutes: ask an admin for a new one")
    }
}

extension LedgerStore {
    public func insertEnrollment(_ enrollment: EnrollmentRecord) async throws {
        try await self.write { db in try enrollment.insert(db) }
    }

    public func enrollment(tokenHash: Data) async throws -> EnrollmentRecord? {
        try await self.read { db in try EnrollmentRecord.fetchOne(db, key: tokenHash) }
    }

    public func completeEnrollment(tokenHash: Data, passkey: PasskeyRecord, at now: Int64) async throws {
        try await self.write { db in
            guard var enrollment = try EnrollmentRecord.fetchOne(db, key: tokenHash), enrollment.isOpen(at: now), enrollment.principal == passkey.principal
            else { throw EnrollmentRecord.invalid() }
            enrollment.usedAt = now
            try enrollment.update(db)
            guard try PasskeyRecord.fetchOne(db, key: passkey.credentialID) == nil else {
                throw LedgerError(.principalExists, "this passkey is already registered")
            }
            try passkey.insert(db)
        }
    }

    public func passkeys(principal: String) async throws -> [PasskeyRecord] {
        try await self.read { db in try PasskeyRecord.filter(Column("principal") == principal).order(Column("createdAt")).fetchAll(db) }
    }

    public func passkey(credentialID: Data) async throws -> PasskeyRecord? {
        try await self.read { db in try PasskeyRecord.fetchOne(db, key: credentialID) }
    }

    public func advanceSignCount(credentialID: Data, to count: Int64, at now: Int64) async throws -> Bool {
        try await self.write { db in
            try db.execute(
                sql: "UPDATE passkey SET signCount = ?, lastUsedAt = ? WHERE credentialID = ? AND (signCount < ? OR (signCount = 0 AND ? = 0))",
                arguments: [count, now, credentialID, count, count])
            return db.changesCount == 1
        }
    }
}
