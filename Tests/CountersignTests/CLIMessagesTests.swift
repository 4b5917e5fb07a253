import CountersignClient
import Foundation
import TestSupport
import Testing
import Wire

/// What an operator reads when something is off: a sentence that says what to check, not a library's dump.
@Suite("The CLI's messages", .timeLimit(.minutes(1)))
struct CLIMessagesTests {
    let countersign = ProcessResult.builtProduct("countersign")

    func ping(_ server: String, credential: String) async throws -> ProcessResult {
        try await ProcessResult.run(
            executable: self.countersign, arguments: ["ping"], environment: ["COUNTERSIGN_SERVER": server, "COUNTERSIGN_CREDENTIAL": credential]
        )
    }

    @Test("nothing listening, or the HTTP port instead of the framed one: each says so")
    func unreachable() async throws {
        try await withServer { server in
            let credential = server.dataDirectory.appendingPathComponent("admin.credential").path
            let refused = try await self.ping("127.0.0.1:\(try DaemonTests.freePort())", credential: credential)
            #expect(refused.status != 0)
            #expect(refused.standardError.contains("UNREACHABLE: cannot connect to countersignd at 127.0.0.1:"), "\(refused.standardError)")
            #expect(refused.standardError.contains("connection refused; is it running"), "\(refused.standardError)")
            #expect(!refused.standardError.contains("SingleConnectionFailure"))

            let http = try await self.ping("127.0.0.1:\(server.httpPort)", credential: credential)
            #expect(http.status != 0)
            #expect(http.standardError.contains("not its HTTP port"), "\(http.standardError)")

            let fine = try await self.ping("127.0.0.1:\(server.port)", credential: credential)
            #expect(fine.status == 0, "\(fine.standardError)")
        }
    }

    @Test("money in major units with its currency, times in RFC 3339; an unknown agent's budgets are not found")
    func unitsAndTimes() async throws {
        let budgets = "budgets:\n  - { agent: agent-units, limit: { USD: 50000 }, window: day }\n"
        try await withServer(.init(budgets: budgets)) { server in
            let credentialPath = server.dataDirectory.appendingPathComponent("agent-units.credential").path
            try (try await server.addPrincipal("agent-units")).write(path: credentialPath)
            let agent = try await server.connect(try CredentialFile.read(path: credentialPath))
            let authorization = try await agent.authorize(TestServer.request(1_250))
            await agent.close()
            let environment = [
                "COUNTERSIGN_SERVER": "127.0.0.1:\(server.port)",
                "COUNTERSIGN_CREDENTIAL": server.dataDirectory.appendingPathComponent("admin.credential").path,
            ]
            let shown = try await ProcessResult.run(executable: self.countersign, arguments: ["budgets", "show", "agent-units"], environment: environment)
            #expect(shown.status == 0, "\(shown.standardError)")
            #expect(
                shown.standardOutput.contains("limit 500.00 USD\tspent 12.50 USD (pending approval 0.00 USD)\tremaining 487.50 USD"), "\(shown.standardOutput)")
            #expect(shown.standardOutput.contains(try Regex(#"day \(UTC\) from \d{4}-\d\d-\d\dT00:00:00Z"#)), "\(shown.standardOutput)")
            let json = try await ProcessResult.run(
                executable: self.countersign, arguments: ["budgets", "show", "agent-units", "--json"], environment: environment)
            #expect(json.standardOutput.contains(#""spent" : 1250"#), "JSON keeps minor units: \(json.standardOutput)")

            let ghost = try await ProcessResult.run(executable: self.countersign, arguments: ["budgets", "show", "ghost"], environment: environment)
            #expect(ghost.status != 0 && ghost.standardError.contains("PRINCIPAL_NOT_FOUND"), "\(ghost.standardError)")

            let verified = try await ProcessResult.run(executable: self.countersign, arguments: ["verify", authorization.jws], environment: environment)
            #expect(verified.standardOutput.contains("valid: 12.50 USD to m-42 for agent-units, tier standard"), "\(verified.standardOutput)")
            #expect(verified.standardOutput.contains(try Regex(#"expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"#)), "\(verified.standardOutput)")

            // The key set is public: a merchant verifies with no credential at all.
            let url = "http://127.0.0.1:\(server.httpPort)/.well-known/jwks.json"
            let anonymous = try await ProcessResult.run(
                executable: self.countersign, arguments: ["verify", authorization.jws, "--jwks", url], environment: [:])
            #expect(anonymous.status == 0 && anonymous.standardOutput.hasPrefix("valid: 12.50 USD"), "\(anonymous.standardError)")
            let elsewhere = try await ProcessResult.run(
                executable: self.countersign, arguments: ["verify", authorization.jws], environment: ["COUNTERSIGN_SERVER": "127.0.0.1:\(server.port)"]
            )
            #expect(
                elsewhere.status != 0 && elsewhere.standardError.contains("give --jwks"),
                "another server's key set is never guessed: \(elsewhere.standardError)")
            let jwks = try await ProcessResult.run(executable: self.countersign, arguments: ["keys", "jwks", "--url", url], environment: [:])
            #expect(jwks.status == 0 && jwks.standardOutput.contains("\"kid\" : \"standard/v1\""), "\(jwks.standardError)")
        }
    }
}
