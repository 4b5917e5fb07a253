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
