import CountersignCore
import Foundation
import Ledger
import Logging
@_spi(Testing) import PostgresLedger
import PostgresNIO
import TestSupport
import Testing

@Suite("PostgreSQL group commit, with another server's transaction in between")
struct PostgresGroupTests {
    /// Another server's transaction, on a connection of its own: it records `record`'s key and holds its commit.
    static func otherServerRecords(_ record: AuthorizationRecord, on connection: PostgresConnection) async throws {
        try await connection.query("BEGIN", logger: Logger(label: "test"))
        try await connection.query(
            """
            INSERT INTO "authorization" (id, agent, idempotencyKey, requestHash, response, amount, currency, tier, kid, expiresAt, createdAt, status)
            VALUES (\(record.id), \(record.agent), \(record.idempotencyKey), \(record.requestHash), \(record.response), \(record.amount),
                    \(record.currency), \(record.tier), \(record.kid), \(record.expiresAt), \(record.createdAt), 'authorized')
            """,
            logger: Logger(label: "test"))
    }

    @Test(
        "two requests with one key in one group, while another server records that key: both are answered with the other server's record, never with a signature nobody stored"
    )
    func twinsInAGroupFollowTheRecordThatHoldsTheKey() async throws {
        guard let server = try PostgresTestServer.available() else { return }
        let database = try await server.freshDatabase()
        let store = try await PostgresStore(configuration: database, logger: Logger(label: "test"))
        let other = try await server.connect(database: database.database)
        do {
            // Another server's record of the key, not committed yet: this server's read of the key's twins misses it.
            let theirs = StoreConformanceTests.record("jti-theirs", key: "shared-key")
            try await Self.otherServerRecords(theirs, on: other)
            // A request and its retry, same key, committed in one group.
            store.pauseCommits()
            let answers = Task {
                try await withThrowingTaskGroup(of: RecordingOutcome.self) { group in
                    for id in ["jti-first", "jti-retry"] {
                        group.addTask { try await store.recordAuthorization(StoreConformanceTests.record(id, key: "shared-key")) }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            try await eventually("both wait for the same commit") { store.pendingCommits == 2 }
            store.resumeCommits()
            // The group's insert waits on the other transaction's row for the key; then that transaction commits.
            try await eventually("this server's insert waits for the other server's transaction") {
                let waiting = try? await server.integers(
                    "SELECT count(*)::bigint FROM pg_stat_activity WHERE datname = '\(database.database)' AND wait_event_type = 'Lock'",
                    database: database.database)
                return waiting?.first == 1
            }
            try await other.query("COMMIT", logger: Logger(label: "test"))
            let outcomes = try await answers.value
            #expect(outcomes.count == 2)
            for outcome in outcomes {
                #expect(try StoreConformanceTests.recorded(outcome).id == "jti-theirs", "\(outcome)")
            }
            #expect(try await store.authorizationCount() == 1)
        } catch {
            _ = try? await other.query("ROLLBACK", logger: Logger(label: "test"))
            try? await other.close()
            await store.close()
            throw error
        }
        try await other.close()
        await store.close()
    }
}
