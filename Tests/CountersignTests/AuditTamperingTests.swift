import Audit
import CountersignClient
import CountersignServer
import Crypto
import Foundation
import GRDB
import Ledger
import NIOCore
import NIOPosix
@_spi(Testing) import PKCS11
import PostgresLedger
import Signing
import Synchronization
import TestSupport
import Testing
import Wire

/// The audit log against a store changed behind the server's back: failing closed when it cannot be written, each
/// tampering found at its index by `audit verify`, and a server that refuses to start on a log it did not sign.
/// Part of the serialized suite ``AuditLogTests``.
extension AuditLogTests {
    @Test("fail closed: with the log unwritable no authorization is issued (AUDIT_UNAVAILABLE); afterwards the log has no gap and verifies")
    func failClosed() async throws {
        let server = try await TestServer.start()
        let client = try await server.connect(try await server.addPrincipal("agent-closed"))
        let path = server.dataDirectory.appendingPathComponent("countersign.sqlite").path
        let database = try Self.openForTampering(path)
        try await database.write { db in
            try db.execute(sql: "CREATE TRIGGER refuse BEFORE INSERT ON auditEntry BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        }
        let before = try await server.application.store.authorizationCount()
        let refused = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(1_000)) }
        #expect(refused?.code == .auditUnavailable)
        #expect(try await server.application.store.authorizationCount() == before, "nothing was issued")
        let (notReady, notReadyStatus) = try await InteropTests.get(server, "/readyz")
        #expect(notReadyStatus == 503, "a server that cannot write its audit log is not ready")
        #expect(notReady.hasPrefix("not ready: the last write to the store failed"), "\(notReady)")
        try await database.write { db in try db.execute(sql: "DROP TRIGGER refuse") }
        #expect(try await client.authorize(TestServer.request(1_000)).tier == "standard", "service resumes")
        #expect(try await InteropTests.get(server, "/readyz").1 == 200, "and it is ready again")
        let keys = Self.auditKeys(try await client.keys())
        await client.close()
        try await server.stop()

        let log = try AuditLogFile(path: path)
        let report = try AuditVerifier(publicKeys: keys).verify(checkpoints: try log.checkpoints().map(\.note), forEachEntry: { try log.forEachEntry($0) })
        let count = try log.entryCount()
        #expect(report.entries == count)
        var actions: [String] = []
        try log.forEachEntry { _, entry, _ in actions.append((try? Self.entry(String(decoding: entry, as: UTF8.self)))?["action"] as? String ?? "?") }
        #expect(actions.contains("lost"), "the failed decision's index is filled, not left as a gap")
        #expect(actions.last == "server.stop")
    }

    @Test(
        "audit verify finds each tampering at its index; an untouched log verifies",
        arguments: [
            ("untouched", nil, nil),
            (
                "change one byte of an entry", "at index 5: entry 5 was modified",
                "entry 5 was changed: its bytes no longer match the leaf hash recorded with it"
            ),
            ("change an entry and its recorded leaf hash", "do not match the signed checkpoint", "do not hash to the root signed by the checkpoint of"),
            ("delete an entry", "at index 7: entry 7 is missing (deleted)", "entry 7 is missing, and it is covered by the checkpoint of"),
            ("swap two entries", "at index 3: the entry stored at 3 says it is entry 4 (reordered)", "do not hash to the root signed"),
            ("drop the tail after a checkpoint", "at index 10: the log ends after 10 entries", "it ends after 10 entries, but"),
            ("forge a checkpoint with another key", "is not signed by the audit key", "do not hash to the root signed"),
        ] as [(String, String?, String?)]
    )
    func tampering(scenario: String, expected: String?, refusedAtStart: String?) async throws {
        let (path, jwks) = try await Self.sampleLog()
        // The data directory is copied, so that a server can also be started on the tampered store.
        let directory = try Self.copyDataDirectory(of: path, to: "tampered")
        let copy = directory.appendingPathComponent("countersign.sqlite").path
        let database = try Self.openForTampering(copy)
        try await database.write { db in
            switch scenario {
            case "change one byte of an entry":
                var entry = try Data.fetchOne(db, sql: "SELECT entry FROM auditEntry WHERE idx = 5")!
                entry[entry.count - 3] ^= 0x01
                try db.execute(sql: "UPDATE auditEntry SET entry = ? WHERE idx = 5", arguments: [entry])
            case "change an entry and its recorded leaf hash":
                let entry = Data(
                    try String.fetchOne(db, sql: "SELECT entry FROM auditEntry WHERE idx = 5")!.replacingOccurrences(of: "\"time\":", with: "\"time\":1").utf8)
                try db.execute(sql: "UPDATE auditEntry SET entry = ?, leafHash = ? WHERE idx = 5", arguments: [entry, Data(Merkle.leafHash(entry))])
            case "delete an entry":
                try db.execute(sql: "DELETE FROM auditEntry WHERE idx = 7")
            case "swap two entries":
                let three = try Row.fetchOne(db, sql: "SELECT entry, leafHash FROM auditEntry WHERE idx = 3")!
                let four = try Row.fetchOne(db, sql: "SELECT entry, leafHash FROM auditEntry WHERE idx = 4")!
                try db.execute(
                    sql: "UPDATE auditEntry SET entry = ?, leafHash = ? WHERE idx = 3", arguments: [four["entry"] as Data, four["leafHash"] as Data])
                try db.execute(
                    sql: "UPDATE auditEntry SET entry = ?, leafHash = ? WHERE idx = 4", arguments: [three["entry"] as Data, three["leafHash"] as Data])
            case "drop the tail after a checkpoint":
                try db.execute(sql: "DELETE FROM auditEntry WHERE idx >= 10")
            case "forge a checkpoint with another key":
                let size = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM auditEntry")!
                let checkpoint = Checkpoint(origin: "countersign.test/audit", size: size, rootHash: Merkle.emptyRoot, time: Self.now())
                let forger = P256.Signing.PrivateKey()
                let note = checkpoint.note(
                    keyName: "countersign.test/audit", publicKey: forger.publicKey, signature: try forger.signature(for: Data(checkpoint.body.utf8)))
                try db.execute(
                    sql: "INSERT INTO checkpoint (size, rootHash, time, note) VALUES (?, ?, ?, ?)",
                    arguments: [size, Data(Merkle.emptyRoot), checkpoint.time, note])
            default:
                break
            }
        }
        try database.close()
        let result = try await ProcessResult.run(
            executable: ProcessResult.builtProduct("countersign"), arguments: ["audit", "verify", "--store", copy, "--jwks", jwks], environment: [:]
        )
        if let expected {
            #expect(result.status == 2, "\(result.standardOutput)")
            #expect(result.standardError.contains("audit log NOT OK"), "\(result.standardError)")
            #expect(result.standardError.contains(expected), "\(result.standardError)")
        } else {
            #expect(result.status == 0, "\(result.standardError)")
            #expect(result.standardOutput.hasPrefix("audit log OK: "))
        }
        // The server distrusts its own store too: it refuses to start on a log that is not the one it signed.
        do {
            let server = try await TestServer.start(.init(dataDirectory: directory))
            try await server.stop()
            #expect(refusedAtStart == nil, "a server started on a tampered log")
        } catch {
            #expect(refusedAtStart.map { "\(error)".contains($0) } == true, "\(error)")
            #expect("\(error)".hasPrefix("AUDIT_LOG_MISMATCH: the audit log in the store is not the one that was signed"), "\(error)")
        }
    }

    @Test("a witness file keeps every checkpoint; a store rewritten with its checkpoints deleted is refused at start")
    func witnessFile() async throws {
        let fixture = try SoftHSMFixture.shared()
        let witness = fixture.directory.appendingPathComponent("witness-\(UUID().uuidString.prefix(6)).jsonl")
        let audit = "audit: { witness_file: \(witness.path) }\n"
        let first = try await TestServer.start(.init(policy: audit))
        let agent = try await first.connect(try await first.addPrincipal("agent-witnessed"))
        for _ in 0..<5 { _ = try await agent.authorize(TestServer.request(1_000)) }
        await agent.close()
        try await first.stop()
        let kept = try String(contentsOf: witness, encoding: .utf8).split(separator: "\n")
        #expect(!kept.isEmpty, "the stop's checkpoint is kept")

        // An untouched store restarts, also after a crash tore the witness file's last line.
        let handle = try FileHandle(forWritingTo: witness)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"note":"countersign.test/au"#.utf8))
        try handle.close()
        let again = try await TestServer.start(.init(dataDirectory: first.dataDirectory, policy: audit))
        try await again.stop()
        let lines = try String(contentsOf: witness, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == kept.count + 2, "the torn line is ended, and the next checkpoint is a line of its own")

        // The hardest rewrite for the store alone: an entry and its leaf hash changed, every checkpoint row deleted.
        let database = try Self.openForTampering(first.dataDirectory.appendingPathComponent("countersign.sqlite").path)
        try await database.write { db in
            let entry = Data(
                try String.fetchOne(db, sql: "SELECT entry FROM auditEntry WHERE idx = 3")!.replacingOccurrences(of: "\"time\":", with: "\"time\":1").utf8)
            try db.execute(sql: "UPDATE auditEntry SET entry = ?, leafHash = ? WHERE idx = 3", arguments: [entry, Data(Merkle.leafHash(entry))])
            try db.execute(sql: "DELETE FROM checkpoint")
        }
        try database.close()
        let refused = await #expect(throws: (any Error).self) { try await TestServer.start(.init(dataDirectory: first.dataDirectory, policy: audit)) }
        #expect("\(refused.map { "\($0)" } ?? "")".contains("does not extend the checkpoint kept in the witness file"), "\(String(describing: refused))")
        #expect("\(refused.map { "\($0)" } ?? "")".contains("do not hash to the kept checkpoint's root: the log was rewritten"))
    }

    @Test("--verify-log checks every checkpoint, not only the latest: an earlier one re-signed by another key is found, with progress on the way")
    func verifyWholeLog() async throws {
        let (path, _) = try await Self.sampleLog()
        let untouched = try Self.copyDataDirectory(of: path, to: "verify-all")
        let good = try await TestServer.start(.init(dataDirectory: untouched))
        final class Progress: Sendable { let done = Mutex<[Int]>([]) }
        let progress = Progress()
        let report = try await good.application.verifyWholeLog(progressEvery: 5) { done, _ in progress.done.withLock { $0.append(done) } }
        #expect(report.checkpoints >= 2)
        #expect(report.entries >= 20)
        #expect(progress.done.withLock { $0 }.starts(with: [5, 10, 15, 20]))
        try await good.stop()

        // The earlier checkpoint's note re-signed by another key (its size and root kept): the start-up check, which
        // reads the latest checkpoint, cannot see it; the whole-log check does.
        let directory = try Self.copyDataDirectory(of: path, to: "verify-earlier")
        let database = try Self.openForTampering(directory.appendingPathComponent("countersign.sqlite").path)
        let size = try await database.write { db -> Int in
            let row = try Row.fetchOne(db, sql: "SELECT id, size, rootHash, time FROM checkpoint ORDER BY id LIMIT 1")!
            let checkpoint = Checkpoint(origin: "countersign.test/audit", size: row["size"], rootHash: Array(row["rootHash"] as Data), time: row["time"])
            let forger = P256.Signing.PrivateKey()
            let note = checkpoint.note(
                keyName: "countersign.test/audit", publicKey: forger.publicKey, signature: try forger.signature(for: Data(checkpoint.body.utf8)))
            try db.execute(sql: "UPDATE checkpoint SET note = ? WHERE id = ?", arguments: [note, row["id"] as Int64])
            return row["size"]
        }
        try database.close()
        let server = try await TestServer.start(.init(dataDirectory: directory))
        let error = await #expect(throws: StartupError.self) { try await server.application.verifyWholeLog() }
        #expect("\(error.map { "\($0)" } ?? "")".contains("AUDIT_LOG_MISMATCH"), "\(String(describing: error))")
        #expect(
            "\(error.map { "\($0)" } ?? "")".contains("at index \(size): the checkpoint of \(size) entries is not signed by the audit key"),
            "\(String(describing: error))")
        try await server.stop()
    }

    @Test("--verify-log on a PostgreSQL store reads the cluster's log from the database, and finds an entry changed there at its index")
    func verifyWholeLogOnPostgres() async throws {
        guard let postgres = try PostgresTestServer.available() else { return }
        let database = try await postgres.freshDatabase()
        let store = """
            store: { kind: postgres, host: \(database.host), port: \(database.port), database: \(database.database), user: \(database.user), password_file: \(database.passwordFile ?? ""), tls: disable }

            """
        let server = try await TestServer.start(.init(policy: store))
        let agent = try await server.connect(try await server.addPrincipal("agent-pg-log"))
        let admin = try await server.connect(server.admin)
        for _ in 0..<5 { _ = try await agent.authorize(TestServer.request(1_000)) }
        _ = try await admin.auditProof(index: 4)  // a checkpoint covering them
        await agent.close()
        await admin.close()
        #expect(!FileManager.default.fileExists(atPath: server.dataDirectory.appendingPathComponent("countersign.sqlite").path))
        let report = try await server.application.verifyWholeLog()
        #expect(report.entries >= 7, "the start, the agent's registration, five decisions")
        #expect(report.checkpoints >= 1)

        // Another server's entry past an index it reserved and has not written yet, after the latest checkpoint: a gap
        // no signature covers, read as the log's end, not as a deletion.
        let last = try #require(try await postgres.integers("SELECT max(idx)::bigint FROM auditEntry", database: database.database).first)
        try await postgres.execute(
            "INSERT INTO auditEntry (idx, entry, leafHash, createdAt) VALUES (\(last + 1000), '\\x7b7d'::bytea, '\\x00'::bytea, 0)",
            database: database.database)
        #expect(try await server.application.verifyWholeLog().entries <= Int(last) + 1)

        try await postgres.execute("UPDATE auditEntry SET entry = entry || '\\x20'::bytea WHERE idx = 3", database: database.database)
        let error = await #expect(throws: StartupError.self) { try await server.application.verifyWholeLog() }
        #expect("\(error.map { "\($0)" } ?? "")".contains("AUDIT_LOG_MISMATCH"), "\(String(describing: error))")
        #expect("\(error.map { "\($0)" } ?? "")".contains("at index 3"), "\(String(describing: error))")
        try await server.stop()
    }

    @Test("a checkpoint row whose size or root was edited away from its signed note is refused at start")
    func checkpointColumnsMustMatchNote() async throws {
        let (path, _) = try await Self.sampleLog()
        let directory = try Self.copyDataDirectory(of: path, to: "columns")
        let database = try Self.openForTampering(directory.appendingPathComponent("countersign.sqlite").path)
        try await database.write { db in try db.execute(sql: "UPDATE checkpoint SET size = 0 WHERE id = (SELECT MAX(id) FROM checkpoint)") }
        try database.close()
        let error = await #expect(throws: (any Error).self) { try await TestServer.start(.init(dataDirectory: directory)) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("recorded size and root are not the ones its note states"), "\(String(describing: error))")
    }

    @Test("a rewritten log with a checkpoint made to match it is refused at start: the checkpoint is not signed by the audit key")
    func forgedMatchingCheckpoint() async throws {
        let (path, _) = try await Self.sampleLog()
        let directory = try Self.copyDataDirectory(of: path, to: "forged")
        let database = try Self.openForTampering(directory.appendingPathComponent("countersign.sqlite").path)
        try await database.write { db in
            var frontier = MerkleFrontier()
            for row in try Row.fetchAll(db, sql: "SELECT leafHash FROM auditEntry ORDER BY idx") { frontier.append(Array(row["leafHash"] as Data)) }
            let checkpoint = Checkpoint(origin: "countersign.test/audit", size: frontier.size, rootHash: frontier.root, time: Self.now())
            let forger = P256.Signing.PrivateKey()
            let note = checkpoint.note(
                keyName: "countersign.test/audit", publicKey: forger.publicKey, signature: try forger.signature(for: Data(checkpoint.body.utf8)))
            try db.execute(
                sql: "INSERT INTO checkpoint (size, rootHash, time, note) VALUES (?, ?, ?, ?)",
                arguments: [frontier.size, Data(frontier.root), checkpoint.time, note])
        }
        try database.close()
        let error = await #expect(throws: (any Error).self) { try await TestServer.start(.init(dataDirectory: directory)) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("is not signed by the audit key: the store was changed"), "\(String(describing: error))")
    }

    /// A stopped server's store with 20-odd entries and checkpoints at 12 entries and at the end, and its JWKS.
    /// The store opened to change it by hand, waiting out a stopped server's last connections.
    static func openForTampering(_ path: String) throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.busyMode = .timeout(30)
        return try DatabaseQueue(path: path, configuration: configuration)
    }

    /// A copy of the data directory around `store`: the admin credential, and the store through SQLite's
    /// backup API, which copies a consistent database whatever state its WAL is in (a file copy could take
    /// the main file before a checkpoint and the WAL after it).
    static func copyDataDirectory(of store: String, to name: String) throws -> URL {
        let source = URL(fileURLWithPath: store).deletingLastPathComponent()
        let directory = source.deletingLastPathComponent().appendingPathComponent("\(name)-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: source.appendingPathComponent("admin.credential"), to: directory.appendingPathComponent("admin.credential"))
        // The stopped server's connections may still be closing (a last checkpoint of the WAL): wait for them.
        var readOnly = Configuration()
        readOnly.readonly = true
        readOnly.busyMode = .timeout(30)
        let original = try DatabaseQueue(path: store, configuration: readOnly)
        var writable = Configuration()
        writable.busyMode = .timeout(30)
        let copy = try DatabaseQueue(path: directory.appendingPathComponent("countersign.sqlite").path, configuration: writable)
        try original.backup(to: copy)
        try copy.close()
        try original.close()
        return directory
    }

    static func sampleLog() async throws -> (store: String, jwks: String) {
        let server = try await TestServer.start()
        let agent = try await server.connect(try await server.addPrincipal("agent-sample"))
        let admin = try await server.connect(server.admin)
        while server.application.store.auditHead.size < 12 { _ = try await agent.authorize(TestServer.request(1_000)) }
        _ = try await admin.auditProof(index: 11)  // a checkpoint covering 12 entries
        for _ in 0..<8 { _ = try await agent.authorize(TestServer.request(1_000)) }
        let jwks = server.dataDirectory.appendingPathComponent("jwks.json").path
        try JSONEncoder().encode(try await admin.keys()).write(to: URL(fileURLWithPath: jwks))
        await agent.close()
        await admin.close()
        try await server.stop()  // logs the stop and signs a last checkpoint
        return (server.dataDirectory.appendingPathComponent("countersign.sqlite").path, jwks)
    }
}
