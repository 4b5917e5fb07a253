import CountersignClient
import Foundation
import TestSupport
import Testing
import Wire

/// `/metrics` as an operator's Prometheus reads it.
@Suite("Metrics", .timeLimit(.minutes(1)))
struct MetricsTests {
    /// The value of the series written exactly as `series` (name and sorted labels), if present.
    static func value(_ series: String, in text: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    @Test("every family has HELP; series start at zero; refusals carry their tier; handshakes, audit, budgets, approvals and process_* are there")
    func families() async throws {
        let budgets = "budgets:\n  - { agent: agent-metrics, limit: { USD: 2000 }, window: day }\n"
        try await withServer(.init(budgets: budgets)) { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-metrics"))
            _ = try await agent.authorize(TestServer.request(1_500))
            let refused = await #expect(throws: WireError.self) { try await agent.authorize(TestServer.request(1_000)) }
            #expect(refused?.code == .budgetExceeded)
            await agent.close()
            let stranger = await #expect(throws: WireError.self) {
                try await CountersignClient.connect(host: "127.0.0.1", port: server.port, principal: "nobody", key: CredentialPrivateKey.generate(.es256))
            }
            #expect(stranger?.code == .authenticationFailed)

            let (text, status) = try await InteropTests.get(server, "/metrics")
            #expect(status == 200)
            let lines = text.split(separator: "\n")
            let typed = Set(lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] })
            let helped = Set(lines.filter { $0.hasPrefix("# HELP ") }.map { $0.split(separator: " ")[2] })
            #expect(!typed.isEmpty && typed == helped, "families without HELP: \(typed.subtracting(helped))")

            #expect(Self.value(#"countersign_authorizations_total{outcome="authorized",tier="standard"}"#, in: text) == 1)
            #expect(
                Self.value(#"countersign_authorizations_total{outcome="BUDGET_EXCEEDED",tier="standard"}"#, in: text) == 1,
                "a refusal after a tier was chosen is labelled with it")
            #expect(Self.value(#"countersign_authorizations_total{outcome="RATE_LIMITED",tier="high"}"#, in: text) == 0, "known series start at zero")
            #expect(Self.value(#"countersign_requests_total{outcome="ok",type="VOID"}"#, in: text) == 0)
            #expect(Self.value(#"countersign_handshakes_total{outcome="authentication_failed"}"#, in: text) == 1)
            #expect((Self.value(#"countersign_handshakes_total{outcome="ok"}"#, in: text) ?? 0) >= 2)
            #expect((Self.value("countersign_audit_entries", in: text) ?? 0) >= 3)
            #expect(Self.value("countersign_audit_write_failures_total", in: text) == 0)
            #expect(Self.value("countersign_approvals_pending", in: text) == 0)
            #expect(Self.value(#"countersign_budget_spent_ratio{currency="USD",scope="agent:agent-metrics",window="day (UTC)"}"#, in: text) == 0.75)
            #expect(Self.value("countersign_hsm_breaker_open", in: text) == 0)
            #expect(Self.value("countersign_hsm_failures_total", in: text) == 0)
            for name in [
                "process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                "process_start_time_seconds",
            ] {
                #expect((Self.value(name, in: text) ?? 0) > 0, "\(name)")
            }
            #expect(!text.contains("countersign_process_resident_memory_bytes"), "the standard name, not a private one")
        }
    }

    @Test("the CPU time of HSM signing is counted, on the pool's threads, as part of the process's")
    func hsmSigningCPU() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-signing-cpu"))
            let (before, _) = try await InteropTests.get(server, "/metrics")
            let signedBefore = try #require(Self.value("countersign_hsm_signing_cpu_seconds_total", in: before))
            for _ in 0..<20 {
                #expect(try await agent.authorize(TestServer.request(2_000_000)).tier == "high")
            }
            await agent.close()
            let (after, _) = try await InteropTests.get(server, "/metrics")
            let signedAfter = try #require(Self.value("countersign_hsm_signing_cpu_seconds_total", in: after))
            #expect(signedAfter > signedBefore, "twenty signatures by SoftHSM take CPU time")
            #expect(signedAfter <= (Self.value("process_cpu_seconds_total", in: after) ?? 0))
        }
    }

    @Test("the Grafana dashboard reads only families the server exports")
    func dashboardMatches() async throws {
        // With a budget, so that its family exists too.
        try await withServer(.init(budgets: "budgets:\n  - { agent: agent-any, limit: { USD: 100 }, window: week }\n")) { server in
            let (text, _) = try await InteropTests.get(server, "/metrics")
            let families = Set(text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) })
            let dashboard = SoftHSMFixture.repositoryRoot.appendingPathComponent("hsm-config/grafana-dashboard.json")
            let json = try String(contentsOf: dashboard, encoding: .utf8)
            let used = Set(
                json.matches(of: /(countersign|process)_[a-z_]+/).map { String($0.output.0) }.map { name in
                    name.hasSuffix("_bucket") ? String(name.dropLast("_bucket".count)) : name
                })
            #expect(used.count >= 15)
            #expect(used.subtracting(families).isEmpty, "the dashboard names families /metrics does not have: \(used.subtracting(families))")
        }
    }
}
