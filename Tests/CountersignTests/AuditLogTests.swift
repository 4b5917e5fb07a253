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
import Signing
import Synchronization
import TestSupport
import Testing
import Wire

@Suite("The audit log: entries, proofs, checkpoints, verification", .serialized, .timeLimit(.minutes(2)))
struct AuditLogTests {
    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    static func entry(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    /// The audit keys of a key set.
    static func auditKeys(_ keySet: JWKSet) -> [P256.Signing.PublicKey] {
        keySet.keys.filter { $0.tier == "audit" }.compactMap { try? $0.publicKey() }
    }

    /// An independent check of an inclusion proof: RFC 6962's recursive definition, not the RFC 9162 walker.
    static func rootFromPath(leaf: Merkle.Hash, index: Int, size: Int, path: ArraySlice<Merkle.Hash>) -> Merkle.Hash? {
        if size == 1 { return path.isEmpty ? leaf : nil }
        guard let sibling = path.last else { return nil }
        var k = 1
        while k * 2 < size { k *= 2 }
        func hash(_ left: Merkle.Hash, _ right: Merkle.Hash) -> Merkle.Hash { Array(SHA256.hash(data: [0x01] + left + right)) }
        if index < k { return Self.rootFromPath(leaf: leaf, index: index, size: k, path: path.dropLast()).map { hash($0, sibling) } }
        return Self.rootFromPath(leaf: leaf, index: index - k, size: size - k, path: path.dropLast()).map { hash(sibling, $0) }
    }

    @Test("every decision and admin action is an entry; the claims carry the entry's index and the entry the JWS's hash, never the JWS")
    func entries() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-audited"))
            let admin = try await server.connect(server.admin)
            let authorization = try await agent.authorize(TestServer.request(1_000))
            let refused = await #expect(throws: WireError.self) { try await agent.authorize(TestServer.request(10_000_000)) }
            #expect(refused?.code == .amountAboveLimit)

            let claims = try AuthorizationVerifier(keySet: try await agent.keys()).verify(authorization.jws, now: Self.now()).claims
            let index = try #require(claims.auditLogIndex)
            let log = try await admin.auditEntries(from: 0, limit: 1000)
            #expect(log.entries.map(\.index) == Array(0..<Int64(log.size)), "contiguous from 0")
            let first = try Self.entry(log.entries[0].entry)
            #expect(first["action"] as? String == "server.start")
            #expect(log.entries.contains { (try? Self.entry($0.entry))?["action"] as? String == "agents.add" })

            let decided = try Self.entry(log.entries[Int(index)].entry)
            #expect(decided["action"] as? String == "authorized")
            #expect(decided["subject"] as? String == authorization.authorizationID)
            let summary = try #require(decided["decision"] as? [String: Any])
            #expect(summary["jws_sha256"] as? String == Base64URL.encode(Array(SHA256.hash(data: Data(authorization.jws.utf8)))))
            #expect(summary["kid"] as? String == authorization.kid)
            #expect(summary["policy_version"] as? String == claims.policyVersion)
            #expect(summary["intent_hash"] as? String == claims.intentHash)
            let denial = try #require(
                log.entries.map { try Self.entry($0.entry) }.first { ($0["decision"] as? [String: Any])?["code"] as? String == "AMOUNT_ABOVE_LIMIT" })
            #expect(denial["action"] as? String == "denied")
            #expect(!log.entries.contains { $0.entry.contains(authorization.jws) || $0.entry.contains(authorization.jws.split(separator: ".")[2]) })

            let forbidden = await #expect(throws: WireError.self) { try await agent.auditEntries(from: 0) }
            #expect(forbidden?.code == .forbidden, "agents cannot read the log")
            let auditor = try await server.connect(try await server.addPrincipal("auditor-1", role: .auditor))
            #expect(try await auditor.auditEntries(from: 0).entries.isEmpty == false)
            let auditorAdmin = await #expect(throws: WireError.self) { try await auditor.listAgents() }
            #expect(auditorAdmin?.code == .forbidden, "an auditor reads the log and nothing else")
            for client in [agent, admin, auditor] { await client.close() }
        }
    }

    @Test("inclusion and consistency proofs check out independently against checkpoints signed by the published audit key")
    func proofs() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-proved"))
            let admin = try await server.connect(server.admin)
            var authorizations: [Authorization] = []
            for _ in 0..<5 { authorizations.append(try await agent.authorize(TestServer.request(1_000))) }
            let keys = Self.auditKeys(try await agent.keys())
            #expect(keys.count == 1)

            let proof = try await admin.auditProof(authorizationID: authorizations[2].authorizationID)
            let leaf = Array(SHA256.hash(data: [0x00] + Array(proof.entry.utf8)))
            #expect(Data(leaf).base64EncodedString() == proof.leafHash)
            let signed = try Checkpoint.parse(proof.checkpoint)
            #expect(signed.isSigned(by: keys[0]))
            #expect(signed.checkpoint.size == proof.treeSize)
            let path = proof.auditPath.compactMap { Data(base64Encoded: $0).map(Array.init) }
            #expect(Self.rootFromPath(leaf: leaf, index: Int(proof.index), size: proof.treeSize, path: path[...]) == signed.checkpoint.rootHash)
            #expect(Merkle.verifyInclusion(leafHash: leaf, index: Int(proof.index), treeSize: proof.treeSize, proof: path, root: signed.checkpoint.rootHash))

            for _ in 0..<7 { _ = try await agent.authorize(TestServer.request(1_000)) }
            let later = try await admin.auditProof(index: Int64(server.application.store.auditHead.size - 1))
            let consistency = try await admin.auditConsistency(oldSize: proof.treeSize, newSize: later.treeSize)
            let old = try Checkpoint.parse(consistency.oldCheckpoint)
            let new = try Checkpoint.parse(consistency.newCheckpoint)
            #expect(old.isSigned(by: keys[0]) && new.isSigned(by: keys[0]))
            #expect(
                Merkle.verifyConsistency(
                    oldSize: old.checkpoint.size, newSize: new.checkpoint.size, oldRoot: old.checkpoint.rootHash, newRoot: new.checkpoint.rootHash,
                    proof: consistency.proof.compactMap { Data(base64Encoded: $0).map(Array.init) }
                )
            )
            // An independent recomputation of the new root from every entry.
            let entries = try await admin.auditEntries(from: 0, limit: 1000).entries.prefix(new.checkpoint.size)
            #expect(Merkle.root(entries.map { Array(SHA256.hash(data: [0x00] + Array($0.entry.utf8))) }[...]) == new.checkpoint.rootHash)
            await agent.close()
            await admin.close()
        }
    }

    @Test("an idle server still signs a checkpoint every minute, and a busy one every N entries (injected clock)")
    func checkpointsOnTime() async throws {
        let clock = ManualClock()
        try await withServer(.init(clock: clock, policy: "audit: { checkpoint_entries: 5 }\n")) { server in
            let store = server.application.store
            #expect(try await store.checkpointCount() == 0)
            clock.advance(by: .seconds(60))
            try await eventually("a checkpoint after a minute") { (try? await store.checkpointCount()) == 1 }
            let idleSize = try #require(try await store.latestCheckpoint()).size
            clock.advance(by: .seconds(60))
            try await eventually("another after a second silent minute") { (try? await store.checkpointCount()) == 2 }
            #expect(try await store.latestCheckpoint()?.size == idleSize, "silence is signed too")

            let agent = try await server.connect(try await server.addPrincipal("agent-busy-log"))
            for _ in 0..<6 { _ = try await agent.authorize(TestServer.request(1_000)) }
            try await eventually("a checkpoint after 5 entries, with the clock standing still") {
                ((try? await store.latestCheckpoint())?.size ?? 0) >= idleSize + 5
            }
            await agent.close()
        }
    }

    @Test("a pending approval whose deadline passes becomes an expired decision in the log (injected clocks); export prints every entry")
    func expiryAndExport() async throws {
        let clock = ManualClock()
        let wall = SettableWallClock(1_795_612_455)
        try await withServer(.init(clock: clock, tiers: approvalTiers, wallClock: wall.wallClock)) { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-waits"))
            guard case .pendingApproval(let pending) = try await agent.submit(TestServer.request(12_000_000)) else {
                Issue.record("expected a pending approval")
                return
            }
            wall.advance(by: 900)
            clock.advance(by: .seconds(60))
            let store = server.application.store
            try await eventually("the expiry is logged") { (try? await store.authorization(id: pending.authorizationID))?.status == .expired }
            let entries = try await store.auditEntries(from: 0, limit: 1000).map { try Self.entry(String(decoding: $0.entry, as: UTF8.self)) }
            let expired = try #require(entries.first { $0["action"] as? String == "expired" })
            #expect(expired["subject"] as? String == pending.authorizationID)
            #expect(entries.contains { $0["action"] as? String == "pending_approval" && $0["subject"] as? String == pending.authorizationID })

            let credential = server.dataDirectory.appendingPathComponent("admin.credential").path
            let export = try await ProcessResult.run(
                executable: ProcessResult.builtProduct("countersign"), arguments: ["audit", "export", "--since", "0", "--format", "jsonl"],
                environment: ["COUNTERSIGN_SERVER": "127.0.0.1:\(server.port)", "COUNTERSIGN_CREDENTIAL": credential]
            )
            let lines = export.standardOutput.split(separator: "\n")
            #expect(lines.count >= entries.count, "\(export.standardError)")
            #expect(lines.allSatisfy { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) != nil })
            await agent.close()
        }
    }

    @Test("a server that cannot bind its ports writes nothing to the audit log, neither a start nor a stop")
    func unboundWritesNothing() async throws {
        let first = try await TestServer.start()
        let directory = first.dataDirectory
        try await first.stop()
        let path = directory.appendingPathComponent("countersign.sqlite").path
        let before = try AuditLogFile(path: path).entryCount()
        let blocker = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let taken = try #require(blocker.localAddress?.port)
        await #expect(throws: (any Error).self) { try await TestServer.start(.init(httpPort: taken, dataDirectory: directory)) }
        // The refused server has wound down once it lets go of the directory; only then is its silence proven.
        try await eventually("the refused server lets go of the data directory") { (try? DataDirectoryLock(directory: directory.path)) != nil }
        try await blocker.close()
        #expect(try AuditLogFile(path: path).entryCount() == before, "no server.start, no server.stop")
    }

    @Test("an auditor that pipelines pages of the log and leaves gets the rest cancelled, not computed for nobody")
    func goneReaderCancelled() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-pages"))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<300 { group.addTask { _ = try await agent.authorize(TestServer.request(1_000)) } }
                try await group.waitForAll()
            }
            await agent.close()
            let admin = try CredentialFile.read(path: server.dataDirectory.appendingPathComponent("admin.credential").path)
            let reader = try SlowClient(port: server.port)
            try reader.handshake(principal: admin.principal, key: try admin.key())
            for id in UInt32(10)..<UInt32(510) {
                reader.send(Frame(type: .auditEntries, requestID: id, body: WireJSON.encode(AuditEntriesRequest(from: 0, limit: 1000))))
            }
            reader.close()
            try await eventually("the pages left in flight were cancelled") {
                let (metrics, _) = (try? await InteropTests.get(server, "/metrics")) ?? ("", 0)
                return (MetricsTests.value(#"countersign_requests_total{outcome="cancelled",type="AUDIT_ENTRIES"}"#, in: metrics) ?? 0) > 0
            }
            let (metrics, _) = try await InteropTests.get(server, "/metrics")
            #expect((MetricsTests.value(#"countersign_requests_total{outcome="ok",type="AUDIT_ENTRIES"}"#, in: metrics) ?? 0) < 500)
        }
    }

    @Test("the store, its WAL and its shared memory are readable by their owner only (0600)")
    func storeFileModes() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-modes"))
            _ = try await agent.authorize(TestServer.request(1_000))
            await agent.close()
            let store = server.dataDirectory.appendingPathComponent("countersign.sqlite").path
            for path in [store, store + "-wal", store + "-shm"] {
                #expect(try DaemonTests.mode(of: path) == 0o600, "\(path)")
            }
        }
    }

    @Test("the audit key's checkpoint signatures are counted like any key's signatures, across a restart")
    func auditKeySignaturesCounted() async throws {
        let first = try await TestServer.start()
        try await first.stop()  // the stop signs a last checkpoint
        let second = try await TestServer.start(.init(dataDirectory: first.dataDirectory))
        let admin = try await second.connect(second.admin)
        let audit = try await admin.listKeys().first { $0.kid == "audit/v1" }
        #expect((audit?.signatures ?? 0) >= 1, "\(String(describing: audit))")
        await admin.close()
        try await second.stop()
    }

    @Test("the CLI checks proofs offline: an inclusion proof with no credential, and consistency with a checkpoint kept earlier")
    func offlineProofChecks() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-proven"))
            let authorization = try await agent.authorize(TestServer.request(1_000))
            let countersign = ProcessResult.builtProduct("countersign")
            let environment = [
                "COUNTERSIGN_SERVER": "127.0.0.1:\(server.port)",
                "COUNTERSIGN_CREDENTIAL": server.dataDirectory.appendingPathComponent("admin.credential").path,
            ]
            let jwks = "http://127.0.0.1:\(server.httpPort)/.well-known/jwks.json"
            let directory = server.dataDirectory

            let kept = try await ProcessResult.run(executable: countersign, arguments: ["audit", "checkpoint"], environment: environment)
            let keptFile = directory.appendingPathComponent("kept.note")
            try kept.standardOutput.write(to: keptFile, atomically: true, encoding: .utf8)

            let proof = try await ProcessResult.run(
                executable: countersign, arguments: ["audit", "proof", authorization.authorizationID], environment: environment)
            #expect(proof.status == 0, "\(proof.standardError)")
            let proofFile = directory.appendingPathComponent("proof.json")
            try proof.standardOutput.write(to: proofFile, atomically: true, encoding: .utf8)
            let checked = try await ProcessResult.run(
                executable: countersign, arguments: ["audit", "check-proof", proofFile.path, "--jwks", jwks], environment: [:])
            #expect(checked.status == 0 && checked.standardOutput.hasPrefix("proof OK: entry "), "\(checked.standardOutput)\(checked.standardError)")

            let forged = directory.appendingPathComponent("forged.json")
            try proof.standardOutput.replacingOccurrences(of: "agent-proven", with: "agent-forged").write(to: forged, atomically: true, encoding: .utf8)
            let refused = try await ProcessResult.run(
                executable: countersign, arguments: ["audit", "check-proof", forged.path, "--jwks", jwks], environment: [:])
            #expect(refused.status != 0 && refused.standardError.contains("INVALID"), "\(refused.standardError)")

            for _ in 0..<3 { _ = try await agent.authorize(TestServer.request(1_000)) }
            let consistent = try await ProcessResult.run(
                executable: countersign, arguments: ["audit", "consistency", "--old-checkpoint", keptFile.path, "--jwks", jwks], environment: environment
            )
            #expect(
                consistent.status == 0 && consistent.standardOutput.hasPrefix("consistent: the log of "),
                "\(consistent.standardOutput)\(consistent.standardError)")
            let rewritten = directory.appendingPathComponent("rewritten.note")
            var lines = kept.standardOutput.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            lines[2] = Data(repeating: 7, count: 32).base64EncodedString()
            try lines.joined(separator: "\n").write(to: rewritten, atomically: true, encoding: .utf8)
            let notSigned = try await ProcessResult.run(
                executable: countersign, arguments: ["audit", "consistency", "--old-checkpoint", rewritten.path, "--jwks", jwks], environment: environment
            )
            #expect(notSigned.status != 0 && notSigned.standardError.contains("INVALID: the kept checkpoint is not signed"), "\(notSigned.standardError)")
            await agent.close()
        }
    }

    @Test("`audit tail` into a pipe writes each entry as it comes (a SIEM feed is always a pipe)")
    func tailIntoPipe() async throws {
        try await withServer { server in
            let tail = Process()
            tail.executableURL = ProcessResult.builtProduct("countersign")
            tail.arguments = ["audit", "tail", "--from", "0"]
            tail.environment = [
                "COUNTERSIGN_SERVER": "127.0.0.1:\(server.port)",
                "COUNTERSIGN_CREDENTIAL": server.dataDirectory.appendingPathComponent("admin.credential").path,
            ]
            let pipe = Pipe()
            tail.standardOutput = pipe
            tail.standardError = FileHandle.nullDevice
            try tail.run()
            defer { tail.terminate() }
            let received = Mutex(Data())
            pipe.fileHandleForReading.readabilityHandler = { handle in
                let chunk = handle.availableData
                received.withLock { $0.append(chunk) }
            }
            // The log holds a few hundred bytes (server.start, the admin's actions): far below a stdio block.
            try await eventually("the first entries came through the pipe") {
                received.withLock { data in String(decoding: data, as: UTF8.self).contains(#""action":"server.start""#) }
            }
            let agent = try await server.connect(try await server.addPrincipal("agent-tailed"))
            _ = try await agent.authorize(TestServer.request(1_000))
            await agent.close()
            try await eventually("a new decision follows at once") {
                received.withLock { data in String(decoding: data, as: UTF8.self).contains(#""actor":"agent-tailed""#) }
            }
            pipe.fileHandleForReading.readabilityHandler = nil
        }
    }

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

    @Test("no PIN, private key or credential is in the store")
    func secrets() async throws {
        try await withServer { server in
            let agentCredential = try await server.addPrincipal("agent-secret")
            let agent = try await server.connect(agentCredential)
            _ = try await agent.authorize(TestServer.request(1_000))
            _ = try await agent.authorize(TestServer.request(100_000))
            await agent.close()
            let store = server.application.store
            let record = try #require(try await store.keyVersion(name: "standard", version: 1))
            let sealingKeyID = try #require(try await store.setting("hsm.sealing_key_id"))
            let scalar = try await server.application.hsm.sessions.withSession { session in
                try session.decryptAESGCM(
                    AESGCMSealedData(combined: Array(record.sealedPrivateKey!)), with: try session.findKey(.secretKey, id: Array(sealingKeyID)),
                    authenticating: Array("countersign-software-key:standard/v1".utf8)
                )
            }
            let secrets: [(String, Data)] = [
                ("the HSM PIN", Data(try SoftHSMFixture.shared().userPIN.utf8)),
                ("the software signing key", Data(scalar)),
                ("the agent's credential private key", Data(agentCredential.privateKey.utf8)),
                ("the admin's credential private key", Data(server.admin.privateKey.utf8)),
            ]
            for suffix in ["", "-wal"] {
                guard let bytes = FileManager.default.contents(atPath: store.location + suffix) else { continue }
                for (name, secret) in secrets {
                    #expect(bytes.range(of: secret) == nil, "\(name) is in \(store.location + suffix)")
                }
            }
        }
    }
}
