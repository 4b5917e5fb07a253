import Ledger
import Synchronization
import Wire

/// The registered principals, read from the store at start and kept in memory; every change goes to the
/// store first.
final class PrincipalDirectory: Sendable {
    struct Entry: Sendable {
        var record: PrincipalRecord
        var role: Role
        var key: CredentialPublicKey
    }

    private let store: LedgerStore
    private let entries = Mutex<[String: Entry]>([:])

    init(store: LedgerStore) {
        self.store = store
    }

    func load() async throws {
        let records = try await self.store.principals()
        let loaded = try records.map { try Self.entry($0) }
        self.entries.withLock { entries in
            entries = Dictionary(uniqueKeysWithValues: loaded.map { ($0.record.id, $0) })
        }
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
            throw WireError(.internalError, "principal '\(record.id)' has an unknown role or algorithm in the store")
        }
        return Entry(record: record, role: role, key: try CredentialPublicKey(algorithm: algorithm, rawRepresentation: record.publicKey))
    }
}

extension PrincipalRecord {
    var info: PrincipalInfo? {
        guard let role = Role(rawValue: self.role), let algorithm = CredentialAlgorithm(rawValue: self.algorithm) else { return nil }
        return PrincipalInfo(id: self.id, role: role, algorithm: algorithm, createdAt: self.createdAt, revokedAt: self.revokedAt)
    }
}
