import Audit
import CountersignCore
import Crypto
import Foundation
import GRDB
import Ledger
import Logging
import Policy
import PostgresLedger
import Signing
import TestSupport
import Testing

@Suite("migrate-store: an SQLite installation into PostgreSQL")
struct StoreMigrationTests {
    @Test("every row is copied, the audit log has the same root and verifies, a second copy into the same database is refused")
    func copy() async throws {
        guard let server = try PostgresTestServer.available(), let source = try await StoreFixture.make(.sqlite) else { return }
        let store = try await source.open()
        try await store.insertPrincipal(PrincipalRecord(id: "alice", role: "approver", algorithm: "Ed25519", publicKey: Data([1, 2]), createdAt: 10))
        try await store.insertKeyVersion(
            KeyVersionRecord(
                name: "standard", version: 1, backend: "software", state: .active, publicKey: Data([7]), sealedPrivateKey: Data([9]), hsmLabel: nil, hsmID: nil,
                createdAt: 1, adopted: true))
        try await store.setSetting("policy.active_modes", to: Data("[\"lockdown\"]".utf8))
        for index in 0..<40 {
            _ = try await store.recordAuthorization(
                StoreConformanceTests.record(
                    "jti-\(index)", status: index % 10 == 0 ? .pendingApproval : .authorized, quorum: index % 10 == 0 ? 1 : nil,
                    approvalExpiresAt: index % 10 == 0 ? 5_000 : nil),
                scopes: [.agent("agent-a"), .team("t")])
        }
        _ = try await store.decideApproval(id: "jti-0", approver: "alice", verdict: .deny, at: 1_001)
        try await store.recordRefusal(RefusalRecord(agent: "agent-a", idempotencyKey: "k", code: "BUDGET_EXCEEDED", decision: Data("{}".utf8), createdAt: 5))
        let key = P256.Signing.PrivateKey()
        let head = store.auditHead
        let checkpoint = Checkpoint(origin: "test/audit", size: head.size, rootHash: head.root, time: 3)
        let note = checkpoint.note(keyName: "test/audit", publicKey: key.publicKey, signature: try key.signature(for: Data(checkpoint.body.utf8)))
        try await store.storeCheckpoint(CheckpointRecord(size: head.size, rootHash: Data(head.root), time: 3, note: note, kid: "audit/v1"))
        let spending = try await store.spending(scope: .team("t"), currency: "USD", since: 0, now: 1_100)
        await store.close()
        // As a store last written by an older countersignd: without the columns later migrations added.
        try await DatabaseQueue(path: source.path!).write { db in
            try db.execute(sql: "ALTER TABLE refusal DROP COLUMN request")
            try db.execute(sql: "ALTER TABLE checkpoint DROP COLUMN kid")
        }

        let target = try await server.freshDatabase()
        let report = try await StoreMigration.copy(sqlitePath: source.path!, to: target, logger: Logger(label: "test"))
        #expect(report.auditSize == head.size)
        #expect(report.root == head.root)
        let rows = Dictionary(uniqueKeysWithValues: report.rows.map { ($0.table, $0.count) })
        #expect(rows["authorization"] == 40 && rows["hold"] == 80 && rows["approval"] == 1 && rows["refusal"] == 1 && rows["checkpoint"] == 1)

        let copied = try await PostgresStore(configuration: target, logger: Logger(label: "test"))
        #expect(copied.auditHead.root == head.root)
        #expect(try await copied.authorizationCount() == 40)
        #expect(try await copied.spending(scope: .team("t"), currency: "USD", since: 0, now: 1_100) == spending)
        #expect(try await copied.principal(id: "alice")?.publicKey == Data([1, 2]))
        #expect(try await copied.keyVersion(name: "standard", version: 1)?.adopted == true)
        #expect(try await copied.setting("policy.active_modes") == Data("[\"lockdown\"]".utf8))
        #expect(try await copied.latestCheckpoint()?.note == note)
        // The copy goes on where the source stopped: the next index, the next refusal id.
        let next = try await copied.appendAudit { AuditEntry(index: $0, time: 9, kind: "server", action: "after", actor: "server") }
        #expect(next == Int64(head.size))
        await copied.close()

        // `countersign audit verify --config` reads the copy from PostgreSQL and checks it against the signed checkpoint.
        let directory = URL(fileURLWithPath: source.path!).deletingLastPathComponent()
        let jwks = directory.appendingPathComponent("jwks.json")
        try JSONEncoder().encode(
            JWKSet(keys: [
                JWK(keyID: KeyID(name: "audit", version: 1), publicKeyX963: key.publicKey.x963Representation, backend: .hsm, tier: "audit", maxAmount: [:])
            ])
        ).write(to: jwks)
        let configuration = directory.appendingPathComponent("cluster.yaml")
        try Data(
            """
            tiers:
              - { name: standard, max_amount: { USD: 50000 }, key: standard, backend: software }
            store: { kind: postgres, host: \(target.host), port: \(target.port), database: \(target.database), user: \(target.user), password_file: \(target.passwordFile ?? ""), tls: disable }

            """.utf8
        ).write(to: configuration)
        let verified = try await ProcessResult.run(
            executable: ProcessResult.builtProduct("countersign"), arguments: ["audit", "verify", "--config", configuration.path, "--jwks", jwks.path],
            environment: [:])
        #expect(verified.status == 0, "\(verified.standardError)")
        #expect(verified.standardOutput.hasPrefix("audit log OK: \(head.size + 1) entries, 1 signed checkpoints"), "\(verified.standardOutput)")

        // The business report reads the cluster's history straight from PostgreSQL.
        let business = try await ProcessResult.run(
            executable: ProcessResult.builtProduct("countersign"),
            arguments: ["report", "--config", configuration.path, "--from", "0", "--to", "10000", "--json"],
            environment: [:])
        #expect(business.status == 0, "\(business.standardError)")
        let figures = try JSONSerialization.jsonObject(with: Data(business.standardOutput.utf8)) as? [String: Any]
        #expect(figures?["decisions"] as? Int == 41)
        #expect(figures?["refusals"] as? [String: Int] == ["BUDGET_EXCEEDED": 1])
        #expect((figures?["approvals"] as? [String: Any])?["denied"] as? Int == 1)

        let again = await #expect(throws: LedgerError.self) {
            try await StoreMigration.copy(sqlitePath: source.path!, to: target, logger: Logger(label: "test"))
        }
        #expect(again?.reason.contains("already holds a ledger") == true)

        // The operator's way: `countersignd migrate-store` into another empty database prints the root exactly as
        // `countersign audit verify --store` printed it for the old file (docs/operations.md tells them to compare).
        let installation = directory.appendingPathComponent("installation")
        try FileManager.default.createDirectory(at: installation, withIntermediateDirectories: true)
        // Through SQLite's backup API: a copy of the file alone could miss what its WAL still holds.
        let copy = try DatabaseQueue(path: installation.appendingPathComponent("countersign.sqlite").path)
        try DatabaseQueue(path: source.path!).backup(to: copy)
        try copy.close()
        let second = try await server.freshDatabase()
        let secondConfiguration = directory.appendingPathComponent("second.yaml")
        try Data(
            String(decoding: try Data(contentsOf: configuration), as: UTF8.self).replacingOccurrences(
                of: "database: \(target.database),", with: "database: \(second.database),"
            ).utf8
        ).write(to: secondConfiguration)
        let migrated = try await ProcessResult.run(
            executable: ProcessResult.builtProduct("countersignd"),
            arguments: ["migrate-store", "--from", installation.path, "--config", secondConfiguration.path], environment: [:])
        #expect(migrated.status == 0, "\(migrated.standardError)")
        let oldFile = try await ProcessResult.run(
            executable: ProcessResult.builtProduct("countersign"),
            arguments: ["audit", "verify", "--store", installation.appendingPathComponent("countersign.sqlite").path, "--jwks", jwks.path], environment: [:])
        #expect(oldFile.status == 0, "\(oldFile.standardError)")
        let printedRoot = { (text: String) in
            text.split(separator: " ").drop { $0 != "root" }.dropFirst().first.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: ",\n")) }
        }
        let root = try #require(printedRoot(oldFile.standardOutput), "\(oldFile.standardOutput)")
        #expect(root == Data(head.root).base64EncodedString())
        #expect(printedRoot(migrated.standardOutput) == root, "\(migrated.standardOutput)")
    }

    @Test("a database whose schema is newer than this build knows is refused, not written")
    func newerSchema() async throws {
        guard let server = try PostgresTestServer.available() else { return }
        let target = try await server.freshDatabase()
        let store = try await PostgresStore(configuration: target, logger: Logger(label: "test"))
        await store.close()
        try await server.execute("INSERT INTO countersign_schema (version, name) VALUES (99, 'from the future')", database: target.database)
        let refused = await #expect(throws: LedgerError.self) { _ = try await PostgresStore(configuration: target, logger: Logger(label: "test")) }
        #expect(refused?.reason.contains("the database's schema is version 99, newer than this countersignd knows") == true, "\(String(describing: refused))")
    }
}
