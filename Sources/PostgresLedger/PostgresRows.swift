import CountersignCore
import Foundation
import Ledger
import NIOCore
import PostgresNIO

/// The records' columns, read and written in one order. Names are the SQLite schema's, folded to lower case by
/// PostgreSQL.
enum PostgresRows {
    static let authorizationColumns = """
        id, agent, idempotencyKey, requestHash, response, amount, currency, merchant, tier, kid, expiresAt, createdAt, voidedAt, status, decision, \
        request, quorum, approvalExpiresAt, auditIndex
        """

    static func authorization(_ row: PostgresRow) throws -> AuthorizationRecord {
        let (
            id, agent, key, requestHash, response, amount, currency, merchant, tier, kid, expiresAt, createdAt, voidedAt, status, decision, request,
            quorum, approvalExpiresAt, auditIndex
        ) = try row.decode(
            (String, String, String, Data, Data, Int64, String, String, String, String, Int64, Int64, Int64?, String, Data?, Data?, Int64?, Int64?, Int64?)
                .self
        )
        guard let status = AuthorizationRecord.Status(rawValue: status) else {
            throw LedgerError(.storeUnavailable, "authorization '\(id)' has a status this server does not know: '\(status)'")
        }
        var record = AuthorizationRecord(
            id: id, agent: agent, idempotencyKey: key, requestHash: requestHash, response: response, amount: amount, currency: currency, merchant: merchant,
            tier: tier, kid: kid, expiresAt: expiresAt, createdAt: createdAt, voidedAt: voidedAt, status: status, decision: decision, request: request,
            quorum: quorum.map(Int.init), approvalExpiresAt: approvalExpiresAt
        )
        record.auditIndex = auditIndex
        return record
    }

    /// The authorizations recorded for any of the (agent, idempotency key) pairs, in one statement.
    static func authorizations(agents: [String], idempotencyKeys: [String]) -> PostgresQuery {
        """
        SELECT \(unescaped: Self.authorizationColumns) FROM "authorization"
        WHERE (agent, idempotencyKey) IN (SELECT * FROM unnest(\(agents)::text[], \(idempotencyKeys)::text[]))
        """
    }

    static func authorizations(_ rows: PostgresRowSequence) async throws -> [AuthorizationRecord] {
        var records: [AuthorizationRecord] = []
        for try await row in rows { records.append(try Self.authorization(row)) }
        return records
    }

    static let principalColumns = "id, role, algorithm, publicKey, createdAt, revokedAt, previousAlgorithm, previousPublicKey, previousKeyExpiresAt"

    static func principal(_ row: PostgresRow) throws -> PrincipalRecord {
        let (id, role, algorithm, publicKey, createdAt, revokedAt, previousAlgorithm, previousPublicKey, previousKeyExpiresAt) = try row.decode(
            (String, String, String, Data, Int64, Int64?, String?, Data?, Int64?).self)
        var principal = PrincipalRecord(id: id, role: role, algorithm: algorithm, publicKey: publicKey, createdAt: createdAt, revokedAt: revokedAt)
        principal.previousAlgorithm = previousAlgorithm
        principal.previousPublicKey = previousPublicKey
        principal.previousKeyExpiresAt = previousKeyExpiresAt
        return principal
    }

    static let keyVersionColumns = """
        name, version, backend, state, publicKey, sealedPrivateKey, hsmLabel, hsmID, createdAt, activatedAt, rotatedAt, retiredAt, destroyedAt, adopted
        """

    static func keyVersion(_ row: PostgresRow) throws -> KeyVersionRecord {
        let (name, version, backend, state, publicKey, sealed, hsmLabel, hsmID, createdAt, activatedAt, rotatedAt, retiredAt, destroyedAt, adopted) =
            try row.decode((String, Int64, String, String, Data, Data?, String?, Data?, Int64, Int64?, Int64?, Int64?, Int64?, Bool).self)
        guard let state = KeyVersionRecord.State(rawValue: state) else {
            throw LedgerError(.storeUnavailable, "key '\(name)/v\(version)' has a state this server does not know: '\(state)'")
        }
        var record = KeyVersionRecord(
            name: name, version: Int(version), backend: backend, state: state, publicKey: publicKey, sealedPrivateKey: sealed, hsmLabel: hsmLabel,
            hsmID: hsmID, createdAt: createdAt, activatedAt: activatedAt, adopted: adopted
        )
        record.rotatedAt = rotatedAt
        record.retiredAt = retiredAt
        record.destroyedAt = destroyedAt
        return record
    }

    static let checkpointColumns = "id, size, rootHash, time, note, kid"

    static func checkpoint(_ row: PostgresRow) throws -> CheckpointRecord {
        let (id, size, rootHash, time, note, kid) = try row.decode((Int64, Int64, Data, Int64, String, String).self)
        var record = CheckpointRecord(size: Int(size), rootHash: rootHash, time: time, note: note, kid: kid)
        record.id = id
        return record
    }

    static let refusalColumns = "id, agent, idempotencyKey, code, decision, createdAt, auditIndex, request"

    static func refusal(_ row: PostgresRow) throws -> RefusalRecord {
        let (id, agent, key, code, decision, createdAt, auditIndex, request) = try row.decode(
            (Int64, String, String, String, Data, Int64, Int64?, Data?).self)
        var record = RefusalRecord(agent: agent, idempotencyKey: key, code: code, decision: decision, createdAt: createdAt, request: request)
        record.id = id
        record.auditIndex = auditIndex
        return record
    }
}

/// bytea binds: `ByteBuffer` is what postgres-nio sends as bytea without a throwing encoder (`[UInt8]` would go as `"char"[]`).
func bytea(_ data: Data) -> ByteBuffer { ByteBuffer(bytes: data) }
func bytea(_ data: Data?) -> ByteBuffer? { data.map { ByteBuffer(bytes: $0) } }
func bytea(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }
