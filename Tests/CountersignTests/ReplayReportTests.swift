import CountersignClient
import CountersignServer
import Foundation
import TestSupport
import Testing
import Wire

/// `countersign policy replay` and `countersign report` over the store of a real server, and the business metrics.
@Suite("Policy replay, the business report and its metrics", .timeLimit(.minutes(2)))
struct ReplayReportTests {
    /// 13:14 UTC: the scenario stays within one UTC day.
    static let start: Int64 = 1_795_612_455
    static let tiers = """
        tiers:
          - { name: standard, max_amount: { USD: 50000 }, key: standard, backend: software, lifetime: 5m }
          - { name: high, max_amount: { USD: 5000000 }, key: high, backend: hsm, lifetime: 2m }
          - { name: critical, max_amount: { USD: 50000000 }, key: critical, backend: hsm, lifetime: 1m, approval: { quorum: 1, ttl: 15m } }

        """
    static let budgets = """
        budgets:
          - { agent: agent-a, limit: { USD: 100000 }, window: day }
          - { agent: agent-b, limit: { USD: 10000 }, window: day }

        """
    static let escalation = "escalation:\n  new_merchant_above: { USD: 20000 }\n"

    let countersign = ProcessResult.builtProduct("countersign")

    static func request(_ amount: Int64, merchant: String, key: String = UUID().uuidString) -> AuthorizeRequest {
        AuthorizeRequest(
            idempotencyKey: key, amount: amount, currency: "USD", merchantID: merchant, merchantCategoryCode: "5734",
            intent: Intent(description: "parts", lineItems: [LineItem(description: "part", quantity: 1, unitAmount: amount)]))
    }

    /// Fourteen decisions: signed, voided (and the void retried), escalated for a new merchant, over a budget (and
    /// retried with the same key), approved, denied, and withdrawn while waiting for approvers.
    static func scenario(_ server: TestServer, clock: SettableWallClock) async throws {
        let a = try await server.connect(try await server.addPrincipal("agent-a"))
        let b = try await server.connect(try await server.addPrincipal("agent-b"))
        let c = try await server.connect(try await server.addPrincipal("agent-c"))
        let alice = try await server.connect(try await server.addPrincipal("alice", role: .approver))
        defer { Task { for client in [a, b, c, alice] { await client.close() } } }
        func submit(_ client: CountersignClient, _ amount: Int64, _ merchant: String, key: String = UUID().uuidString) async throws -> AuthorizeOutcome {
            clock.advance(by: 10)
            return try await client.submit(Self.request(amount, merchant: merchant, key: key))
        }
        for _ in 0..<3 { _ = try await submit(a, 4_000, "m-1") }
        // A first payment above 200.00 USD to a merchant: escalated from standard to high.
        guard case .authorized(let escalated) = try await submit(a, 25_000, "m-2") else { throw ClientError.unexpectedResponse("#4 not signed") }
        #expect(escalated.tier == "high")
        guard case .authorized(let voided) = try await submit(a, 4_000, "m-1") else { throw ClientError.unexpectedResponse("#5 not signed") }
        clock.advance(by: 5)
        _ = try await a.void(authorizationID: voided.authorizationID)
        _ = try await a.void(authorizationID: voided.authorizationID)  // a retried void changes nothing
        _ = try await submit(a, 2_000, "m-1")
        _ = try await submit(c, 15_000, "m-3")
        _ = try await submit(c, 60_000, "m-3")
        _ = try await submit(b, 6_000, "m-1")
        // Over agent-b's budget, and retried with the same key: refused twice.
        let refusedKey = UUID().uuidString
        for _ in 0..<2 { await #expect(throws: WireError.self) { _ = try await submit(b, 6_000, "m-1", key: refusedKey) } }
        // Two payments for approvers: one approved after 120 s, one denied after 300 s.
        guard case .pendingApproval(let approved) = try await submit(c, 6_000_000, "m-3") else { throw ClientError.unexpectedResponse("#12 not pending") }
        clock.advance(by: 120)
        _ = try await alice.approve(id: approved.authorizationID)
        guard case .pendingApproval(let denied) = try await submit(c, 7_000_000, "m-3") else { throw ClientError.unexpectedResponse("#13 not pending") }
        clock.advance(by: 300)
        _ = try await alice.deny(id: denied.authorizationID)
        guard case .pendingApproval(let withdrawn) = try await submit(c, 8_000_000, "m-3") else { throw ClientError.unexpectedResponse("#15 not pending") }
        clock.advance(by: 30)
        _ = try await c.void(authorizationID: withdrawn.authorizationID)
    }

    /// Runs the scenario on a server with the recorded policy, then `body` with its options, its store file and its
    /// configuration written where the CLI can read it.
    static func withScenario(_ body: (TestServer, TestServer.Options, String, URL) async throws -> Void) async throws {
        let clock = SettableWallClock(Self.start)
        let options = TestServer.Options(budgets: Self.budgets, policy: Self.escalation, tiers: Self.tiers, wallClock: clock.wallClock)
        try await withServer(options) { server in
            try await Self.scenario(server, clock: clock)
            let current = server.dataDirectory.appendingPathComponent("current.yaml")
            try TestServer.yaml(dataDirectory: server.dataDirectory, options: options).write(to: current, atomically: true, encoding: .utf8)
            try await body(server, options, server.dataDirectory.appendingPathComponent("countersign.sqlite").path, current)
        }
    }

    func json(_ arguments: [String]) async throws -> [String: Any] {
        let result = try await ProcessResult.run(executable: self.countersign, arguments: arguments, environment: [:])
        #expect(result.status == 0, "\(arguments): \(result.standardError)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any], "\(result.standardOutput)")
    }

    @Test("replay: the server's own policy changes nothing; a candidate's refusals, escalations, allowances and budgets are each found")
    func replay() async throws {
        try await Self.withScenario { server, options, store, current in
            let window = ["--store", store, "--from", "\(Self.start)", "--to", "\(Self.start + 3_600)", "--json"]

            // The server's own configuration names the store too (its data_dir).
            let same = try await self.json(
                ["policy", "replay", "--policy", current.path, "--config", current.path, "--from", "\(Self.start)", "--to", "\(Self.start + 3_600)", "--json"])
            #expect(same["replayed"] as? Int == 14)
            #expect(same["skipped"] as? Int == 0)
            #expect(same["retries"] as? Int == 0, "a refused key is decided again")
            #expect((same["changes"] as? [String: Int])?["unchanged"] == 14, "\(same)")
            #expect((same["changed"] as? [Any])?.isEmpty == true, "\(same["changed"] ?? "")")
            #expect((same["refusals"] as? [String: [String: Int]])?["candidate"] == ["BUDGET_EXCEEDED": 2])

            // The candidate: standard only up to 100.00 USD, agent-a's budget down to 300.00, agent-b's up to 1000.00,
            // and no new-merchant rule.
            var stricter = options
            stricter.tiers = Self.tiers.replacingOccurrences(of: "max_amount: { USD: 50000 }", with: "max_amount: { USD: 10000 }")
            stricter.budgets = Self.budgets.replacingOccurrences(of: "USD: 100000", with: "USD: 30000").replacingOccurrences(
                of: "USD: 10000 }", with: "USD: 100000 }")
            stricter.policy = ""
            let candidate = server.dataDirectory.appendingPathComponent("candidate.yaml")
            try TestServer.yaml(dataDirectory: server.dataDirectory, options: stricter).write(to: candidate, atomically: true, encoding: .utf8)
            let changed = try await self.json(["policy", "replay", "--policy", candidate.path] + window)
            #expect(
                changed["changes"] as? [String: Int]
                    == ["unchanged": 10, "newly_refused": 1, "newly_escalated": 1, "newly_allowed": 1, "refused_otherwise": 0, "deescalated": 0],
                "\(changed)")
            #expect(changed["retries"] as? Int == 1, "agent-b's second attempt repeats a key the candidate signed")
            let rows = try #require(changed["changed"] as? [[String: Any]])
            let byChange = Dictionary(grouping: rows) { $0["change"] as? String ?? "" }
            let refused = try #require(byChange["newly_refused"]?.first)
            #expect(refused["agent"] as? String == "agent-a")
            #expect(refused["amount"] as? Int == 25_000)
            #expect(refused["candidate"] as? String == "BUDGET_EXCEEDED")
            #expect(refused["recorded_tier"] as? String == "high")
            let escalated = try #require(byChange["newly_escalated"]?.first)
            #expect(escalated["agent"] as? String == "agent-c")
            #expect(escalated["recorded_tier"] as? String == "standard")
            #expect(escalated["candidate_tier"] as? String == "high")
            let allowed = try #require(byChange["newly_allowed"]?.first)
            #expect(allowed["agent"] as? String == "agent-b")
            #expect(allowed["recorded"] as? String == "BUDGET_EXCEEDED")
            let budgets = try #require(changed["budgets"] as? [[String: Any]])
            #expect(budgets.count == 1)
            #expect(budgets.first?["scope"] as? String == "agent:agent-a")
            #expect(budgets.first?["limit"] as? Int == 30_000)
            #expect(budgets.first?["refused_amount"] as? Int == 25_000)
            let agents = try #require(changed["agents"] as? [String: [String: Any]])
            #expect((agents["agent-a"]?["changes"] as? [String: Int]) == ["newly_refused": 1])
            #expect((agents["agent-c"]?["changes"] as? [String: Int]) == ["newly_escalated": 1])

            // The text form names the same changes; a window before anything happened replays nothing.
            let text = try await ProcessResult.run(
                executable: self.countersign, arguments: ["policy", "replay", "--policy", candidate.path, "--verbose"] + window.dropLast(), environment: [:])
            #expect(text.standardOutput.contains("  newly refused       1\n"), "\(text.standardOutput)")
            #expect(text.standardOutput.contains("agent:agent-a day (UTC) 300.00 USD: 1 request(s) refused, 250.00 USD"), "\(text.standardOutput)")
            #expect(text.standardOutput.contains("agent-c (5 requests): newly escalated 1"), "\(text.standardOutput)")
            let empty = try await self.json(
                ["policy", "replay", "--policy", candidate.path, "--store", store, "--from", "\(Self.start - 7_200)", "--to", "\(Self.start)", "--json"])
            #expect(empty["replayed"] as? Int == 0)

            let wrong = try await ProcessResult.run(
                executable: self.countersign, arguments: ["policy", "replay", "--policy", candidate.path, "--store", store, "--from", "yesterday"],
                environment: [:])
            #expect(wrong.status != 0)
            #expect(wrong.standardError.contains("--from 'yesterday' is not a date"), "\(wrong.standardError)")
        }
    }

    @Test("report: outcomes and codes, escalations, approval rate and turnaround, voids, budget use now and at peak; and the same in /metrics")
    func report() async throws {
        try await Self.withScenario { server, _, store, current in
            let arguments = ["report", "--store", store, "--policy", current.path, "--from", "\(Self.start)", "--to", "\(Self.start + 3_600)"]
            let report = try await self.json(arguments + ["--json"])
            #expect(report["decisions"] as? Int == 14)
            #expect(report["outcomes"] as? [String: Int] == ["authorized": 9, "pending_approval": 3, "refused": 2], "\(report)")
            #expect(report["refusals"] as? [String: Int] == ["BUDGET_EXCEEDED": 2])
            #expect(report["escalated"] as? Int == 1)
            #expect(report["escalations_by_check"] as? [String: Int] == ["new_merchant": 1])
            let approvals = try #require(report["approvals"] as? [String: Any])
            #expect(approvals["requested"] as? Int == 3)
            #expect(approvals["approved"] as? Int == 1)
            #expect(approvals["denied"] as? Int == 1)
            #expect(approvals["withdrawn"] as? Int == 1, "voided by its agent before a verdict: not an expiry, not in the rate")
            #expect(approvals["approval_rate"] as? Double == 0.5)
            #expect(approvals["turnaround"] as? [String: Int] == ["count": 2, "median_seconds": 120, "p90_seconds": 300, "max_seconds": 300])
            #expect(report["voided"] as? Int == 1)
            #expect(report["void_rate"] as? Double == 0.1, "one of the ten signed (the approved one included)")
            let budgets = try #require(report["budgets"] as? [[String: Any]])
            let agentA = try #require(budgets.first { $0["scope"] as? String == "agent:agent-a" })
            #expect(agentA["counted"] as? Int == 39_000, "three of 40.00, one of 250.00 and one of 20.00; the voided one no longer counts")
            #expect(agentA["peak"] as? Int == 41_000, "before the void")
            #expect(agentA["peak_at"] as? Int == Int(Self.start + 50))
            let agentB = try #require(budgets.first { $0["scope"] as? String == "agent:agent-b" })
            #expect(agentB["counted"] as? Int == 6_000)
            #expect(agentB["utilization"] as? Double == 0.6)

            // A report that starts after agent-a's payments still sees them in the day's window, at its start.
            let later = try await self.json(
                ["report", "--store", store, "--policy", current.path, "--from", "\(Self.start + 100)", "--to", "\(Self.start + 3_600)", "--json"])
            let laterA = try #require((later["budgets"] as? [[String: Any]])?.first { $0["scope"] as? String == "agent:agent-a" })
            #expect(laterA["counted"] as? Int == 39_000)
            #expect(laterA["peak"] as? Int == 39_000, "what counted when the report starts")

            let text = try await ProcessResult.run(executable: self.countersign, arguments: arguments, environment: [:])
            #expect(
                text.standardOutput.contains("approvals: 3 requested, 1 approved, 1 denied, 0 expired, 1 withdrawn, 0 pending; approval rate 50.0%"),
                "\(text.standardOutput)")
            #expect(
                text.standardOutput.contains("agent:agent-a day (UTC): 390.00 USD of 1000.00 USD (39.0%); peak 410.00 USD (41.0%)"), "\(text.standardOutput)")

            // The same events in the server's metrics.
            let (metrics, _) = try await InteropTests.get(server, "/metrics")
            #expect(MetricsTests.value(#"countersign_escalations_total{check="new_merchant"}"#, in: metrics) == 1, "\(metrics)")
            #expect(MetricsTests.value(#"countersign_escalations_total{check="behaviour"}"#, in: metrics) == 0)
            #expect(MetricsTests.value(#"countersign_voids_total{of="authorization"}"#, in: metrics) == 1, "the retried void is not counted again")
            #expect(MetricsTests.value(#"countersign_voids_total{of="pending_approval"}"#, in: metrics) == 1)
            #expect(MetricsTests.value(#"countersign_approval_turnaround_seconds_count{outcome="approved"}"#, in: metrics) == 1)
            #expect(MetricsTests.value(#"countersign_approval_turnaround_seconds_sum{outcome="denied"}"#, in: metrics) == 300)
            #expect(MetricsTests.value(#"countersign_approval_turnaround_seconds_bucket{outcome="approved",le="60.0"}"#, in: metrics) == 0, "\(metrics)")
            #expect(MetricsTests.value(#"countersign_approval_turnaround_seconds_bucket{outcome="approved",le="120.0"}"#, in: metrics) == 1)
        }
    }
}
