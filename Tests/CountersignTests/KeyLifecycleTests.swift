import CountersignClient
import CountersignServer
import Crypto
import Foundation
import Ledger
import NIOPosix
@_spi(Testing) import PKCS11
import Policy
import Signing
import Synchronization
import TestSupport
import Testing
import Wire

/// 0: before the rotations, 1: while they run, 2: after they all returned; and how many requests so far.
final class Progress: Sendable {
    let phase = Atomic<Int>(0)
    let count = Atomic<Int>(0)
}

@Suite("Key lifecycle: rotation, retirement, destruction, adoption, credentials", .serialized, .timeLimit(.minutes(2)))
struct KeyLifecycleTests {
    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    @Test("rotating every key while 4 clients authorize: no request fails, every token verifies, tokens after the switch carry the new kid")
    func rotationUnderLoad() async throws {
        try await withServer { server in
            let credential = try await server.addPrincipal("agent-busy")
            let admin = try await server.connect(server.admin)
            let before = try await admin.keys()
            let progress = Progress()
            let clients = try await withThrowingTaskGroup(of: [(phase: Int, result: Result<Authorization, any Error>)].self) { group in
                for index in 0..<4 {
                    group.addTask {
                        let client = try await server.connect(credential)
                        var outcomes: [(phase: Int, result: Result<Authorization, any Error>)] = []
                        var round = 0
                        var afterwards = 0
                        while true {
                            let started = progress.phase.load(ordering: .acquiring)
                            if started == 2 {
                                if afterwards == 20 { break }
                                afterwards += 1
                            }
                            // Alternate tiers: software (standard) and HSM (high).
                            let amount: Int64 = (round + index) % 2 == 0 ? 1_000 : 100_000
                            let result: Result<Authorization, any Error>
                            do {
                                result = .success(try await client.authorize(TestServer.request(amount)))
                            } catch {
                                result = .failure(error)
                            }
                            // Phase 0: answered before the rotation began; 2: sent after it ended; 1: the rest, which
                            // may have met either key (a task can be held between reading the phase and sending).
                            let answeredBefore = progress.phase.load(ordering: .acquiring) == 0
                            outcomes.append((started == 2 ? 2 : answeredBefore ? 0 : 1, result))
                            progress.count.add(1, ordering: .relaxed)
                            round += 1
                        }
                        await client.close()
                        return outcomes
                    }
                }
                try await eventually("the clients are under way") { progress.count.load(ordering: .relaxed) >= 40 }
                progress.phase.store(1, ordering: .releasing)
                for name in ["standard", "high", "audit"] {
                    let rotated = try await admin.rotateKey(name: name)
                    #expect(rotated.kid == "\(name)/v2")
                    #expect(rotated.state == "active")
                }
                progress.phase.store(2, ordering: .releasing)
                return try await group.reduce(into: []) { $0 += $1 }
            }
            let failures = clients.compactMap { if case .failure(let error) = $0.result { error } else { nil } }
            #expect(failures.isEmpty, "\(failures.prefix(3))")
            let keySet = try await admin.keys()
            #expect(Set(keySet.keys.map(\.kid)) == Set(before.keys.map(\.kid)).union(["standard/v2", "high/v2", "audit/v2"]))
            let verifier = AuthorizationVerifier(keySet: keySet)
            for (_, result) in clients {
                guard case .success(let authorization) = result else { continue }
                #expect(throws: Never.self) { try verifier.verify(authorization.jws, now: Self.now()) }
            }
            let after = clients.filter { $0.phase == 2 }.compactMap { try? $0.result.get() }
            #expect(after.count == 80)
            #expect(clients.contains { $0.phase == 1 }, "some requests ran while the keys rotated")
            #expect(after.allSatisfy { $0.kid.hasSuffix("/v2") }, "\(Set(after.map(\.kid)))")
            let answeredBefore = clients.filter { $0.phase == 0 }.compactMap { try? $0.result.get() }
            #expect(answeredBefore.count >= 40, "the clients were under way before the rotation")
            #expect(answeredBefore.allSatisfy { $0.kid.hasSuffix("/v1") }, "\(Set(answeredBefore.map(\.kid)))")
            let listed = try await admin.listKeys()
            #expect(listed.filter { $0.state == "verify-only" }.map(\.kid).sorted() == ["audit/v1", "high/v1", "standard/v1"])
            #expect(listed.first { $0.kid == "standard/v1" }.map { $0.signatures > 0 } == true)
            await admin.close()
        }
    }

    @Test("a software key is stored only wrapped by the token's AES key: its bytes are nowhere in the database, and another token cannot unwrap it")
    func wrappedSoftwareKey() async throws {
        try await withServer { server in
            let admin = try await server.connect(server.admin)
            _ = try await admin.rotateKey(name: "standard")
            await admin.close()
            let store = server.application.store
            let record = try #require(try await store.keyVersion(name: "standard", version: 2))
            let sealed = try #require(record.sealedPrivateKey)
            let sealingKeyID = try #require(try await store.setting("hsm.sealing_key_id"))
            let context = Array("countersign-software-key:standard/v2".utf8)
            let scalar = try await server.application.hsm.sessions.withSession { session in
                try session.decryptAESGCM(
                    AESGCMSealedData(combined: Array(sealed)), with: try session.findKey(.secretKey, id: Array(sealingKeyID)), authenticating: context)
            }
            #expect(
                try P256.Signing.PrivateKey(rawRepresentation: scalar).publicKey.x963Representation == record.publicKey,
                "the wrapped blob is this version's key")
            #expect(Data(sealed).range(of: Data(scalar)) == nil)
            for suffix in ["", "-wal", "-shm"] {
                let path = store.location + suffix
                guard let bytes = FileManager.default.contents(atPath: path) else { continue }
                #expect(bytes.range(of: Data(scalar)) == nil, "the raw key is in \(path)")
            }

            // Another token, even with an AES key under the same CKA_ID, cannot open it.
            let fixture = try SoftHSMFixture.shared()
            let threadPool = NIOThreadPool(numberOfThreads: 1)
            threadPool.start()
            let other = PKCS11SessionPool(
                token: try fixture.module.token(label: SoftHSMFixture.untouchedTokenLabel), pin: fixture.pin(), configuration: .init(maximumSessions: 1),
                threadPool: threadPool
            )
            let opened: Result<[UInt8], any Error>
            do {
                opened = .success(
                    try await other.withSession { session in
                        let impostor = try session.generateAES256Key(
                            label: "impostor-\(UUID().uuidString.prefix(6))", id: Array(sealingKeyID), usage: .encryptDecrypt)
                        return try session.decryptAESGCM(AESGCMSealedData(combined: Array(sealed)), with: impostor, authenticating: context)
                    }
                )
            } catch {
                opened = .failure(error)
            }
            await other.close()
            try await threadPool.shutdownGracefully()
            #expect(throws: (any Error).self) { try opened.get() }
        }
    }

    @Test("retire waits for unexpired authorizations; destroy needs two admins, removes the token objects and the JWK; versions are never reused")
    func retireAndDestroy() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-retire"))
            let admin = try await server.connect(server.admin)
            let second = try await server.connect(try await server.addPrincipal("admin-2", role: .admin))
            let signed = try await agent.authorize(TestServer.request(100_000))
            #expect(signed.kid == "high/v1")
            let record = try #require(try await server.application.store.keyVersion(name: "high", version: 1))
            let id = try #require(record.hsmID)

            let active = await #expect(throws: WireError.self) { try await admin.retireKey(kid: "high/v1") }
            #expect(active?.code == .keyStateConflict, "the active version cannot be retired")
            _ = try await admin.rotateKey(name: "high")
            let inUse = await #expect(throws: WireError.self) { try await admin.retireKey(kid: "high/v1") }
            #expect(inUse?.code == .keyInUse)
            #expect(inUse?.message == "1 authorization(s) signed by 'high/v1' are still unexpired; retire it after they expire, or force it")
            #expect(try await admin.retireKey(kid: "high/v1", force: true).state == "retired")
            #expect(try await admin.keys().key(kid: "high/v1") == nil, "a retired version is no longer published")

            let first = try await admin.destroyKey(kid: "high/v1")
            #expect(first.state == "awaiting_confirmation")
            let again = await #expect(throws: WireError.self) { try await admin.destroyKey(kid: "high/v1") }
            #expect(again?.code == .dualControl, "the same admin cannot confirm")
            let objectsBefore = try await server.application.hsm.sessions.withSession { try $0.findObjects(matching: [.bytes(.id, Array(id))]).count }
            #expect(objectsBefore == 2)
            let confirmed = try await second.destroyKey(kid: "high/v1")
            #expect(confirmed == KeyDestruction(kid: "high/v1", state: "destroyed", requestedBy: server.admin.principal, confirmedBy: "admin-2"))
            let objectsAfter = try await server.application.hsm.sessions.withSession { try $0.findObjects(matching: [.bytes(.id, Array(id))]).count }
            #expect(objectsAfter == 0, "C_FindObjects finds nothing of the destroyed pair")
            #expect(try await agent.keys().key(kid: "high/v1") == nil, "a destroyed version is not published")

            #expect(try await admin.rotateKey(name: "high").kid == "high/v3", "version numbers keep increasing after a destroy")
            let listed = try await admin.listKeys().filter { $0.name == "high" }
            #expect(listed.map(\.state) == ["destroyed", "verify-only", "active"])
            #expect(try await agent.authorize(TestServer.request(100_000)).kid == "high/v3")
            let agentRotates = await #expect(throws: WireError.self) { try await agent.rotateKey(name: "high") }
            #expect(agentRotates?.code == .forbidden)
            for client in [agent, admin, second] { await client.close() }
        }
    }

    @Test("a staged version is published before it signs")
    func staged() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-staged"))
            let admin = try await server.connect(server.admin)
            #expect(try await admin.rotateKey(name: "standard", stage: true).state == "pending")
            #expect(try await agent.keys().key(kid: "standard/v2") != nil, "merchants can fetch it before it signs")
            #expect(try await agent.authorize(TestServer.request(1_000)).kid == "standard/v1")
            #expect(try await admin.activateKey(kid: "standard/v2").state == "active")
            #expect(try await agent.authorize(TestServer.request(1_000)).kid == "standard/v2")
            let softwareForHSM = await #expect(throws: WireError.self) { try await admin.rotateKey(name: "high", backend: "software") }
            #expect(softwareForHSM?.code == .keyStateConflict, "an HSM tier never gets a software key")
            #expect(try await admin.rotateKey(name: "standard", backend: "hsm").backend == "hsm", "a software tier's key can move into the HSM")
            #expect(try await agent.authorize(TestServer.request(1_000)).keyBackend == "hsm")
            await agent.close()
            await admin.close()
        }
    }

    @Test("a token key pair is adopted only if sensitive, not extractable and sign-capable")
    func adoption() async throws {
        try await withServer { server in
            // Made on the token as an operator would with pkcs11-tool: one extractable, one proper.
            let suffix = String(UUID().uuidString.prefix(4)).lowercased()
            try await server.application.hsm.sessions.withSession { session in
                _ = try session.generateLooseP256KeyPair(label: "adopt-loose-\(suffix)", id: Array("a1\(suffix)".utf8), sensitive: true, extractable: true)
                _ = try session.generateLooseP256KeyPair(label: "adopt-proper-\(suffix)", id: Array("b2\(suffix)".utf8), sensitive: true, extractable: false)
            }
            let properID = Array("b2\(suffix)".utf8).map { String(format: "%02x", $0) }.joined()
            let admin = try await server.connect(server.admin)
            let loose = await #expect(throws: WireError.self) { try await admin.adoptKey(name: "high", label: "adopt-loose-\(suffix)") }
            #expect(loose?.code == .keyNotAdoptable)
            #expect(loose?.message.contains("it is extractable (CKA_EXTRACTABLE)") == true, "\(loose?.message ?? "")")
            let missing = await #expect(throws: WireError.self) { try await admin.adoptKey(name: "high", label: "no-such-label") }
            #expect(missing?.code == .keyNotAdoptable)

            let adopted = try await admin.adoptKey(name: "high", id: properID)
            #expect(adopted.kid == "high/v2")
            #expect(adopted.adopted && adopted.state == "active" && adopted.backend == "hsm")
            let agent = try await server.connect(try await server.addPrincipal("agent-adopted"))
            let authorization = try await agent.authorize(TestServer.request(100_000))
            #expect(authorization.kid == "high/v2")
            #expect(throws: Never.self) {
                try AuthorizationVerifier(
                    keySet: try #require(try? JSONDecoder().decode(JWKSet.self, from: JSONEncoder().encode(server.application.keyRing.keySet)))
                ).verify(authorization.jws, now: Self.now())
            }
            let twice = await #expect(throws: WireError.self) { try await admin.adoptKey(name: "high", id: properID) }
            #expect(twice?.code == .keyNotAdoptable)
            await agent.close()
            await admin.close()
        }
    }

    @Test("a rotated credential: the old one works through its grace period, then is refused (injected clock)")
    func credentialRotation() async throws {
        let clock = SettableWallClock(1_795_612_455)
        let logs = CapturedLogs()
        try await withServer(.init(wallClock: clock.wallClock, logs: logs)) { server in
            let old = try await server.addPrincipal("agent-rotating")
            let admin = try await server.connect(server.admin)
            let key = CredentialPrivateKey.generate(.ed25519)
            let info = try await admin.rotateCredential(id: "agent-rotating", publicKey: key.publicKey, graceSeconds: 3600)
            #expect(info.algorithm == .ed25519)
            let new = CredentialFile(principal: "agent-rotating", key: key, server: old.server)
            try await server.connect(old).ping()
            try await server.connect(new).ping()
            clock.advance(by: 3599)
            try await server.connect(old).ping()
            clock.advance(by: 1)
            let refused = await #expect(throws: WireError.self) { try await server.connect(old) }
            #expect(refused?.code == .authenticationFailed)
            #expect(refused?.message == "authentication failed: unknown principal, wrong algorithm or bad signature", "the client learns nothing more")
            #expect(
                logs.all.contains {
                    $0.contains("authentication failed") && $0.contains("principal=agent-rotating") && $0.contains("grace ended at 1795616055")
                },
                "the operator learns why: \(logs.all.filter { $0.contains("authentication") })"
            )
            try await server.connect(new).ping()
            let unknown = await #expect(throws: WireError.self) { try await admin.rotateCredential(id: "nobody", publicKey: key.publicKey) }
            #expect(unknown?.code == .principalNotFound)
            await admin.close()
        }
    }

    @Test("a key rotates itself after max_signatures, and after rotate_every (injected clocks)")
    func automaticRotation() async throws {
        let clock = ManualClock()
        let wall = SettableWallClock(1_795_612_455)
        let keys = "keys:\n  standard: { max_signatures: 3 }\n  high: { rotate_every: 1h }\n"
        try await withServer(.init(clock: clock, policy: keys, wallClock: wall.wallClock)) { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-auto"))
            for _ in 0..<3 { #expect(try await agent.authorize(TestServer.request(1_000)).kid == "standard/v1") }
            let ring = server.application.keyRing
            try await eventually("standard rotated after 3 signatures") { ring.list().contains { $0.kid == "standard/v2" && $0.state == "active" } }
            #expect(try await agent.authorize(TestServer.request(1_000)).kid == "standard/v2")

            wall.advance(by: 3600)
            clock.advance(by: .seconds(60))
            try await eventually("high rotated after an hour") { ring.list().contains { $0.kid == "high/v2" && $0.state == "active" } }
            #expect(try await agent.authorize(TestServer.request(100_000)).kid == "high/v2")
            let rotations = try await server.application.store.auditEntries(from: 0, limit: 1000).map { String(decoding: $0.entry, as: UTF8.self) }
                .filter { $0.contains(#""action":"keys.rotate""#) && $0.contains(#""actor":"server""#) }
            #expect(rotations.count == 2, "each automatic rotation is in the audit log")
            await agent.close()
        }
    }
}
