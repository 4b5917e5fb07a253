import Ledger
import Policy
import Synchronization
import Wire

/// The registered principals, read from the store at start and kept in memory; every change goes to the
/// store first.
final class PrincipalDirectory: Sendable {
    struct Entry: Sendable {
        var record: PrincipalRecord
        var role: Role
        var key: CredentialPublicKey
        /// The credential before the last rotation, and until when it is still accepted.
        var previousKey: (key: CredentialPublicKey, until: Int64)?

        /// Whether `signature` over `transcript` is by this principal's credential, or by its previous one
        /// while that is within its grace period at `now`.
        /// `nil` when the signature is the principal's; otherwise why not, for the server's log only (the
        /// client hears the same AUTHENTICATION_FAILED whatever the reason).
        func refusal(_ algorithm: CredentialAlgorithm, signature: [UInt8], transcript: [UInt8], now: Int64) -> String? {
            if self.key.algorithm == algorithm, self.key.isValidSignature(signature, for: transcript) { return nil }
            if let previous = self.previousKey, previous.key.algorithm == algorithm, previous.key.isValidSignature(signature, for: transcript) {
                guard now < previous.until else {
                    return
                        "signed with the credential replaced by a rotation, whose grace ended at \(previous.until); the client must use the new credential file"
                }
                return nil
            }
            if self.key.algorithm != algorithm {
                return "the signature is \(algorithm.rawValue), but the registered credential is \(self.key.algorithm.rawValue)"
            }
            return "the signature does not verify with the registered credential (a wrong or outdated credential file?)"
        }
    }

    private let store: any Store
    private let wallClock: WallClock
    private let entries = Mutex<[String: Entry]>([:])

    init(store: any Store, wallClock: WallClock) {
        self.store = store
        self.wallClock = wallClock
    }

    var now: Int64 { self.wallClock.secondsSince1970 }

    func load() async throws {
        let records = try await self.store.principals()
        let loaded = try records.map { try Self.entry($0) }
        self.entries.withLock { entries in
            entries = Dictionary(uniqueKeysWithValues: loaded.map { ($0.record.id, $0) })
        }
    }

    /// Reads one principal again (another server of the cluster registered, rotated or revoked it).
    func reload(id: String) async throws {
        guard let record = try await self.store.principal(id: id) else { return }
        let entry = try Self.entry(record)
        self.entries.withLock { $0[id] = entry }
    }

    func lookup(_ id: String) -> Entry? {
        self.entries.withLock { $0[id] }
    }

    func add(id: String, role: Role, key: CredentialPublicKey, at time: Int64) async throws -> PrincipalRecord {
        let record = PrincipalRecord(id: id, role: role.rawValue, algorithm: key.algorithm.rawValue, publicKey: key.rawRepresentation, createdAt: time)
        try await self.store.insertPrincipal(record)
        let entry = Entry(record: record, role: role, key: key)
        self.entries.withLock { $0[id] = entry }
        return record
    }

    /// Gives a principal a new credential key; the old one is accepted for `graceSeconds` more.
    func rotateKey(id: String, key: CredentialPublicKey, graceSeconds: Int64) async throws -> PrincipalRecord {
        let record = try await self.store.rotatePrincipalKey(
            id: id, algorithm: key.algorithm.rawValue, publicKey: key.rawRepresentation, graceUntil: self.now + graceSeconds
        )
        let entry = try Self.entry(record)
        self.entries.withLock { $0[id] = entry }
        return record
    }

    func revoke(id: String, at time: Int64) async throws -> PrincipalRecord {
        let record = try await self.store.revokePrincipal(id: id, at: time)
        self.entries.withLock { $0[id]?.record = record }
        return record
    }

    func all() -> [PrincipalRecord] {
        self.entries.withLock { $0.values.map(\.record) }.sorted { $0.id < $1.id }
    }

    static func entry(_ record: PrincipalRecord) throws -> Entry {
        guard let role = Role(rawValue: record.role), let algorithm = CredentialAlgorithm(rawValue: record.algorithm) else {
            throw WireError(.internalError, "principal '\(record.id)' has an unknown role or algorithm in the store", retryable: false)
        }
        var entry = Entry(record: record, role: role, key: try CredentialPublicKey(algorithm: algorithm, rawRepresentation: record.publicKey))
        if let previousAlgorithm = record.previousAlgorithm.flatMap(CredentialAlgorithm.init(rawValue:)), let previousKey = record.previousPublicKey,
            let until = record.previousKeyExpiresAt
        {
            entry.previousKey = (try CredentialPublicKey(algorithm: previousAlgorithm, rawRepresentation: previousKey), until)
        }
        return entry
    }
}

extension PrincipalRecord {
    var info: PrincipalInfo? {
        guard let role = Role(rawValue: self.role), let algorithm = CredentialAlgorithm(rawValue: self.algorithm) else { return nil }
        return PrincipalInfo(id: self.id, role: role, algorithm: algorithm, createdAt: self.createdAt, revokedAt: self.revokedAt)
    }
}
