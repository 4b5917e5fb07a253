import CountersignCore
import Foundation
import GRDB

/// A key version's metadata. Software private keys are stored only sealed by the HSM's AES key; HSM
/// private keys are only referenced (label and `CKA_ID`).
public struct KeyVersionRecord: Codable, Sendable, Hashable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "keyVersion"

    /// A version's life: published before it signs, published after it stops, then gone.
    public enum State: String, Codable, Sendable, Hashable, CaseIterable {
        /// Published in the JWKS, not yet signing.
        case pending
        /// Signs; one per key name.
        case active
        /// Published, no longer signs.
        case verifyOnly = "verify-only"
        /// No longer published.
        case retired
        /// Its private material is gone.
        case destroyed

        /// Whether merchants find it in the JWKS.
        public var isPublished: Bool { self == .pending || self == .active || self == .verifyOnly }
    }

    public var name: String
    public var version: Int
    /// `software` or `hsm`.
    public var backend: String
    public var state: State
    /// X9.62 uncompressed point.
    public var publicKey: Data
    /// `nonce ‖ ciphertext ‖ tag` from the HSM's AES-256-GCM, for software keys; `nil` once destroyed.
    public var sealedPrivateKey: Data?
    public var hsmLabel: String?
    public var hsmID: Data?
    public var createdAt: Int64
    public var activatedAt: Int64?
    /// When a newer version took over signing.
    public var rotatedAt: Int64?
    public var retiredAt: Int64?
    public var destroyedAt: Int64?
    /// A key pair the security team made on the token themselves.
    public var adopted: Bool

    public init(
        name: String, version: Int, backend: String, state: State, publicKey: Data, sealedPrivateKey: Data?, hsmLabel: String?, hsmID: Data?,
        createdAt: Int64, activatedAt: Int64? = nil, adopted: Bool = false
    ) {
        self.name = name
        self.version = version
        self.backend = backend
        self.state = state
        self.publicKey = publicKey
        self.sealedPrivateKey = sealedPrivateKey
        self.hsmLabel = hsmLabel
        self.hsmID = hsmID
        self.createdAt = createdAt
        self.activatedAt = activatedAt
        self.adopted = adopted
    }

    /// `<name>/v<version>`.
    public var kid: String { "\(self.name)/v\(self.version)" }
}

/// Where a destruction stands after one admin's request.
public enum DestructionStep: Sendable, Hashable {
    /// The first admin asked; another must confirm before `expiresAt`.
    case awaitingConfirmation(requestedBy: String, expiresAt: Int64)
    /// A second admin confirmed: the caller destroys the material and then calls ``LedgerStore/markDestroyed(name:version:at:)``.
    case confirmed(KeyVersionRecord, requestedBy: String)
}

extension LedgerStore {
    public func insertKeyVersion(_ key: KeyVersionRecord) async throws {
        try await self.write { db in
            if try KeyVersionRecord.fetchOne(db, key: ["name": key.name, "version": key.version]) != nil {
                throw LedgerError(.keyVersionExists, "key '\(key.kid)' already exists; versions are never reused")
            }
            try key.insert(db)
        }
    }

    public func keyVersions() async throws -> [KeyVersionRecord] {
        try await self.read { db in try KeyVersionRecord.order(Column("name"), Column("version")).fetchAll(db) }
    }

    public func keyVersion(name: String, version: Int) async throws -> KeyVersionRecord? {
        try await self.read { db in try KeyVersionRecord.fetchOne(db, key: ["name": name, "version": version]) }
    }

    /// The next version number of `name`: one above every version ever made, destroyed ones included.
    public func nextKeyVersion(name: String) async throws -> Int {
        try await self.read { db in
            (try Int.fetchOne(db, sql: "SELECT MAX(version) FROM keyVersion WHERE name = ?", arguments: [name]) ?? 0) + 1
        }
    }

    /// Makes a pending version the active one; the version active before becomes verify-only. One transaction.
    /// - Returns: the versions changed, the new active one first.
    public func activateKeyVersion(name: String, version: Int, at now: Int64) async throws -> [KeyVersionRecord] {
        try await self.write { db in
            guard var target = try KeyVersionRecord.fetchOne(db, key: ["name": name, "version": version]) else {
                throw LedgerError(.keyNotFound, "no key '\(name)/v\(version)'")
            }
            guard target.state == .pending else {
                throw LedgerError(.keyStateConflict, "key '\(target.kid)' is \(target.state.rawValue); only a pending version can become active")
            }
            var changed: [KeyVersionRecord] = []
            for var previous in try KeyVersionRecord.filter(Column("name") == name && Column("state") == KeyVersionRecord.State.active.rawValue).fetchAll(db) {
                previous.state = .verifyOnly
                previous.rotatedAt = now
                try previous.update(db)
                changed.append(previous)
            }
            target.state = .active
            target.activatedAt = now
            try target.update(db)
            return [target] + changed
        }
    }

    /// Retires a verify-only version: it is no longer published.
    /// - Throws: `KEY_STATE_CONFLICT` unless verify-only; `KEY_IN_USE` while authorizations it signed are
    ///   unexpired, unless `force`.
    public func retireKeyVersion(name: String, version: Int, force: Bool, at now: Int64) async throws -> KeyVersionRecord {
        try await self.write { db in
            guard var record = try KeyVersionRecord.fetchOne(db, key: ["name": name, "version": version]) else {
                throw LedgerError(.keyNotFound, "no key '\(name)/v\(version)'")
            }
            guard record.state == .verifyOnly || (force && record.state == .pending) else {
                throw LedgerError(
                    .keyStateConflict,
                    "key '\(record.kid)' is \(record.state.rawValue); only a verify-only version can be retired (rotate an active key first)"
                )
            }
            let unexpired = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM authorization WHERE kid = ? AND expiresAt > ?", arguments: [record.kid, now]) ?? 0
            if unexpired > 0, !force {
                throw LedgerError(
                    .keyInUse, "\(unexpired) authorization(s) signed by '\(record.kid)' are still unexpired; retire it after they expire, or force it"
                )
            }
            record.state = .retired
            record.retiredAt = now
            try record.update(db)
            return record
        }
    }

    /// One admin's request to destroy a retired version. The first request waits for a second, different
    /// admin to confirm within `confirmWithin` seconds.
    public func requestDestruction(name: String, version: Int, by admin: String, at now: Int64, confirmWithin: Int64) async throws -> DestructionStep {
        try await self.write { db in
            guard let record = try KeyVersionRecord.fetchOne(db, key: ["name": name, "version": version]) else {
                throw LedgerError(.keyNotFound, "no key '\(name)/v\(version)'")
            }
            guard record.state == .retired else {
                throw LedgerError(.keyStateConflict, "key '\(record.kid)' is \(record.state.rawValue); only a retired version can be destroyed")
            }
            let pending = try Row.fetchOne(db, sql: "SELECT requestedBy, expiresAt FROM keyDestruction WHERE kid = ?", arguments: [record.kid])
            if let pending, let requestedBy: String = pending["requestedBy"], let expiresAt: Int64 = pending["expiresAt"], expiresAt > now {
                guard requestedBy != admin else {
                    throw LedgerError(.dualControl, "'\(admin)' already asked to destroy '\(record.kid)'; a different admin must confirm before \(expiresAt)")
                }
                try db.execute(sql: "DELETE FROM keyDestruction WHERE kid = ?", arguments: [record.kid])
                return .confirmed(record, requestedBy: requestedBy)
            }
            try db.execute(
                sql: "INSERT OR REPLACE INTO keyDestruction (kid, requestedBy, requestedAt, expiresAt) VALUES (?, ?, ?, ?)",
                arguments: [record.kid, admin, now, now + confirmWithin]
            )
            return .awaitingConfirmation(requestedBy: admin, expiresAt: now + confirmWithin)
        }
    }

    /// Records that a version's material is gone: the sealed software key is erased with it.
    public func markDestroyed(name: String, version: Int, at now: Int64) async throws -> KeyVersionRecord {
        try await self.write { db in
            guard var record = try KeyVersionRecord.fetchOne(db, key: ["name": name, "version": version]) else {
                throw LedgerError(.keyNotFound, "no key '\(name)/v\(version)'")
            }
            record.state = .destroyed
            record.destroyedAt = now
            record.sealedPrivateKey = nil
            try record.update(db)
            return record
        }
    }

    /// Authorizations signed by each `kid`, from the durable records.
    public func signatureCounts() async throws -> [String: Int] {
        try await self.read { db in
            var counts: [String: Int] = [:]
            let sql = """
                SELECT kid, COUNT(*) AS count FROM authorization WHERE kid != '' GROUP BY kid
                UNION ALL SELECT kid, COUNT(*) AS count FROM checkpoint WHERE kid != '' GROUP BY kid
                """
            for row in try Row.fetchAll(db, sql: sql) {
                counts[row["kid"], default: 0] += row["count"] as Int
            }
            return counts
        }
    }
}
