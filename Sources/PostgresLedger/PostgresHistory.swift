import Ledger
import Logging
import PostgresNIO

/// A cluster's history read straight from PostgreSQL, for `countersign policy replay --config` and `countersign
/// report --config`: the rows the servers stored, ordered as ``StoreHistoryFile`` orders them.
public enum PostgresHistoryReader {
    public static func read(_ range: StoreHistory.Range, from configuration: PostgresStoreConfiguration, logger: Logger) async throws -> StoreHistory {
        let client = PostgresClient(configuration: try configuration.clientConfiguration(), backgroundLogger: logger)
        do {
            return try await withThrowingTaskGroup { group in
                group.addTask { await client.run() }
                defer { group.cancelAll() }
                // One snapshot: servers go on writing, and every part must be of the same moment.
                return try await client.withConnection { connection in
                    try await connection.query("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
                    let history = try await Self.read(range, on: connection, logger: logger)
                    try await connection.query("COMMIT", logger: logger)
                    return history
                }
            }
        } catch {
            throw PostgresStore.failure(error, doing: "read the history from \(configuration.location)")
        }
    }

    private static func read(_ range: StoreHistory.Range, on connection: PostgresConnection, logger: Logger) async throws -> StoreHistory {
        var history = StoreHistory()
        // Rows without an audit index (none since the first schema) sort first, as SQLite sorts them.
        history.authorizations = try await PostgresRows.authorizations(
            try await connection.query(
                """
                SELECT \(unescaped: PostgresRows.authorizationColumns) FROM "authorization"
                WHERE createdAt >= \(range.from) AND createdAt < \(range.to) ORDER BY createdAt, auditIndex NULLS FIRST, id COLLATE "C"
                """, logger: logger))
        for try await row in try await connection.query(
            """
            SELECT \(unescaped: PostgresRows.refusalColumns) FROM refusal
            WHERE createdAt >= \(range.from) AND createdAt < \(range.to) ORDER BY createdAt, auditIndex NULLS FIRST, id
            """, logger: logger)
        {
            history.refusals.append(try PostgresRows.refusal(row))
        }
        for try await (id, approver, verdict, decidedAt) in try await connection.query(
            """
            SELECT p.authorizationID, p.approver, p.verdict, p.decidedAt FROM approval p JOIN "authorization" a ON a.id = p.authorizationID
            WHERE a.createdAt >= \(range.from) AND a.createdAt < \(range.to)
            ORDER BY p.decidedAt, p.authorizationID COLLATE "C", p.approver COLLATE "C"
            """, logger: logger
        ).decode((String, String, String, Int64).self) {
            guard let verdict = ApprovalRecord.Verdict(rawValue: verdict) else { continue }
            history.approvals.append(ApprovalRecord(authorizationID: id, approver: approver, verdict: verdict, decidedAt: decidedAt))
        }
        for try await (id, scope, currency, amount, createdAt, expiresAt, releasedAt) in try await connection.query(
            """
            SELECT authorizationID, scope, currency, amount, createdAt, expiresAt, releasedAt FROM hold
            WHERE createdAt >= \(range.holdsFrom) AND createdAt < \(range.to) ORDER BY createdAt, authorizationID COLLATE "C", scope COLLATE "C"
            """, logger: logger
        ).decode((String, String, String, Int64, Int64, Int64?, Int64?).self) {
            history.holds.append(
                HoldRecord(
                    authorizationID: id, scope: scope, currency: currency, amount: amount, createdAt: createdAt, expiresAt: expiresAt, releasedAt: releasedAt))
        }
        for try await (agent, merchant) in try await connection.query(
            """
            SELECT DISTINCT agent, merchant FROM "authorization" WHERE createdAt < \(range.from) AND status = 'authorized'
            """, logger: logger
        ).decode((String, String).self) {
            history.merchantsPaidBefore[agent, default: []].insert(merchant)
        }
        return history
    }
}
