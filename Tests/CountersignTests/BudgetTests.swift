import CountersignClient
import CountersignServer
import Foundation
import Ledger
import Policy
import TestSupport
import Testing
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
    func startsAndEnds(window: BudgetWindow, now: Int64, start: Int64) {
        #expect(window.start(at: now) == start, "\(window) at \(now)")
        if let next = window.nextStart(after: now) {
            #expect(next > now && window.start(at: next) == next && window.start(at: next - 1) == start, "\(window) at \(now)")
        }
    }

    @Test("times read as RFC 3339 UTC, and windows say when they start anew")
    func times() {
        #expect(HumanText.time(Self.wednesday) == "2026-11-25T13:14:15Z")
        #expect(HumanText.time(0) == "1970-01-01T00:00:00Z")
        #expect(HumanText.time(951_782_400) == "2000-02-29T00:00:00Z")
        #expect(BudgetWindow.day.nextStart(after: Self.wednesday).map(HumanText.time) == "2026-11-26T00:00:00Z")
        #expect(BudgetWindow.week.nextStart(after: Self.wednesday).map(HumanText.time) == "2026-11-30T00:00:00Z")
        #expect(BudgetWindow.month.nextStart(after: Self.wednesday).map(HumanText.time) == "2026-12-01T00:00:00Z")
        #expect(BudgetWindow.month.nextStart(after: 1_798_761_599).map(HumanText.time) == "2027-01-01T00:00:00Z", "December rolls into the next year")
        #expect(BudgetWindow.rolling(seconds: 60).nextStart(after: Self.wednesday) == nil)
        #expect(HumanText.time(-1) == "1969-12-31T23:59:59Z")
        #expect([86_400, 604_800, 7_200, 900, 90, 0].map { HumanText.duration(seconds: $0) } == ["1 day", "7 days", "2 h", "15 min", "90 s", "0 s"])
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
        try await withServer(.init(budgets: "budgets:\n  - { agent: agent-budget, limit: { USD: \(Int64(k) * amount + amount - 1) }, window: day }\n")) {
            server in
            let credential = try await server.addPrincipal("agent-budget")
            let before = Int64(Date().timeIntervalSince1970)
            let outcomes = try await server.authorizeConcurrently([credential], connections: 50, perConnection: 40, amount: amount)
            #expect(outcomes.count == 2_000)
            let authorized = outcomes.compactMap { try? $0.get() }
            let refusals = outcomes.compactMap { if case .failure(let error) = $0 { error } else { nil } }
            #expect(authorized.count == k)
            #expect(Set(refusals.map(\.code)) == [.budgetExceeded])
            let spent = try await server.application.store.spent(agent: "agent-budget", currency: "USD", since: 0)
            #expect(spent == Int64(k) * amount)
            #expect(try await server.application.store.authorizationCount() == k)
            // The refusals were made between `before` and now: a run across midnight UTC may name either next day.
            let nextDays = Set([before, Int64(Date().timeIntervalSince1970)].map { HumanText.time(BudgetWindow.day.nextStart(after: $0)!) })
            #expect(
                refusals.allSatisfy { refusal in
                    nextDays.contains {
                        refusal.message.hasSuffix(
                            "would exceed the day (UTC) budget of agent agent-budget, 493.99 USD: 481.00 USD is already counted, 12.99 USD remains; the window starts anew at \($0)"
                        )
                    }
                }, "\(refusals.first?.message ?? "")")
        }
    }
}
