import Audit
import CountersignClient
import Crypto
import Foundation
import Ledger
import Signing
import Synchronization
import TestSupport
import Testing
import Wire

/// The JWSes clients received, across their tasks.
final class Received: Sendable {
    let list = Mutex<[String]>([])
}

/// `countersignd` and `countersign` as an operator and an agent run them: separate processes, real signals.
@Suite("countersignd and countersign as processes", .serialized, .timeLimit(.minutes(2)))
struct DaemonTests {
    let countersignd = ProcessResult.builtProduct("countersignd")
    let countersign = ProcessResult.builtProduct("countersign")

    func configuration(in directory: URL, port: Int = 0, approvalTier: Bool = false) throws -> URL {
        let fixture = try SoftHSMFixture.shared()
        var yaml = """
            issuer: countersign.process-test
            listen: { address: 127.0.0.1, port: \(port) }
            http: { address: 127.0.0.1, port: 0 }
            data_dir: \(directory.appendingPathComponent("data").path)
            hsm: { module: \(fixture.modulePath), token_label: \(SoftHSMFixture.daemonTokenLabel) }
            tiers:
              - { name: standard, max_amount: { USD: 50000 }, key: standard, backend: software }
              - { name: high, max_amount: { USD: 5000000 }, key: high, backend: hsm }
            """
        if approvalTier {
            yaml += "\n  - { name: critical, max_amount: { USD: 50000000 }, key: critical, backend: hsm, approval: { quorum: 2, ttl: 15m } }\n"
        }
        let url = directory.appendingPathComponent("countersign.yaml")
        try Data(yaml.utf8).write(to: url)
        return url
    }

    /// A SoftHSM token directory of the test's own: the daemon and the CLI processes create and read objects
    /// in it, and SoftHSM's file store is not safe while another process changes a token it scans.
    func environmentWithOwnToken(in directory: URL, port: Int = 0, approvalTier: Bool = false) async throws -> [String: String] {
        let fixture = try SoftHSMFixture.shared()
        let hsm = directory.appendingPathComponent("hsm")
        try await SoftHSMFixture.initializeToken(
            in: hsm, label: SoftHSMFixture.daemonTokenLabel, soPIN: "so-\(UUID().uuidString.prefix(8))", userPIN: fixture.userPIN, module: fixture.modulePath
        )
        var environment = fixture.environment()
        environment["SOFTHSM2_CONF"] = hsm.appendingPathComponent("softhsm2.conf").path
        environment["COUNTERSIGN_CONFIG"] = try self.configuration(in: directory, port: port, approvalTier: approvalTier).path
        environment["COUNTERSIGN_TOKEN_LABEL"] = SoftHSMFixture.daemonTokenLabel
        return environment
    }

    /// A directory of the test's own with its own token, `countersignd init` run in it, and the admin credential.
    func initialized(
        _ name: String, port: Int = 0, approvalTier: Bool = false
    ) async throws -> (directory: URL, environment: [String: String], admin: CredentialFile) {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let environment = try await self.environmentWithOwnToken(in: directory, port: port, approvalTier: approvalTier)
        let initialized = try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment)
        #expect(initialized.status == 0, "\(initialized.standardError)")
        return (directory, environment, try CredentialFile.read(path: directory.appendingPathComponent("data/admin.credential").path))
    }

    @Test("check-config refuses a wrong file with its line and reason")
    func checkConfig() async throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("check-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let good = try self.configuration(in: directory)
        let ok = try await ProcessResult.run(executable: self.countersignd, arguments: ["check-config", "--config", good.path], environment: [:])
        #expect(ok.status == 0, "\(ok.standardError)")
        #expect(ok.standardOutput.contains("configuration OK: 2 tiers, 0 profiles"))

        let bad = directory.appendingPathComponent("bad.yaml")
        try Data(try String(contentsOf: good, encoding: .utf8).replacingOccurrences(of: "USD: 50000", with: "USD: 50000, ZZZ: 1").utf8).write(to: bad)
        let refused = try await ProcessResult.run(executable: self.countersignd, arguments: ["check-config", "--config", bad.path], environment: [:])
        #expect(refused.status != 0)
        #expect(refused.standardError.contains("\(bad.path):7: tiers[0].max_amount.ZZZ: 'ZZZ' is not an ISO 4217 currency code"), "\(refused.standardError)")
    }

    @Test("init, serve, agents, authorize, verify and SIGTERM, with no secret in any output")
    func operatorAndAgent() async throws {
        let fixture = try SoftHSMFixture.shared()
        let directory = fixture.directory.appendingPathComponent("process-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var environment = try await self.environmentWithOwnToken(in: directory)
        var transcript = ""

        let initialized = try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment)
        transcript += initialized.standardOutput + initialized.standardError
        #expect(initialized.status == 0, "\(initialized.standardError)")
        let adminPath = directory.appendingPathComponent("data/admin.credential").path
        #expect(try Self.mode(of: adminPath) == 0o600)
        let again = try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment)
        #expect(again.standardOutput.contains("nothing to do"))

        let log = directory.appendingPathComponent("server.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let server = Process()
        server.executableURL = self.countersignd
        server.arguments = ["serve", "--log-level", "debug"]
        server.environment = environment
        server.standardError = try FileHandle(forWritingTo: log)
        server.standardOutput = FileHandle.nullDevice
        try server.run()
        defer { if server.isRunning { server.terminate() } }

        var port = 0
        try await eventually("the server listens") {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            guard let line = text.split(separator: "\n").first(where: { $0.contains("tls=false") && $0.contains("listening") }),
                let range = line.range(of: #":(\d+) tls="#, options: .regularExpression)
            else { return false }
            port = Int(line[range].dropFirst().dropLast(5)) ?? 0
            return port > 0
        }
        environment["COUNTERSIGN_SERVER"] = "127.0.0.1:\(port)"
        environment["COUNTERSIGN_CREDENTIAL"] = adminPath

        let agentPath = directory.appendingPathComponent("agent-cli.credential").path
        let added = try await ProcessResult.run(
            executable: self.countersign, arguments: ["agents", "add", "agent-cli", "--out", agentPath], environment: environment)
        transcript += added.standardOutput + added.standardError
        #expect(added.status == 0, "\(added.standardError)")
        #expect(try Self.mode(of: agentPath) == 0o600)

        var agent = environment
        agent["COUNTERSIGN_CREDENTIAL"] = agentPath
        let authorized = try await ProcessResult.run(
            executable: self.countersign,
            arguments: [
                "authorize", "--amount", "1200.00", "--currency", "USD", "--merchant", "m-9", "--mcc", "5734", "--intent", "a laptop", "--item",
                "laptop:1:1200.00",
            ],
            environment: agent
        )
        transcript += authorized.standardOutput + authorized.standardError
        #expect(authorized.status == 0, "\(authorized.standardError)")
        let jws = authorized.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(jws.split(separator: ".").count == 3)

        let verified = try await ProcessResult.run(executable: self.countersign, arguments: ["verify", jws], environment: agent)
        #expect(verified.status == 0, "\(verified.standardError)")
        #expect(verified.standardOutput.contains("valid: 1200.00 USD to m-9 for agent-cli, tier high, key high/v1"))

        let tooPrecise = try await ProcessResult.run(
            executable: self.countersign,
            arguments: ["authorize", "--amount", "12.505", "--currency", "USD", "--merchant", "m", "--mcc", "5734", "--intent", "x", "--order-hash", "h"],
            environment: agent
        )
        #expect(tooPrecise.status != 0)
        #expect(tooPrecise.standardError.contains("at most 2 decimals"))

        let forbidden = try await ProcessResult.run(executable: self.countersign, arguments: ["agents", "list"], environment: agent)
        #expect(forbidden.status != 0 && forbidden.standardError.contains("FORBIDDEN"))

        let jwks = try await ProcessResult.run(executable: self.countersign, arguments: ["keys", "jwks"], environment: environment)
        #expect(
            try JSONDecoder().decode(KeysResponse.self, from: Data(jwks.standardOutput.utf8)).keys.map(\.kid) == ["audit/v1", "high/v1", "standard/v1"],
            "every tier's key and the audit key")

        let revoked = try await ProcessResult.run(executable: self.countersign, arguments: ["agents", "revoke", "agent-cli"], environment: environment)
        #expect(revoked.status == 0)
        let listed = try await ProcessResult.run(executable: self.countersign, arguments: ["agents", "list"], environment: environment)
        #expect(listed.standardOutput.contains("agent-cli\tagent\tES256\trevoked at"))

        kill(server.processIdentifier, SIGTERM)
        await server.exited()
        #expect(server.terminationStatus == 0)
        let serverLog = try String(contentsOf: log, encoding: .utf8)
        #expect(serverLog.contains("shutting down"))
        transcript += serverLog

        // No secret reached any output: not the PIN, not a credential's private key.
        #expect(!transcript.contains(fixture.userPIN))
        for path in [adminPath, agentPath] {
            let secret = try CredentialFile.read(path: path).privateKey
            #expect(!transcript.contains(secret))
        }
    }

    /// Starts `countersignd serve` and returns it with its framed port, read from its log.
    func serve(environment: [String: String], log: URL, arguments: [String] = []) async throws -> (Process, Int) {
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let server = Process()
        server.executableURL = self.countersignd
        server.arguments = ["serve"] + arguments
        server.environment = environment
        server.standardError = try FileHandle(forWritingTo: log)
        server.standardOutput = FileHandle.nullDevice
        try server.run()
        var port = 0
        try await eventually("the server listens") {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            guard let line = text.split(separator: "\n").first(where: { $0.contains("tls=false") && $0.contains("listening") }),
                let range = line.range(of: #":(\d+) tls="#, options: .regularExpression)
            else { return false }
            port = Int(line[range].dropFirst().dropLast(5)) ?? 0
            return port > 0
        }
        return (server, port)
    }

    @Test("countersignd takes the token label from COUNTERSIGN_TOKEN_LABEL over the configuration's, and says so")
    func tokenLabelFromEnvironment() async throws {
        let fixture = try SoftHSMFixture.shared()
        let directory = fixture.directory.appendingPathComponent("label-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let environment = try await self.environmentWithOwnToken(in: directory)
        let config = try #require(environment["COUNTERSIGN_CONFIG"])
        let text = try String(contentsOfFile: config, encoding: .utf8).replacingOccurrences(
            of: "token_label: \(SoftHSMFixture.daemonTokenLabel)", with: "token_label: no-such-token")
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        let initialized = try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment)
        #expect(initialized.status == 0, "\(initialized.standardError)")
        var without = environment
        without["COUNTERSIGN_TOKEN_LABEL"] = nil
        let refused = try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: without)
        #expect(refused.status != 0 && refused.standardError.contains("no initialized token with label 'no-such-token'"), "\(refused.standardError)")
        let log = directory.appendingPathComponent("serve.log")
        let (server, _) = try await self.serve(environment: environment, log: log)
        kill(server.processIdentifier, SIGTERM)
        await server.exited()
        #expect(try String(contentsOf: log, encoding: .utf8).contains("token '\(SoftHSMFixture.daemonTokenLabel)' (label from COUNTERSIGN_TOKEN_LABEL)"))
    }

    @Test("init on a fresh data directory says when the token holds an earlier installation's keys")
    func initAfterRemovedDataDirectory() async throws {
        let fixture = try SoftHSMFixture.shared()
        let directory = fixture.directory.appendingPathComponent("reinit-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let environment = try await self.environmentWithOwnToken(in: directory)
        let first = try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment)
        #expect(first.status == 0 && !first.standardError.contains("warning"), "\(first.standardError)")
        try FileManager.default.removeItem(at: directory.appendingPathComponent("data"))
        let second = try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment)
        #expect(second.status == 0, "\(second.standardError)")
        #expect(
            second.standardError.contains(
                "warning: the token already holds 2 Countersign key pair(s) that this new store does not know (countersign:audit/v1, countersign:high/v1)"),
            "\(second.standardError)")
    }

    @Test("a second countersignd on a live data directory is refused at once, names the holder, writes nothing; the first keeps serving")
    func secondServerRefused() async throws {
        let (directory, environment, admin) = try await self.initialized("second")
        let (first, port) = try await self.serve(environment: environment, log: directory.appendingPathComponent("first.log"))
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        let client = try await CountersignClient.connect(host: "127.0.0.1", port: port, credential: admin)
        let key = CredentialPrivateKey.generate(.es256)
        _ = try await client.addAgent(id: "agent-first", publicKey: key.publicKey)
        let agent = try await CountersignClient.connect(
            host: "127.0.0.1", port: port, credential: CredentialFile(principal: "agent-first", key: key, server: nil))
        #expect(try await agent.authorize(TestServer.request(1_000)).tier == "standard")
        let before = try await client.auditEntries(from: 0, limit: 1).size

        let second = try await ProcessResult.run(executable: self.countersignd, arguments: ["serve"], environment: environment)
        #expect(second.status != 0)
        #expect(second.standardError.contains("is in use by another countersignd (pid \(first.processIdentifier))"), "\(second.standardError)")
        let initAgain = try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment)
        #expect(initAgain.status != 0 && initAgain.standardError.contains("in use by another countersignd"), "\(initAgain.standardError)")

        #expect(try await client.auditEntries(from: 0, limit: 1).size == before, "the refused processes wrote nothing")
        for _ in 0..<3 {
            #expect(try await agent.authorize(TestServer.request(1_000)).tier == "standard", "the first server is unharmed")
        }
        await agent.close()
        await client.close()
        kill(first.processIdentifier, SIGTERM)
        await first.exited()
        #expect(first.terminationStatus == 0)
        // Once the holder is gone the directory is free again (the kernel dropped the lock with the process).
        let (third, _) = try await self.serve(environment: environment, log: directory.appendingPathComponent("third.log"))
        kill(third.processIdentifier, SIGTERM)
        await third.exited()
        #expect(third.terminationStatus == 0)
    }

    /// A port nothing listens on now (the kernel's pick, released at once).
    static func freePort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// How many times `principal` completed a handshake, by the server's log.
    static func handshakes(of principal: String, in log: URL) -> Int {
        ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").filter {
            $0.contains("authenticated") && $0.contains("principal=\(principal) ")
        }.count
    }

    @Test(
        "a pending approval is collected by `fetch --wait` across a server restart; SIGTERM answers the waiting fetch at once with SHUTTING_DOWN and logs the stop"
    )
    func fetchAcrossRestart() async throws {
        let fixture = try SoftHSMFixture.shared()
        let directory = fixture.directory.appendingPathComponent("fetch-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let port = try Self.freePort()
        var environment = try await self.environmentWithOwnToken(in: directory, port: port, approvalTier: true)
        #expect(try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment).status == 0)
        let admin = try CredentialFile.read(path: directory.appendingPathComponent("data/admin.credential").path)
        let firstLog = directory.appendingPathComponent("first.log")
        let (first, _) = try await self.serve(environment: environment, log: firstLog)
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }

        let adminClient = try await CountersignClient.connect(host: "127.0.0.1", port: port, credential: admin)
        var approvers: [CredentialFile] = []
        for id in ["agent-wait", "alice", "bob"] {
            let key = CredentialPrivateKey.generate(.es256)
            _ = try await adminClient.addAgent(id: id, publicKey: key.publicKey, role: id == "agent-wait" ? .agent : .approver)
            let credential = CredentialFile(principal: id, key: key, server: "127.0.0.1:\(port)")
            if id == "agent-wait" {
                let path = directory.appendingPathComponent("agent-wait.credential").path
                try credential.write(path: path)
                environment["COUNTERSIGN_CREDENTIAL"] = path
            } else {
                approvers.append(credential)
            }
        }
        await adminClient.close()
        environment["COUNTERSIGN_SERVER"] = "127.0.0.1:\(port)"

        let pending = try await ProcessResult.run(
            executable: self.countersign,
            arguments: [
                "authorize", "--amount", "120000.00", "--currency", "USD", "--merchant", "m-9", "--mcc", "5734", "--intent", "a car", "--order-hash", "o-1",
                "--idempotency-key", "car-1",
            ],
            environment: environment
        )
        #expect(pending.status == 3, "\(pending.standardError)")
        #expect(pending.standardError.contains("(idempotency key car-1)"), "\(pending.standardError)")
        let id = try #require(pending.standardError.firstMatch(of: /countersign fetch (\S+) --wait/)?.1).description
        let stillPending = try await ProcessResult.run(executable: self.countersign, arguments: ["fetch", id], environment: environment)
        #expect(stillPending.status == 3 && stillPending.standardError.contains("has 0 of 2 approval(s)"), "\(stillPending.standardError)")

        let output = directory.appendingPathComponent("fetch.out")
        let errors = directory.appendingPathComponent("fetch.err")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
        let waiting = Process()
        waiting.executableURL = self.countersign
        waiting.arguments = ["fetch", id, "--wait"]
        waiting.environment = environment
        waiting.standardOutput = try FileHandle(forWritingTo: output)
        waiting.standardError = try FileHandle(forWritingTo: errors)
        try waiting.run()
        defer { if waiting.isRunning { waiting.terminate() } }
        try await eventually("the waiting fetch is connected") { Self.handshakes(of: "agent-wait", in: firstLog) >= 3 }

        // SIGTERM: the held FETCH_AUTHORIZATION is answered at once (not after its 30 s), and the stop is logged.
        kill(first.processIdentifier, SIGTERM)
        await first.exited()
        #expect(first.terminationStatus == 0)
        let stopped = try String(contentsOf: firstLog, encoding: .utf8)
        #expect(stopped.contains("the stop is in the audit log"), "\(stopped)")
        #expect(stopped.contains("countersignd stopped"), "\(stopped)")
        // The held FETCH is answered SHUTTING_DOWN (ApprovalTests checks that in-process); a FETCH still on its
        // way when the stop began meets the connection's own SHUTTING_DOWN or its close. Either way it asks again.
        try await eventually("the waiting client is asking again") {
            ((try? String(contentsOf: errors, encoding: .utf8)) ?? "").contains("asking again")
        }
        #expect(waiting.isRunning, "a restart does not end the wait")

        let (second, _) = try await self.serve(environment: environment, log: directory.appendingPathComponent("second.log"))
        defer { if second.isRunning { kill(second.processIdentifier, SIGKILL) } }
        for approver in approvers {
            let client = try await CountersignClient.connect(host: "127.0.0.1", port: port, credential: approver)
            _ = try await client.approve(id: id)
            await client.close()
        }
        try await eventually("the waiting fetch got the signature") { !waiting.isRunning }
        #expect(waiting.terminationStatus == 0, "\((try? String(contentsOf: errors, encoding: .utf8)) ?? "")")
        let jws = try String(contentsOf: output, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(jws.split(separator: ".").count == 3)
        let fetched = try await ProcessResult.run(executable: self.countersign, arguments: ["fetch", id], environment: environment)
        #expect(fetched.status == 0 && fetched.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == jws)
        kill(second.processIdentifier, SIGTERM)
        await second.exited()
    }

    @Test("the token's directory moved away and back: countersignd re-initializes the module and the HSM tier signs again, without a restart")
    func tokenDirectoryMovedAwayAndBack() async throws {
        let (directory, environment, admin) = try await self.initialized("token-moved")
        let log = directory.appendingPathComponent("server.log")
        let (server, port) = try await self.serve(environment: environment, log: log, arguments: ["--verify-log"])
        #expect(try String(contentsOf: log, encoding: .utf8).contains("audit log verified"), "--verify-log ran before the listeners")
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let httpPort = try Self.httpPort(in: log)
        let adminClient = try await CountersignClient.connect(host: "127.0.0.1", port: port, credential: admin)
        let key = CredentialPrivateKey.generate(.es256)
        _ = try await adminClient.addAgent(id: "agent-moved", publicKey: key.publicKey)
        await adminClient.close()
        let agent = try await CountersignClient.connect(
            host: "127.0.0.1", port: port, credential: CredentialFile(principal: "agent-moved", key: key, server: nil))
        #expect(try await agent.authorize(TestServer.request(100_000)).keyBackend == "hsm")
        #expect(await Self.httpStatus(port: httpPort, path: "/readyz") == 200)

        // SoftHSM still opens sessions and logs in, but finds none of the keys, until C_Finalize + C_Initialize.
        let tokens = directory.appendingPathComponent("hsm/tokens")
        let away = directory.appendingPathComponent("hsm/tokens.away")
        try FileManager.default.moveItem(at: tokens, to: away)
        for _ in 0..<3 {
            let error = await #expect(throws: WireError.self) { try await agent.authorize(TestServer.request(100_000)) }
            #expect(error?.code == .hsmUnavailable)
        }
        try await eventually("the server re-initializes the module") {
            ((try? String(contentsOf: log, encoding: .utf8)) ?? "").contains("re-initializing the PKCS#11 module")
        }
        #expect(await Self.httpStatus(port: httpPort, path: "/readyz") == 503)
        #expect(try await agent.authorize(TestServer.request(1_000)).keyBackend == "software", "software tiers are untouched")

        try FileManager.default.moveItem(at: away, to: tokens)
        try await eventually("the token is recovered") {
            ((try? String(contentsOf: log, encoding: .utf8)) ?? "").contains("HSM token recovered")
        }
        // After the breaker's cooldown (5 s) /readyz says ready and the HSM tier signs.
        try await eventually("/readyz follows") { await Self.httpStatus(port: httpPort, path: "/readyz") == 200 }
        #expect(try await agent.authorize(TestServer.request(100_000)).keyBackend == "hsm")
        #expect(server.isRunning, "no restart")
        await agent.close()
        kill(server.processIdentifier, SIGTERM)
        await server.exited()
        #expect(server.terminationStatus == 0)
    }

    /// The HTTP listener's port, from the server's log.
    static func httpPort(in log: URL) throws -> Int {
        let text = try String(contentsOf: log, encoding: .utf8)
        guard let match = text.firstMatch(of: /address=\S+:(\d+) \S+ HTTP listening/), let port = Int(match.1) else {
            throw FixtureError(reason: "no HTTP listening line in the log")
        }
        return port
    }

    /// The status of a GET (curl, as an operator's probe would).
    static func httpStatus(port: Int, path: String) async -> Int {
        let result = try? await ProcessResult.run(
            executable: URL(fileURLWithPath: "/usr/bin/curl"), arguments: ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)\(path)"],
            environment: ProcessInfo.processInfo.environment
        )
        return Int(result?.standardOutput ?? "") ?? 0
    }

    @Test("SIGTERM while clients keep sending: every authorization in the log reached its client")
    func stopUnderLoadLosesNoAnswer() async throws {
        let (directory, environment, admin) = try await self.initialized("drain")
        let (server, port) = try await self.serve(environment: environment, log: directory.appendingPathComponent("server.log"))
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let adminClient = try await CountersignClient.connect(host: "127.0.0.1", port: port, credential: admin)
        let key = CredentialPrivateKey.generate(.es256)
        _ = try await adminClient.addAgent(id: "agent-drain", publicKey: key.publicKey)
        await adminClient.close()
        let credential = CredentialFile(principal: "agent-drain", key: key, server: nil)

        // Two clients on plain sockets that keep writing requests and read their answers slowly: at the stop,
        // the server's receive queue holds unread requests and the clients' hold unread answers.
        let received = Received()
        let slowClients = try (0..<2).map { _ in
            let client = try SlowClient(port: port)
            try client.handshake(principal: "agent-drain", key: key)
            return client
        }
        let slowThreads = slowClients.flatMap { client -> [Thread] in
            let writer = Thread {
                for id in UInt32(10)..<UInt32(20_000)
                where !client.send(Frame(type: .authorize, requestID: id, body: WireJSON.encode(TestServer.request(1_000)))) { return }
            }
            let reader = Thread {
                var count = 0
                while let frame = client.receive() {
                    if frame.type == MessageType.authorize.response,
                        let outcome = try? WireJSON.decode(AuthorizeOutcome.self, from: frame.body, allowingUnknownMembers: true),
                        case .authorized(let authorization) = outcome
                    {
                        received.list.withLock { $0.append(authorization.authorizationID) }
                    }
                    count += 1
                    if count % 16 == 0 { usleep(2_000) }
                }
                // At the end of the stream, as a client should; the descriptor is closed once the writer is done too.
                client.shutdown()
            }
            return [writer, reader]
        }
        for thread in slowThreads { thread.start() }
        let clients = (0..<8).map { _ in
            Task {
                guard let client = try? await CountersignClient.connect(host: "127.0.0.1", port: port, credential: credential) else { return }
                await withTaskGroup(of: Void.self) { group in
                    for _ in 0..<16 {
                        group.addTask {
                            while let authorization = try? await client.authorize(TestServer.request(1_000)) {
                                received.list.withLock { $0.append(authorization.authorizationID) }
                            }
                        }
                    }
                }
                await client.close()
            }
        }
        try await eventually("clients are authorizing") { received.list.withLock { $0.count } >= 300 }
        kill(server.processIdentifier, SIGTERM)
        await server.exited()
        #expect(server.terminationStatus == 0)
        for client in clients { await client.value }
        try await eventually("the slow clients saw the end of their streams") { slowThreads.allSatisfy(\.isFinished) }
        for client in slowClients { client.close() }

        var logged: Set<String> = []
        try AuditLogFile(path: directory.appendingPathComponent("data/countersign.sqlite").path).forEachEntry { _, entry, _ in
            if let decoded = try? JSONDecoder().decode(AuditEntry.self, from: entry), decoded.action == "authorized", let id = decoded.subject {
                logged.insert(id)
            }
        }
        let answered = Set(received.list.withLock { $0 })
        #expect(logged.count >= 300)
        #expect(
            logged.subtracting(answered).isEmpty, "\(logged.subtracting(answered).count) of \(logged.count) committed authorizations never reached their client"
        )
    }

    @Test("kill -9 while clients authorize: after a restart the log verifies and every JWS a client received has its entry")
    func crash() async throws {
        let (directory, environment, admin) = try await self.initialized("crash")

        let (server, port) = try await self.serve(environment: environment, log: directory.appendingPathComponent("first.log"))
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let adminClient = try await CountersignClient.connect(host: "127.0.0.1", port: port, credential: admin)
        let key = CredentialPrivateKey.generate(.es256)
        _ = try await adminClient.addAgent(id: "agent-crash", publicKey: key.publicKey)
        let keySet = try await adminClient.keys()
        let jwks = directory.appendingPathComponent("jwks.json")
        try JSONEncoder().encode(keySet).write(to: jwks)
        let credential = CredentialFile(principal: "agent-crash", key: key, server: nil)
        let received = Received()
        let clients = (0..<4).map { index in
            Task {
                guard let client = try? await CountersignClient.connect(host: "127.0.0.1", port: port, credential: credential) else { return }
                var round = 0
                while let authorization = try? await client.authorize(TestServer.request((round + index) % 2 == 0 ? 1_000 : 100_000)) {
                    received.list.withLock { $0.append(authorization.jws) }
                    round += 1
                }
            }
        }
        try await eventually("clients are authorizing") { received.list.withLock { $0.count } >= 200 }
        kill(server.processIdentifier, SIGKILL)
        await server.exited()
        for client in clients { await client.value }
        let jwses = received.list.withLock { $0 }

        // The restart fills any index the crash left half-written, then a clean stop signs a last checkpoint.
        let (restarted, _) = try await self.serve(environment: environment, log: directory.appendingPathComponent("second.log"))
        kill(restarted.processIdentifier, SIGTERM)
        await restarted.exited()
        #expect(restarted.terminationStatus == 0)

        let store = directory.appendingPathComponent("data/countersign.sqlite").path
        let verified = try await ProcessResult.run(
            executable: self.countersign, arguments: ["audit", "verify", "--store", store, "--jwks", jwks.path], environment: [:]
        )
        #expect(verified.status == 0, "\(verified.standardError)")
        #expect(verified.standardOutput.hasPrefix("audit log OK: "))
        var logged: Set<String> = []
        try AuditLogFile(path: store).forEachEntry { _, entry, _ in
            if let decoded = try? JSONDecoder().decode(AuditEntry.self, from: entry), let hash = decoded.decision?.jwsSHA256 { logged.insert(hash) }
        }
        let missing = jwses.filter { !logged.contains(Base64URL.encode(Array(SHA256.hash(data: Data($0.utf8))))) }
        #expect(jwses.count >= 200)
        #expect(missing.isEmpty, "\(missing.count) JWS received by clients have no audit entry")
    }

    static func mode(of path: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }
}
