import CountersignClient
import CountersignServer
import Foundation
import TestSupport
import Testing
import Wire

@Suite("countersign policy, approvals, budgets and contexts commands", .timeLimit(.minutes(1)))
struct PolicyCLITests {
    let countersign = ProcessResult.builtProduct("countersign")

    @Test("policy check prints the example's four tiers; a broken file is refused with its line")
    func policyCheck() async throws {
        let example = SoftHSMFixture.repositoryRoot.appendingPathComponent("hsm-config/countersign.yaml").path
        let ok = try await ProcessResult.run(executable: self.countersign, arguments: ["policy", "check", example], environment: [:])
        #expect(ok.status == 0, "\(ok.standardError)")
        let tierLines = ok.standardOutput.split(separator: "\n").filter { line in
            ["micro", "standard", "high", "critical"].contains { line.hasPrefix("  \($0) ") }
        }
        #expect(tierLines.count == 4, "\(ok.standardOutput)")
        #expect(tierLines.last?.hasSuffix("2 approver(s) within 15 min") == true, "\(tierLines)")
        #expect(ok.standardOutput.contains("max per authorization: 2000.00 USD; merchants blocked: m-casino; categories blocked: 7995"), "\(ok.standardOutput)")
        #expect(ok.standardOutput.contains("nights: schedule every day 22:00-06:00 UTC; max per authorization 200.00 USD for profile shopping"))
        #expect(ok.standardOutput.contains("shopping: agents: agent-1, agent-2; team: procurement"))
        #expect(ok.standardOutput.contains("procurement (organization acme)"))

        let json = try await ProcessResult.run(executable: self.countersign, arguments: ["policy", "check", example, "--json"], environment: [:])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.standardOutput.utf8)) as? [String: Any], "\(json.standardError)")
        #expect((object["tiers"] as? [Any])?.count == 4)
        #expect(ok.standardOutput.hasPrefix("policy \(object["policy_version"] as? String ?? "?")\n"), "one version in both forms")
        let shopping = (object["profiles"] as? [[String: Any]])?.first { $0["name"] as? String == "shopping" }
        #expect((shopping?["max_per_authorization"] as? [String: Int])?["USD"] == 200_000, "JSON keeps minor units")

        let broken = FileManager.default.temporaryDirectory.appendingPathComponent("broken-\(UUID().uuidString).yaml")
        let text = try String(contentsOfFile: example, encoding: .utf8).replacingOccurrences(of: "highest_tier: high", with: "highest_tier: platinum")
        try text.write(to: broken, atomically: true, encoding: .utf8)
        let refused = try await ProcessResult.run(executable: self.countersign, arguments: ["policy", "check", broken.path], environment: [:])
        #expect(refused.status != 0)
        #expect(refused.standardError.contains("\(broken.path):"))
        #expect(refused.standardError.contains("profile 'shopping' names tier 'platinum', which is not defined"))
    }

    @Test("approvers list, approve and deny from the command line; admins see budgets and switch modes")
    func approvals() async throws {
        let contexts =
            "contexts:\n  - { name: incident, mode: true, agents: [agent-big], highest_tier: standard }\n"
            + "  - { name: frugal, mode: true, agents: [agent-big], max_per_authorization: { USD: 20000, JPY: 3000 } }\n"
        let budgets = "budgets:\n  - { agent: agent-big, limit: { USD: 30000000 }, window: day }\n"
        try await withServer(.init(budgets: budgets, policy: contexts, tiers: approvalTiers)) { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-big"))
            var environment = ["COUNTERSIGN_SERVER": "127.0.0.1:\(server.port)"]
            for approver in ["alice", "bob"] {
                let credential = try await server.addPrincipal(approver, role: .approver)
                let path = server.dataDirectory.appendingPathComponent("\(approver).credential").path
                try credential.write(path: path)
                environment["CREDENTIAL_\(approver)"] = path
            }
            func run(_ who: String, _ arguments: String...) async throws -> ProcessResult {
                var env = environment
                env["COUNTERSIGN_CREDENTIAL"] =
                    who == "admin" ? server.dataDirectory.appendingPathComponent("admin.credential").path : environment["CREDENTIAL_\(who)"]
                return try await ProcessResult.run(executable: self.countersign, arguments: arguments, environment: env)
            }
            guard case .pendingApproval(let first) = try await agent.submit(TestServer.request(12_000_000)),
                case .pendingApproval(let second) = try await agent.submit(TestServer.request(14_000_000))
            else {
                Issue.record("expected pending approvals")
                return
            }
            let list = try await run("alice", "approvals", "list")
            #expect(list.status == 0, "\(list.standardError)")
            #expect(list.standardOutput.contains("\(first.authorizationID)\t0/2 approvals"))
            #expect(list.standardOutput.contains("agent-big asks to pay 140000.00 USD to m-42"))

            #expect(
                try await run("alice", "approvals", "approve", first.authorizationID).standardOutput
                    == "\(first.authorizationID): pending_approval, approved by alice (1/2)\n")
            #expect(
                try await run("bob", "approvals", "approve", first.authorizationID).standardOutput
                    == "\(first.authorizationID): authorized, approved by alice, bob (2/2)\n")
            #expect(
                try await run("bob", "approvals", "deny", second.authorizationID).standardOutput
                    == "\(second.authorizationID): denied, approved by nobody (0/2)\n")
            let again = try await run("alice", "approvals", "approve", second.authorizationID)
            #expect(again.status != 0)
            #expect(again.standardError.contains("APPROVAL_CLOSED"))
            let show = try await run("alice", "approvals", "show", first.authorizationID)
            #expect(show.standardOutput.contains(#""tier_reason" : "120000.00 USD is within tier 'critical' (up to 500000.00 USD)""#), "\(show.standardOutput)")
            #expect(show.standardOutput.contains(#""idempotency_key" : ""#), "approvers see the exact request")

            let budgetsShown = try await run("admin", "budgets", "show", "agent-big")
            #expect(
                budgetsShown.standardOutput.contains("\tlimit 300000.00 USD\tspent 120000.00 USD (pending approval 0.00 USD)\tremaining 180000.00 USD"),
                "\(budgetsShown.standardOutput)"
            )
            let listed = try await run("admin", "contexts", "list")
            #expect(
                listed.standardOutput.contains(
                    "frugal\tmode\tnot in force\tat most 3000 JPY, 200.00 USD per authorization for agent agent-big, while switched on"),
                "\(listed.standardOutput)")
            let switched = try await run("admin", "contexts", "set", "incident", "on")
            #expect(
                switched.standardOutput == "incident: in force (highest tier standard for agent agent-big, while switched on)\n", "\(switched.standardError)")
            let denied = await #expect(throws: WireError.self) { try await agent.submit(TestServer.request(12_000_000)) }
            #expect(denied?.code == .tierNotAllowed)
            await agent.close()
        }
    }
}

@Suite("countersign keys and credential commands", .timeLimit(.minutes(1)))
struct KeysCLITests {
    let countersign = ProcessResult.builtProduct("countersign")

    @Test("keys list, rotate, retire and a two-admin destroy from the command line; a credential rotated with a grace period")
    func keys() async throws {
        try await withServer { server in
            let second = try await server.addPrincipal("admin-b", role: .admin)
            let secondPath = server.dataDirectory.appendingPathComponent("admin-b.credential").path
            try second.write(path: secondPath)
            let adminPath = server.dataDirectory.appendingPathComponent("admin.credential").path
            func run(_ credential: String, _ arguments: String...) async throws -> ProcessResult {
                try await ProcessResult.run(
                    executable: self.countersign, arguments: arguments,
                    environment: ["COUNTERSIGN_SERVER": "127.0.0.1:\(server.port)", "COUNTERSIGN_CREDENTIAL": credential]
                )
            }
            #expect(try await run(adminPath, "keys", "rotate", "standard").standardOutput == "standard/v2: active (software)\n")
            #expect(try await run(adminPath, "keys", "retire", "standard/v1").standardOutput == "standard/v1: retired\n")
            let asked = try await run(adminPath, "keys", "destroy", "standard/v1")
            #expect(asked.standardOutput.hasPrefix("standard/v1: awaiting a second admin's confirmation before "))
            let confirmed = try await run(secondPath, "keys", "destroy", "standard/v1")
            #expect(
                confirmed.standardOutput == "standard/v1: destroyed (asked by \(server.admin.principal), confirmed by admin-b)\n", "\(confirmed.standardError)")
            let list = try await run(adminPath, "keys", "list")
            let lines = list.standardOutput.split(separator: "\n").map(String.init)
            #expect(lines.contains { $0.hasPrefix("standard/v1\tdestroyed\tsoftware\ttier standard\t0 signatures\tcreated ") && $0.contains("destroyed ") })
            #expect(lines.contains { $0.hasPrefix("standard/v2\tactive\tsoftware\ttier standard") })
            #expect(lines.contains { $0.hasPrefix("audit/v1\tactive\thsm\ttier audit") })

            let agent = try await server.addPrincipal("agent-cred")
            let newPath = server.dataDirectory.appendingPathComponent("agent-cred.new").path
            let rotated = try await run(adminPath, "agents", "rotate-credential", "agent-cred", "--grace", "2h", "--out", newPath)
            #expect(
                rotated.standardOutput == "new credential for 'agent-cred' written to \(newPath) (mode 0600); the old one works for 2h more\n",
                "\(rotated.standardError)")
            try await server.connect(try CredentialFile.read(path: newPath)).ping()
            try await server.connect(agent).ping()
        }
    }
}
