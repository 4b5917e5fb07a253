import CountersignClient
import CountersignServer
import Foundation
import Ledger
import Policy
import TestSupport
import Testing
import Wire

@Suite("Nested budgets: agent, team, organization", .timeLimit(.minutes(2)))
struct NestedBudgetTests {
    /// Two teams in one organization; four agents in each. Only the organization's budget binds.
    static func policy(organizationLimit: Int64) -> (profiles: String, policy: String) {
        let profiles = """
            profiles:
              - { name: ops-agents, team: ops, agents: [ops-1, ops-2, ops-3, ops-4], budgets: [{ limit: { USD: 10000000 }, window: day }] }
              - { name: sales-agents, team: sales, agents: [sales-1, sales-2, sales-3, sales-4] }

            """
        let policy = """
            organizations:
              - { name: acme, budgets: [{ limit: { USD: \(organizationLimit) }, window: month }] }
            teams:
              - { name: ops, organization: acme, budgets: [{ limit: { USD: 10000000 }, window: day }] }
              - { name: sales, organization: acme, budgets: [{ limit: { USD: 10000000 }, window: 1h }] }

            """
        return (profiles, policy)
    }

    @Test("2,000 requests from 50 connections of 8 agents in 2 teams against an organization budget for exactly 37: exactly 37 pass, counted at every level")
    func exactlyKAcrossTeams() async throws {
        let k: Int64 = 37
        let amount: Int64 = 1_300
        let (profiles, policy) = Self.policy(organizationLimit: k * amount + amount - 1)
        try await withServer(.init(profiles: profiles, policy: policy)) { server in
            let agents = ["ops-1", "ops-2", "ops-3", "ops-4", "sales-1", "sales-2", "sales-3", "sales-4"]
            var credentials: [CredentialFile] = []
            for agent in agents { credentials.append(try await server.addPrincipal(agent)) }
            let outcomes = try await server.authorizeConcurrently(credentials, connections: 50, perConnection: 40, amount: amount)
            #expect(outcomes.count == 2_000)
            let authorized = outcomes.compactMap { try? $0.get() }
            let refusals = outcomes.compactMap { if case .failure(let error) = $0 { error } else { nil } }
            #expect(authorized.count == Int(k))
            #expect(Set(refusals.map(\.code)) == [.budgetExceeded])
            #expect(refusals.allSatisfy { $0.message.contains("budget of organization acme") })

            let store = server.application.store
            let now = Int64(Date().timeIntervalSince1970)
            let organization = try await store.spent(scope: .organization("acme"), currency: "USD", since: 0, now: now)
            let ops = try await store.spent(scope: .team("ops"), currency: "USD", since: 0, now: now)
            let sales = try await store.spent(scope: .team("sales"), currency: "USD", since: 0, now: now)
            var perAgent: Int64 = 0
            for agent in agents { perAgent += try await store.spent(scope: .agent(agent), currency: "USD", since: 0, now: now) }
            #expect(organization == k * amount)
            #expect(ops + sales == organization, "every spend is counted at its team too")
            #expect(perAgent == organization, "and at its agent")
            #expect(try await store.authorizationCount() == Int(k))
        }
    }

    @Test("a team's budget binds its agents but not the other team's; budgets show every level")
    func teamBinds() async throws {
        let (profiles, policy) = Self.policy(organizationLimit: 100_000_000)
        let tightPolicy = policy.replacingOccurrences(
            of: "{ name: ops, organization: acme, budgets: [{ limit: { USD: 10000000 }",
            with: "{ name: ops, organization: acme, budgets: [{ limit: { USD: 2000 }")
        try await withServer(.init(profiles: profiles, policy: tightPolicy)) { server in
            let ops1 = try await server.connect(try await server.addPrincipal("ops-1"))
            let ops2 = try await server.connect(try await server.addPrincipal("ops-2"))
            let sales1 = try await server.connect(try await server.addPrincipal("sales-1"))
            _ = try await ops1.authorize(TestServer.request(1_500))
            let over = await #expect(throws: WireError.self) { try await ops2.authorize(TestServer.request(1_000)) }
            #expect(over?.code == .budgetExceeded)
            #expect(
                over?.message.hasPrefix(
                    "10.00 USD would exceed the day (UTC) budget of team ops, 20.00 USD: 15.00 USD is already counted, 5.00 USD remains; the window starts anew at 20"
                ) == true,
                "\(over?.message ?? "")"
            )
            _ = try await sales1.authorize(TestServer.request(1_000))

            let report = try await ops2.budgets(agent: "ops-2")
            #expect(report.scopes == ["agent:ops-2", "team:ops", "org:acme"])
            #expect(report.budgets.map(\.scope) == ["agent:ops-2", "team:ops", "org:acme"])
            #expect(report.budgets.map(\.spent) == [0, 1_500, 2_500])
            #expect(report.budgets.map(\.remaining) == [10_000_000, 500, 99_997_500])

            // The refusal is stored with its decision record.
            let refusals = try await server.application.store.refusals(agent: "ops-2")
            #expect(refusals.map(\.code) == ["BUDGET_EXCEEDED"])
            let decision = try JSONDecoder().decode(DecisionRecord.self, from: refusals[0].decision)
            #expect(decision.outcome == "denied")
            #expect(decision.checks.last?.name == "budget")
            for client in [ops1, ops2, sales1] { await client.close() }
        }
    }
}
