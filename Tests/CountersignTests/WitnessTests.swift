import Audit
import CountersignClient
import CountersignCore
import CountersignServer
import Crypto
import Foundation
import Ledger
import TestSupport
import Testing

/// The C2SP witness: its rules on their own, then `countersign audit witness` as a process that a server sends
/// its checkpoints to, and that refuses the checkpoints of a store forked from a copy.
@Suite("A witness for the audit log", .serialized, .timeLimit(.minutes(2)))
struct WitnessTests {
    static let origin = "example.test/audit"

    /// A log of `count` leaves, its checkpoint note signed by `key`.
    static func note(_ leaves: [Merkle.Hash], key: P256.Signing.PrivateKey, origin: String = Self.origin) throws -> String {
        let checkpoint = Checkpoint(origin: origin, size: leaves.count, rootHash: Merkle.root(leaves[...]), time: 1_800_000_000)
        return checkpoint.note(keyName: origin, publicKey: key.publicKey, signature: try key.signature(for: Data(checkpoint.body.utf8)))
    }

    static func leaves(_ count: Int, salt: String = "") -> [Merkle.Hash] {
        (0..<count).map { Merkle.leafHash(Data("entry \($0)\(salt)".utf8)) }
    }

    @Test("add-checkpoint: cosigns what extends the last one, and answers 409, 422, 403, 404 and 400 as C2SP says")
    func rules() throws {
        let key = P256.Signing.PrivateKey()
        let policy = WitnessPolicy(logs: [Self.origin: [key.publicKey]])
        var latest: WitnessedLog?
        func add(_ request: AddCheckpoint) throws(WitnessRefusal) {
            let accepted = try policy.accept(AddCheckpoint.parse(request.body), latest: { _ in latest })
            latest = accepted.state
        }
        let log = Self.leaves(20)
        // First contact: old 0, no proof.
        try add(AddCheckpoint(oldSize: 0, proof: [], note: try Self.note(Array(log.prefix(8)), key: key)))
        #expect(latest?.size == 8)
        // Growth with a consistency proof.
        try add(AddCheckpoint(oldSize: 8, proof: Merkle.consistencyProof(oldSize: 8, leaves: log[..<13]), note: try Self.note(Array(log.prefix(13)), key: key)))
        #expect(latest?.size == 13)
        // The same checkpoint again is fine.
        try add(AddCheckpoint(oldSize: 13, proof: [], note: try Self.note(Array(log.prefix(13)), key: key)))

        func refusal(_ request: AddCheckpoint) -> WitnessRefusal? {
            do {
                try add(request)
                return nil
            } catch {
                return error
            }
        }
        // A stale old size: 409 with the size to use.
        #expect(
            refusal(AddCheckpoint(oldSize: 8, proof: Merkle.consistencyProof(oldSize: 8, leaves: log[..<20]), note: try Self.note(log, key: key)))
                == .conflict(latestSize: 13, fork: false))
        // A fork: entries before 13 changed, proof from 13 cannot verify against the root cosigned.
        let forked = Array(log.prefix(10)) + Self.leaves(10, salt: "fork").suffix(10)
        #expect(
            refusal(AddCheckpoint(oldSize: 13, proof: Merkle.consistencyProof(oldSize: 13, leaves: forked[...]), note: try Self.note(forked, key: key)))
                == .inconsistent)
        // The same size with another root.
        #expect(
            refusal(AddCheckpoint(oldSize: 13, proof: [], note: try Self.note(Array(forked.prefix(13)), key: key))) == .conflict(latestSize: 13, fork: true))
        // Another key, another origin, a smaller checkpoint than the old size.
        #expect(refusal(AddCheckpoint(oldSize: 13, proof: [], note: try Self.note(Array(log.prefix(13)), key: P256.Signing.PrivateKey()))) == .forbidden)
        #expect(
            refusal(AddCheckpoint(oldSize: 0, proof: [], note: try Self.note(log, key: key, origin: "other.test/audit"))) == .unknownOrigin("other.test/audit"))
        #expect(refusal(AddCheckpoint(oldSize: 14, proof: [], note: try Self.note(Array(log.prefix(13)), key: key)))?.status == 400)
        #expect(latest?.size == 13 && latest?.rootHash == Data(Merkle.root(log[..<13])), "nothing refused changed the state")

        // The request body is read strictly.
        for body in [
            "old 01\n\n", "old -1\n\n", "old 3\nnot base64\n\n", "old 3\n", "new 3\n\n",
            "old 3\n" + String(repeating: Data(count: 32).base64EncodedString() + "\n", count: 64) + "\n",
        ] {
            #expect(throws: WitnessRefusal.self, "\(body.prefix(30))") { try AddCheckpoint.parse(body) }
        }
    }

    @Test("a cosignature is Ed25519 over cosignature/v1, the time and the checkpoint body, under the C2SP key id; the verifier key round-trips")
    func cosignatures() throws {
        let key = Curve25519.Signing.PrivateKey()
        let cosigner = Cosigner(name: "witness.test/w1", publicKey: key.publicKey)
        let expectedID = Array(SHA256.hash(data: Data("witness.test/w1".utf8) + [0x0A, 0x04] + key.publicKey.rawRepresentation).prefix(4))
        #expect(cosigner.keyID == expectedID)
        let parsed = try Cosigner(verifierKey: cosigner.verifierKey)
        #expect(parsed.keyID == cosigner.keyID && parsed.name == cosigner.name)
        let body = "example.test/audit\n3\nAAAA\ntime 1\n"
        let line = Cosigner.line(
            name: cosigner.name, keyID: cosigner.keyID, time: 1_700_000_000,
            signature: try key.signature(for: Cosigner.message(body: body, time: 1_700_000_000)))
        #expect(line.hasPrefix("\u{2014} witness.test/w1 "))
        #expect(cosigner.verify(lines: line, body: body) == 1_700_000_000)
        #expect(cosigner.verify(lines: line, body: body.replacingOccurrences(of: "3", with: "4")) == nil)
        #expect(Cosigner(name: "witness.test/w2", publicKey: key.publicKey).verify(lines: line, body: body) == nil)
        #expect(throws: WitnessRefusal.self) {
            try Cosigner(verifierKey: cosigner.verifierKey.replacingOccurrences(of: "+", with: "+0", options: [], range: nil))
        }
    }

    @Test("countersign audit witness cosigns every checkpoint a server sends it, and refuses the checkpoints of a store forked from a copy")
    func witnessProcess() async throws {
        let fixture = try SoftHSMFixture.shared()
        let directory = fixture.directory.appendingPathComponent("witness-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let first = try await TestServer.start(.init())
        let (jwks, _) = try await InteropTests.get(first, "/.well-known/jwks.json")
        try await first.stop()
        let jwksFile = directory.appendingPathComponent("jwks.json")
        try Data(jwks.utf8).write(to: jwksFile)

        // The witness, as an operator runs it on another machine.
        let state = directory.appendingPathComponent("witness.state")
        let out = directory.appendingPathComponent("witness.out")
        let err = directory.appendingPathComponent("witness.err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        let witness = Process()
        witness.executableURL = ProcessResult.builtProduct("countersign")
        witness.arguments = [
            "audit", "witness", "--listen", "127.0.0.1:0", "--name", "witness.test/w1", "--key-file", directory.appendingPathComponent("witness.key").path,
            "--state", state.path, "--origin", "countersign.test/audit", "--jwks", jwksFile.path,
        ]
        witness.standardOutput = try FileHandle(forWritingTo: out)
        witness.standardError = try FileHandle(forWritingTo: err)
        try witness.run()
        defer { if witness.isRunning { witness.terminate() } }
        var port = 0
        var verifierKey = ""
        try await eventually("the witness listens") {
            let text = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
            let printed = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            guard let match = text.firstMatch(of: /address=\S+:(\d+) \S* ?witness listening/) ?? text.firstMatch(of: /witness listening.*:(\d+)/),
                let key = printed.firstMatch(of: /verifier key: (\S+)/)
            else { return false }
            port = Int(match.1) ?? 0
            verifierKey = String(key.1)
            return port > 0
        }
        #expect(try DaemonTests.mode(of: directory.appendingPathComponent("witness.key").path) == 0o600)
        let audit = "audit: { checkpoint_entries: 4, witness: { url: \"http://127.0.0.1:\(port)\", key: \"\(verifierKey)\" } }\n"

        // The server sends each checkpoint; the witness cosigns and remembers it.
        let logs = CapturedLogs()
        let server = try await TestServer.start(.init(dataDirectory: first.dataDirectory, policy: audit, logs: logs))
        let agent = try await server.connect(try await server.addPrincipal("agent-witnessed"))
        for _ in 0..<6 { _ = try await agent.authorize(TestServer.request(1_000)) }
        // A checkpoint the witness could not take (a timeout on a loaded machine) is covered by the next: more entries
        // bring the next one sooner than the minute's.
        try await eventually("the witness cosigned a checkpoint of the grown log", limit: .seconds(90)) { () async -> Bool in
            guard Self.witnessedSize(state) < 8 else { return true }
            _ = try? await agent.authorize(TestServer.request(1_000))
            try? await Task.sleep(for: .milliseconds(200))
            return Self.witnessedSize(state) >= 8
        }
        let copy = try AuditLogTests.copyDataDirectory(of: server.dataDirectory.appendingPathComponent("countersign.sqlite").path, to: "witness-fork")
        for _ in 0..<4 { _ = try await agent.authorize(TestServer.request(1_000)) }
        await agent.close()
        try await server.stop()
        let store = try await server.application.store.latestCheckpoint()
        #expect(Self.witnessedSize(state) == store?.size, "the stop's checkpoint is cosigned before the server ends")
        #expect(!logs.all.contains { $0.contains("witness refused") }, "\(logs.all.filter { $0.contains("witness") })")

        // The same store again: the witness already holds its last checkpoint, and nothing is amiss.
        let again = try await TestServer.start(.init(dataDirectory: first.dataDirectory, policy: audit, logs: logs))
        try await again.stop()
        #expect(!logs.all.contains { $0.hasPrefix("critical") }, "\(logs.all.filter { $0.hasPrefix("critical") })")
        let cosigned = Self.witnessedSize(state)

        // A store restored from the older copy: the witness has cosigned more than it holds. It does not start.
        let rolledBack = await #expect(throws: StartupError.self) { try await TestServer.start(.init(dataDirectory: copy, policy: audit)) }
        #expect(
            "\(rolledBack.map { "\($0)" } ?? "")".contains("AUDIT_LOG_MISMATCH: the witness witness.test/w1 refuses this audit log"),
            "\(String(describing: rolledBack))")
        #expect("\(rolledBack.map { "\($0)" } ?? "")".contains("the store was rolled back"), "\(String(describing: rolledBack))")

        // The copy grown on its own past what the witness cosigned (without the witness): a fork. Its first checkpoint
        // sent to the witness does not extend the witnessed log, and the server does not start.
        let forked = try await TestServer.start(.init(dataDirectory: copy))
        let other = try await forked.connect(try await forked.addPrincipal("agent-forked"))
        for _ in 0..<12 { _ = try await other.authorize(TestServer.request(2_000)) }
        await other.close()
        try await forked.stop()
        let fork = await #expect(throws: StartupError.self) { try await TestServer.start(.init(dataDirectory: copy, policy: audit)) }
        #expect("\(fork.map { "\($0)" } ?? "")".contains("does not verify against what the witness cosigned"), "\(String(describing: fork))")
        #expect(Self.witnessedSize(state) == cosigned, "a refused checkpoint does not move the witness")
        let witnessLog = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
        #expect(witnessLog.contains("a checkpoint that does not extend the last one cosigned"), "\(witnessLog.suffix(2000))")
        witness.terminate()
        await witness.exited()
    }

    static func witnessedSize(_ state: URL) -> Int {
        guard let data = FileManager.default.contents(atPath: state.path),
            let logs = try? JSONDecoder().decode([String: WitnessedLog].self, from: data)
        else { return 0 }
        return logs["countersign.test/audit"]?.size ?? 0
    }
}
