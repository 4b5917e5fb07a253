import Audit
import CountersignClient
import CountersignServer
import Foundation
import GRDB
@_spi(Testing) import Ledger
import Policy
import TestSupport
import Testing
import Wire

@Suite("Idempotent retries and durable records", .timeLimit(.minutes(1)))
struct IdempotencyTests {
    @Test("the same key and body returns the original answer; the same key with another body is refused")
    func sameKey() async throws {
        try await withServer { server in
            let client = try await server.connect(try await server.addPrincipal("agent-retry"))
            let request = TestServer.request(1_250, key: "order-77")
            let first = try await client.authorize(request)
            let again = try await client.authorize(request)
            #expect(again == first, "the very same JWS, id and expiry")
            var changed = request
            changed.amount = 1_251
            let conflict = await #expect(throws: WireError.self) { try await client.authorize(changed) }
            #expect(conflict?.code == .idempotencyConflict)
            #expect(try await server.application.store.authorizationCount() == 1)
            // Keys belong to their agent: another agent's "order-77" is its own payment.
            let other = try await server.connect(try await server.addPrincipal("agent-retry-2"))
            #expect(try await other.authorize(request).authorizationID != first.authorizationID)
            await client.close()
            await other.close()
        }
    }

    @Test("20 concurrent retries of one request yield one authorization, one record and one hold")
    func concurrentRetries() async throws {
        try await withServer { server in
            let credential = try await server.addPrincipal("agent-impatient")
            let clients = try await (0..<4).asyncMap { _ in try await server.connect(credential) }
            let request = TestServer.request(200_000, key: "same-key")  // the HSM tier: the slowest to sign
            let answers = try await withThrowingTaskGroup(of: Authorization.self) { group in
                for index in 0..<20 {
                    group.addTask { try await clients[index % clients.count].authorize(request) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.count == 20)
            #expect(Set(answers.map(\.authorizationID)).count == 1)
            #expect(Set(answers.map(\.jws)).count == 1)
            #expect(try await server.application.store.authorizationCount() == 1)
            #expect(try await server.application.store.spent(agent: "agent-impatient", currency: "USD", since: 0) == 200_000, "held once")
            for client in clients { await client.close() }
        }
    }

    @Test("a recorded authorization survives a restart: the retry after it gets the same answer")
    func survivesRestart() async throws {
        let server = try await TestServer.start()
        let credential = try await server.addPrincipal("agent-restart")
        let client = try await server.connect(credential)
        let request = TestServer.request(700, key: "before-restart")
        let first = try await client.authorize(request)
        await client.close()
        try await server.stop()

        try await withServer(.init(dataDirectory: server.dataDirectory)) { restarted in
            let client = try await restarted.connect(credential)
            #expect(try await client.authorize(request) == first)
            await client.close()
        }
    }

    @Test("when the decision cannot be written, no authorization is issued (AUDIT_UNAVAILABLE); service resumes after")
    func failClosed() async throws {
        try await withServer { server in
            let client = try await server.connect(try await server.addPrincipal("agent-fail-closed"))
            let database = try AuditLogTests.openForTampering(server.dataDirectory.appendingPathComponent("countersign.sqlite").path)
            try await database.write { db in
                try db.execute(sql: "CREATE TRIGGER refuse BEFORE INSERT ON authorization BEGIN SELECT RAISE(ABORT, 'disk full'); END")
            }
            let refused = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(300)) }
            #expect(refused?.code == .auditUnavailable)
            #expect(refused?.retryable == true)
            #expect(try await server.application.store.authorizationCount() == 0)
            try await database.write { db in try db.execute(sql: "DROP TRIGGER refuse") }
            #expect(try await client.authorize(TestServer.request(300)).tier == "standard")
            await client.close()
        }
    }

    @Test("the rows the store makes itself carry the injected clock's time, not the machine's")
    func injectedClock() async throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("ledger-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("ledger.sqlite").path
        let store = try LedgerStore(path: path, wallClock: WallClock { 1_234_567 })
        let index = try await store.appendAudit { AuditEntry(index: $0, time: 1_234_567, kind: "server", action: "server.start", actor: "server") }
        let written = try await DatabaseQueue(path: path).read { db in
            try Int64.fetchOne(db, sql: "SELECT createdAt FROM auditEntry WHERE idx = ?", arguments: [index])
        }
        #expect(written == 1_234_567)
    }

    @Test("records that arrive together are committed in one transaction")
    func groupCommit() async throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("ledger-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let store = try LedgerStore(path: directory.appendingPathComponent("ledger.sqlite").path)
        store.pauseCommits()
        let records = (0..<50).map { index in
            AuthorizationRecord(
                id: "jti-\(index)", agent: "agent-\(index % 5)", idempotencyKey: "key-\(index)", requestHash: Data([UInt8(index)]), response: Data("{}".utf8),
                amount: Int64(index + 1), currency: "USD", tier: "standard", kid: "standard/v1", expiresAt: 1_000, createdAt: 0
            )
        }
        let committing = Task {
            try await withThrowingTaskGroup(of: AuthorizationRecord.self) { group in
                for record in records {
                    group.addTask {
                        guard case .recorded(let stored) = try await store.recordAuthorization(record) else {
                            throw FixtureError(reason: "no limit was given, so none can be exceeded")
                        }
                        return stored
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        try await eventually("all 50 records wait for the commit") { store.pendingCommits == 50 }
        #expect(try await store.authorizationCount() == 0, "nothing is durable, so nothing has been answered")
        store.resumeCommits()
        let stored = try await committing.value
        #expect(Set(stored.map(\.id)) == Set(records.map(\.id)))
        #expect(store.groupCommitStatistics.transactions == 1)
        #expect(store.groupCommitStatistics.records == 50)
        #expect(try await store.authorizationCount() == 50)
    }

    @Test("every commit is synced before it returns: the writer runs with synchronous = FULL (GRDB's WAL set-up chooses NORMAL)")
    func commitsAreSynced() async throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("ledger-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let store = try LedgerStore(path: directory.appendingPathComponent("ledger.sqlite").path)
        #expect(try await store.writerSynchronousMode() == 2)
    }

    @Test("the write-ahead log is checkpointed without a caller waiting: committed rows reach the database file itself")
    func walCheckpoint() async throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("ledger-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("ledger.sqlite").path
        let store = try LedgerStore(path: path)
        // One transaction each (every call waits for its commit): 200 transactions start a checkpoint.
        for index in 0..<200 {
            let record = AuthorizationRecord(
                id: "jti-\(index)", agent: "agent", idempotencyKey: "key-\(index)", requestHash: Data([1]), response: Data(), amount: 1, currency: "USD",
                tier: "micro", kid: "micro/v1", expiresAt: 1_000, createdAt: 0
            )
            _ = try await store.recordAuthorization(record)
        }
        // No commit follows: once the writer has finished its top-up (anything queued on it waits for that) and
        // the background checkpoint has finished, nothing writes to the file.
        _ = try await store.writerSynchronousMode()
        try await eventually("a checkpoint completes") { store.walCheckpoints >= 1 && !store.walCheckpointRunning }
        // The database file alone, without its WAL, holds every row committed before the checkpoint.
        let copy = directory.appendingPathComponent("copy.sqlite").path
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        let count = try await DatabaseQueue(path: copy).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM authorization") }
        #expect(count == 200)
    }

    @Test("when the committer goes idle it tops the checkpoint up on the writer, so the WAL starts over")
    func walStartsOver() async throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("ledger-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("ledger.sqlite").path
        let store = try LedgerStore(path: path, walTopUpInterval: 1)
        func record(_ index: Int) async throws {
            let record = AuthorizationRecord(
                id: "jti-\(index)", agent: "agent", idempotencyKey: "key-\(index)", requestHash: Data([1]), response: Data(), amount: 1, currency: "USD",
                tier: "micro", kid: "micro/v1", expiresAt: 1_000, createdAt: 0
            )
            _ = try await store.recordAuthorization(record)
        }
        for index in 0..<30 { try await record(index) }
        // Whatever is queued on the writer waits for its idle top-up; the next transaction then starts the WAL over.
        _ = try await store.writerSynchronousMode()
        try await record(30)
        _ = try await store.writerSynchronousMode()
        let frames = try await DatabaseQueue(path: path).writeWithoutTransaction { db in
            try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(PASSIVE)")?[1] as Int? ?? -1
        }
        // One transaction's pages since the start, not the 31 transactions' (over a hundred).
        #expect((0..<20).contains(frames), "the WAL holds \(frames) frames")
    }

    @Test("rows written by the commit's own statements read back as the records they were, every column set")
    func rowsRoundTrip() async throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("ledger-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let store = try LedgerStore(path: directory.appendingPathComponent("ledger.sqlite").path)
        let pending = AuthorizationRecord(
            id: "jti-pending", agent: "agent-a", idempotencyKey: "key-1", requestHash: Data([1, 2, 3]), response: Data("{\"status\":1}".utf8), amount: 4_200,
            currency: "EUR", merchant: "m-1", tier: "critical", kid: "critical/v2", expiresAt: 900, createdAt: 100, voidedAt: 150, status: .pendingApproval,
            decision: Data("{\"d\":1}".utf8), request: Data("{\"r\":1}".utf8), quorum: 2, approvalExpiresAt: 800
        )
        let plain = AuthorizationRecord(
            id: "jti-plain", agent: "agent-a", idempotencyKey: "key-2", requestHash: Data([4]), response: Data(), amount: 1, currency: "USD", tier: "micro",
            kid: "micro/v1", expiresAt: 400, createdAt: 100
        )
        for record in [pending, plain] {
            guard case .recorded(let stored) = try await store.recordAuthorization(record, scopes: [.agent("agent-a"), .team("t")]) else {
                throw FixtureError(reason: "no limit was given, so none can be exceeded")
            }
            #expect(stored.auditIndex != nil)
            #expect(try await store.authorization(id: record.id) == stored, "every column of '\(record.id)' reads back")
        }
        // The holds: the pending one counts until its approval deadline, the plain one until released.
        #expect(try await store.spent(scope: .team("t"), currency: "EUR", since: 0, now: 799) == 4_200)
        #expect(try await store.spent(scope: .team("t"), currency: "EUR", since: 0, now: 800) == 0)
        #expect(try await store.spent(scope: .agent("agent-a"), currency: "USD", since: 0, now: 101) == 1)
        let refusal = RefusalRecord(agent: "agent-a", idempotencyKey: "key-3", code: "BUDGET_EXCEEDED", decision: Data("{\"x\":2}".utf8), createdAt: 120)
        try await store.recordRefusal(refusal)
        let refusals = try await store.refusals(agent: "agent-a")
        #expect(refusals.count == 1)
        #expect(refusals.first?.id != nil && refusals.first?.auditIndex != nil)
        #expect(refusals.map { [$0.agent, $0.idempotencyKey, $0.code] } == [["agent-a", "key-3", "BUDGET_EXCEEDED"]])
        #expect(refusals.first?.decision == refusal.decision && refusals.first?.createdAt == 120)
    }

    @Test("a store made before v12 keeps every row, hold and twin check when its unique index is made key first")
    func keyFirstMigration() async throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("ledger-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("ledger.sqlite").path
        try LedgerStore.migrate(path: path, upTo: "v11: passkeys and enrollment links of the approvals console")
        // Two agents with the same key, one pending approval with a verdict, each with its hold: as v11 wrote them.
        try await DatabaseQueue(path: path).write { db in
            try db.execute(
                sql: """
                    INSERT INTO authorization (id, agent, idempotencyKey, requestHash, response, amount, currency, tier, kid, expiresAt,
                        createdAt, voidedAt, merchant, status, decision, request, quorum, approvalExpiresAt, auditIndex)
                    VALUES ('jti-a', 'agent-a', 'order-1', x'01', x'7b7d', 700, 'USD', 'standard', 'standard/v1', 900, 100, NULL, 'm-1',
                            'authorized', x'02', x'03', NULL, NULL, 0),
                           ('jti-b', 'agent-b', 'order-1', x'04', x'5b5d', 9000, 'EUR', 'critical', 'critical/v1', 950, 110, NULL, 'm-2',
                            'pending_approval', x'05', x'06', 2, 800, 1);
                    INSERT INTO hold (authorizationID, scope, currency, amount, createdAt, expiresAt, releasedAt)
                    VALUES ('jti-a', 'agent:agent-a', 'USD', 700, 100, NULL, NULL), ('jti-b', 'agent:agent-b', 'EUR', 9000, 110, 800, NULL);
                    INSERT INTO approval (authorizationID, approver, verdict, decidedAt) VALUES ('jti-b', 'approver-1', 'approve', 120);
                    """)
        }
        // The table's columns, its indexes' definitions and its rows, as v11 left them: v12 must change none of them.
        func shape(_ db: Database) throws -> (columns: [Row], indexes: [Row], rows: [Row]) {
            (
                try Row.fetchAll(db, sql: #"SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info('authorization') ORDER BY cid"#),
                try Row.fetchAll(
                    db, sql: "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'authorization' AND sql IS NOT NULL ORDER BY name"),
                try Row.fetchAll(db, sql: "SELECT * FROM authorization ORDER BY id")
            )
        }
        let before = try DatabaseQueue(path: path).read { try shape($0) }
        let store = try LedgerStore(path: path)
        let after = try DatabaseQueue(path: path).read { try shape($0) }
        #expect(after.columns == before.columns)
        #expect(after.indexes == before.indexes)
        #expect(after.rows == before.rows && after.rows.count == 2)
        let a = try #require(try await store.authorization(agent: "agent-a", idempotencyKey: "order-1", certain: true))
        let b = try #require(try await store.authorization(agent: "agent-b", idempotencyKey: "order-1", certain: true))
        #expect([a.id, b.id] == ["jti-a", "jti-b"])
        #expect(a.response == Data("{}".utf8) && a.amount == 700 && a.merchant == "m-1" && a.status == .authorized && a.auditIndex == 0)
        #expect(b.status == .pendingApproval && b.quorum == 2 && b.approvalExpiresAt == 800 && b.decision == Data([5]) && b.request == Data([6]))
        #expect(try await store.spent(scope: .agent("agent-a"), currency: "USD", since: 0, now: 101) == 700, "the hold still counts")
        #expect(try await store.approvals(of: "jti-b").map(\.approver) == ["approver-1"])

        let (uniqueColumns, indexes, brokenReferences) = try await DatabaseQueue(path: path).read { db in
            (
                try String.fetchAll(
                    db,
                    sql: """
                        SELECT info.name FROM pragma_index_list('authorization') AS list, pragma_index_info(list.name) AS info
                        WHERE list."unique" = 1 AND list.origin = 'u' ORDER BY info.seqno
                        """),
                Set(try String.fetchAll(db, sql: "SELECT name FROM pragma_index_list('authorization') WHERE origin = 'c'")),
                try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").count
            )
        }
        #expect(uniqueColumns == ["idempotencyKey", "agent"])
        #expect(indexes == ["authorization_spending", "authorization_merchant", "authorization_kid", "authorization_pending"])
        #expect(brokenReferences == 0)

        // A twin of agent-a's request still finds the stored one, and agent-b's key is still its own.
        let twin = AuthorizationRecord(
            id: "jti-twin", agent: "agent-a", idempotencyKey: "order-1", requestHash: Data([1]), response: Data(), amount: 700, currency: "USD",
            tier: "standard", kid: "standard/v1", expiresAt: 900, createdAt: 130)
        guard case .recorded(let stored) = try await store.recordAuthorization(twin) else { throw FixtureError(reason: "no limit was given") }
        #expect(stored.id == "jti-a")
        #expect(try await store.authorizationCount() == 2)
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

@Suite("The idempotency key filter")
struct KeyFilterTests {
    @Test("never forgets a key, even past its capacity; rarely claims one it never saw; rebuilds")
    func filter() {
        let filter = KeyFilter(capacity: 70_000, minimumCapacity: 65_536)
        for index in 0..<70_000 { _ = filter.insert(agent: "agent-\(index % 7)", key: "key-\(index)") }
        #expect(!filter.insert(agent: "agent-0", key: "one-too-many"), "over capacity it asks to be rebuilt")
        #expect((0..<70_000).allSatisfy { filter.mayContain(agent: "agent-\($0 % 7)", key: "key-\($0)") }, "no false negative")
        let falsePositives = (0..<10_000).filter { filter.mayContain(agent: "agent-\($0 % 7)", key: "absent-\($0)") }.count
        #expect(falsePositives < 300, "\(falsePositives) of 10,000 absent keys looked present")
        #expect(!filter.mayContain(agent: "agent-1", key: "key-0"), "a key is an agent's own")
        filter.rebuild([("a", "k")])
        #expect(filter.mayContain(agent: "a", key: "k"))
        #expect(
            (0..<1_000).filter { filter.mayContain(agent: "agent-\($0 % 7)", key: "key-\($0)") }.count < 30, "the rebuilt filter holds only what it was given")
    }
}

@Suite("Time-ordered idempotency keys")
struct IdempotencyKeyTests {
    /// Gives back the values it was made with, in order.
    struct Replay: RandomNumberGenerator {
        var values: [UInt64]
        mutating func next() -> UInt64 { self.values.removeFirst() }
    }

    @Test("a UUID version 7 as RFC 9562 builds it (its test vector, appendix A.6), and later keys sort after earlier ones")
    func uuidVersion7() {
        // 0x017F22E279B0 ms is 2022-02-22 19:22:22 UTC; rand_a 0xCC3, rand_b 0x18C4DC0C0C07398F (bits above them ignored).
        var random = Replay(values: [0xFFFF_FFFF_FFFF_FCC3, 0xD8C4_DC0C_0C07_398F])
        #expect(IdempotencyKeys.uuidVersion7(milliseconds: 0x017F_22E2_79B0, using: &random) == "017f22e2-79b0-7cc3-98c4-dc0c0c07398f")
        var zeros = Replay(values: [0, 0, 0, 0])
        let first = IdempotencyKeys.uuidVersion7(milliseconds: 1, using: &zeros)
        #expect(first == "00000000-0001-7000-8000-000000000000")
        #expect(IdempotencyKeys.uuidVersion7(milliseconds: 0x1_0000, using: &zeros) > first)
        let made = IdempotencyKeys.timeOrdered()
        #expect(made.count == 36 && UUID(uuidString: made) != nil && Array(made)[14] == "7")
    }
}
