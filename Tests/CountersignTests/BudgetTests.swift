import CountersignClient
import CountersignServer
import Foundation
import Ledger
import Policy
import Testing
import TestSupport
import Wire

@Suite("Budget windows (pure, table-driven)")
struct BudgetWindowTests {
    // 2026-11-25T13:14:15Z is a Wednesday; its day starts at 1795564800, its ISO week on Monday 2026-11-23.
    static let wednesday: Int64 = 1_795_612_455

    @Test(
        "window starts at their edges",
        arguments: [
            (BudgetWindow.day, wednesday, Int64(1_795_564_800)),
            (.day, 1_795_564_800, 1_795_564_800),
            (.day, 1_795_564_799, 1_795_478_400),
            (.week, wednesday, 1_795_392_000),
            (.week, 1_795_392_000, 1_795_392_000),
            (.week, 1_795_391_999, 1_794_787_200),
            (.month, wednesday, 1_793_491_200),
            (.month, 1_793_491_200, 1_793_491_200),
            (.month, 1_793_491_199, 1_790_812_800),
            (.month, 951_782_400, 949_363_200),  // 2000-02-29T00:00Z, a leap day: its month starts 2000-02-01
            (.rolling(seconds: 3600), wednesday, wednesday - 3599),
        ]
    )
    func starts(window: BudgetWindow, now: Int64, start: Int64) {
        #expect(window.start(at: now) == start, "\(window) at \(now)")
    }

    @Test("only the agent's own budgets in the request's currency apply")
    func checks() {
        let table = BudgetTable([
            Budget(agent: "a", limits: ["USD": 1_000], window: .day),
            Budget(agent: "a", limits: ["USD": 5_000, "EUR": 4_000], window: .month),
            Budget(agent: "b", limits: ["USD": 10], window: .day),
        ])
        #expect(table.checks(scopes: [.agent("a")], currency: "USD", now: Self.wednesday).map(\.limit) == [1_000, 5_000])
        #expect(table.checks(scopes: [.agent("a")], currency: "EUR", now: Self.wednesday).map(\.limit) == [4_000])
        #expect(table.checks(scopes: [.agent("c")], currency: "USD", now: Self.wednesday).isEmpty)
    }
}

@Suite("Budgets are never overspent", .timeLimit(.minutes(2)))
struct BudgetTests {
    @Test("2,000 requests from 50 connections against a budget for exactly 37 of them: exactly 37 are authorized")
    func exactlyK() async throws {
        let k = 37
        let amount: Int64 = 1_300
        try await withServer(.init(budgets: "budgets:\n  - { agent: agent-budget, limit: { USD: \(Int64(k) * amount + amount - 1) }, window: day }\n")) { server in
            let credential = try await server.addPrincipal("agent-budget")
            let outcomes = try await server.authorizeConcurrently([credential], connections: 50, perConnection: 40, amount: amount)
            #expect(outcomes.count == 2_000)
            let authorized = outcomes.compactMap { try? $0.get() }
            let refusals = outcomes.compactMap { if case .failure(let error) = $0 { error } else { nil } }
            #expect(authorized.count == k)
            #expect(Set(refusals.map(\.code)) == [.budgetExceeded])
            let spent = try await server.application.store.spent(agent: "agent-budget", currency: "USD", since: 0)
            #expect(spent == Int64(k) * amount)
            #expect(try await server.application.store.authorizationCount() == k)
            #expect(refusals.allSatisfy { $0.message.hasSuffix("would exceed the day (UTC) budget of agent agent-budget, 493.99 USD; 481.00 USD already counted") })
        }
    }
}
