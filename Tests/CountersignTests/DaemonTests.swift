import Foundation
import Signing
import Testing
import TestSupport
import Wire

/// `countersignd` and `countersign` as an operator and an agent run them: separate processes, real signals.
@Suite("countersignd and countersign as processes", .serialized, .timeLimit(.minutes(2)))
struct DaemonTests {
    let countersignd = ProcessResult.builtProduct("countersignd")
    let countersign = ProcessResult.builtProduct("countersign")

    func configuration(in directory: URL) throws -> URL {
        let fixture = try SoftHSMFixture.shared()
        let yaml = """
            issuer: countersign.process-test
            listen: { address: 127.0.0.1, port: 0 }
            http: { address: 127.0.0.1, port: 0 }
            data_dir: \(directory.appendingPathComponent("data").path)
            hsm: { module: \(fixture.modulePath), token_label: \(SoftHSMFixture.daemonTokenLabel) }
            tiers:
              - { name: standard, max_amount: { USD: 50000 }, key: standard, backend: software }
              - { name: high, max_amount: { USD: 5000000 }, key: high, backend: hsm }
            """
        let url = directory.appendingPathComponent("countersign.yaml")
        try Data(yaml.utf8).write(to: url)
        return url
    }

    @Test("check-config refuses a wrong file with its line and reason")
    func checkConfig() throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("check-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let good = try self.configuration(in: directory)
        let ok = try ProcessResult.run(executable: self.countersignd, arguments: ["check-config", "--config", good.path], environment: [:])
        #expect(ok.status == 0, "\(ok.standardError)")
        #expect(ok.standardOutput.contains("configuration OK: 2 tiers, 0 profiles"))

        let bad = directory.appendingPathComponent("bad.yaml")
        try Data(try String(contentsOf: good, encoding: .utf8).replacingOccurrences(of: "USD: 50000", with: "USD: 50000, ZZZ: 1").utf8).write(to: bad)
        let refused = try ProcessResult.run(executable: self.countersignd, arguments: ["check-config", "--config", bad.path], environment: [:])
        #expect(refused.status != 0)
        #expect(refused.standardError.contains("\(bad.path):7: tiers[0].max_amount.ZZZ: 'ZZZ' is not an ISO 4217 currency code"), "\(refused.standardError)")
    }

    @Test("init, serve, agents, authorize, verify and SIGTERM, with no secret in any output")
    func operatorAndAgent() async throws {
        let fixture = try SoftHSMFixture.shared()
        let directory = fixture.directory.appendingPathComponent("process-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let config = try self.configuration(in: directory)
        var environment = fixture.environment()
        environment["COUNTERSIGN_CONFIG"] = config.path
        environment["COUNTERSIGN_TOKEN_LABEL"] = SoftHSMFixture.daemonTokenLabel
        var transcript = ""

        let initialized = try ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment)
        transcript += initialized.standardOutput + initialized.standardError
        #expect(initialized.status == 0, "\(initialized.standardError)")
        let adminPath = directory.appendingPathComponent("data/admin.credential").path
        #expect(try Self.mode(of: adminPath) == 0o600)
        let again = try ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: environment)
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
        let added = try ProcessResult.run(executable: self.countersign, arguments: ["agents", "add", "agent-cli", "--out", agentPath], environment: environment)
        transcript += added.standardOutput + added.standardError
        #expect(added.status == 0, "\(added.standardError)")
        #expect(try Self.mode(of: agentPath) == 0o600)

        var agent = environment
        agent["COUNTERSIGN_CREDENTIAL"] = agentPath
        let authorized = try ProcessResult.run(
            executable: self.countersign,
            arguments: ["authorize", "--amount", "1200.00", "--currency", "USD", "--merchant", "m-9", "--mcc", "5734", "--intent", "a laptop", "--item", "laptop:1:1200.00"],
            environment: agent
        )
        transcript += authorized.standardOutput + authorized.standardError
        #expect(authorized.status == 0, "\(authorized.standardError)")
        let jws = authorized.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(jws.split(separator: ".").count == 3)

        let verified = try ProcessResult.run(executable: self.countersign, arguments: ["verify", jws], environment: agent)
        #expect(verified.status == 0, "\(verified.standardError)")
        #expect(verified.standardOutput.contains("valid: 120000 minor units USD to m-9 for agent-cli, tier high, key high/v1"))

        let tooPrecise = try ProcessResult.run(
            executable: self.countersign,
            arguments: ["authorize", "--amount", "12.505", "--currency", "USD", "--merchant", "m", "--mcc", "5734", "--intent", "x", "--order-hash", "h"],
            environment: agent
        )
        #expect(tooPrecise.status != 0)
        #expect(tooPrecise.standardError.contains("at most 2 decimals"))

        let forbidden = try ProcessResult.run(executable: self.countersign, arguments: ["agents", "list"], environment: agent)
        #expect(forbidden.status != 0 && forbidden.standardError.contains("FORBIDDEN"))

        let jwks = try ProcessResult.run(executable: self.countersign, arguments: ["keys", "jwks"], environment: environment)
        #expect(try JSONDecoder().decode(KeysResponse.self, from: Data(jwks.standardOutput.utf8)).keys.map(\.kid) == ["audit/v1", "high/v1", "standard/v1"], "every tier's key and the audit key")

        let revoked = try ProcessResult.run(executable: self.countersign, arguments: ["agents", "revoke", "agent-cli"], environment: environment)
        #expect(revoked.status == 0)
        let listed = try ProcessResult.run(executable: self.countersign, arguments: ["agents", "list"], environment: environment)
        #expect(listed.standardOutput.contains("agent-cli\tagent\tES256\trevoked at"))

        kill(server.processIdentifier, SIGTERM)
        server.waitUntilExit()
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

    static func mode(of path: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }
}
