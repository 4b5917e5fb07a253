import CountersignCore
import Policy
import PolicyLab
import Testing

/// The replay's own logic, without a store: the look-back, budgets over time, and the hold timeline it counts with.
@Suite("Policy replay: the look-back and the budget timeline")
struct ReplayTests {
    static let usd = CascadeTests.usd
    static let day: Int64 = 1_767_571_200  // 2026-01-05 00:00 UTC

    static func engine(budget: Int64) throws -> PolicyEngine {
        try PolicyEngine(
            tiers: try TierTable([Tier(name: "standard", maximumAmounts: ["USD": 100_000], keyName: "standard", backend: .software, lifetimeSeconds: 300)]),
            profiles: [], budgets: BudgetTable([Budget(agent: "agent-1", limits: ["USD": budget], window: .day)]))
    }

    static func authorized(_ amount: Int64, at time: Int64, voidedAt: Int64? = nil, key: String = "") -> RecordedRequest {
        RecordedRequest(
            time: time,
            request: PolicyRequest(agent: "agent-1", amount: Money(minorUnits: amount, currency: Self.usd), merchant: "m-1", merchantCategoryCode: "5734"),
            outcome: .authorized, tier: "standard", settlement: .init(authorizedAt: time, releasedAt: voidedAt, learnable: voidedAt == nil),
            idempotencyKey: key.isEmpty ? "k-\(time)" : key)
    }

    static func refused(_ amount: Int64, at time: Int64, code: String, key: String) -> RecordedRequest {
        var request = Self.authorized(amount, at: time, key: key)
        request.outcome = .refused(code: code)
        request.settlement = nil
        return request
    }

    @Test("what was signed before the window holds the candidate's budget; a void before the request releases it")
    func lookBack() throws {
        let candidate = try Self.engine(budget: 10_000)
        let from = Self.day + 12 * 3600
        // 80.00 signed in the morning (under the old, larger budget), 30.00 in the window: over the candidate's 100.00.
        let held = PolicyReplay(policy: candidate).run(
            [Self.authorized(8_000, at: from - 3600), Self.authorized(3_000, at: from + 60)], from: from, to: from + 3600)
        #expect(held.replayed.count == 1, "the look-back is not reported")
        #expect(held.changes[.newlyRefused] == 1)
        #expect(held.replayed.first?.candidateOutcome == "BUDGET_EXCEEDED")
        #expect(held.budgets.values.first?.refused == 1)

        // Voided before the request: nothing held.
        let voided = PolicyReplay(policy: candidate).run(
            [Self.authorized(8_000, at: from - 3600, voidedAt: from), Self.authorized(3_000, at: from + 60)], from: from, to: from + 3600)
        #expect(voided.changes[.unchanged] == 1)
        // Yesterday's spending is another day's budget.
        let yesterday = PolicyReplay(policy: candidate).run(
            [Self.authorized(8_000, at: Self.day - 60), Self.authorized(3_000, at: from + 60)], from: from, to: from + 3600)
        #expect(yesterday.changes[.unchanged] == 1)
        // The candidate's own refusals hold nothing: after the refused 30.00, 20.00 fits.
        let after = PolicyReplay(policy: candidate).run(
            [Self.authorized(8_000, at: from - 3600), Self.authorized(3_000, at: from + 60), Self.authorized(2_000, at: from + 120)], from: from,
            to: from + 3600)
        #expect(after.replayed.map(\.candidateOutcome) == ["BUDGET_EXCEEDED", "authorized"])
    }

    @Test("a key the candidate signed makes later requests with it retries; refusals by the service are not compared")
    func retriesAndOperational() throws {
        let candidate = try Self.engine(budget: 100_000)
        let from = Self.day + 12 * 3600
        // Refused twice for a budget the candidate does not have, then signed (as the key's third attempt).
        let report = PolicyReplay(policy: candidate).run(
            [
                Self.refused(3_000, at: from + 10, code: "BUDGET_EXCEEDED", key: "pay-1"),
                Self.refused(3_000, at: from + 20, code: "BUDGET_EXCEEDED", key: "pay-1"),
                Self.authorized(3_000, at: from + 30, key: "pay-1"), Self.refused(2_000, at: from + 40, code: "HSM_UNAVAILABLE", key: "pay-2"),
            ], from: from, to: from + 3600)
        #expect(report.replayed.map(\.change) == [.newlyAllowed], "the first attempt is signed; the rest repeat its key")
        #expect(report.retries == 2)
        #expect(report.operational == ["HSM_UNAVAILABLE": 1])
        // Held once: 1000.00 less 30.00 remains for a 970.00 payment.
        let held = PolicyReplay(policy: candidate).run(
            [
                Self.refused(3_000, at: from + 10, code: "BUDGET_EXCEEDED", key: "pay-1"), Self.authorized(3_000, at: from + 30, key: "pay-1"),
                Self.authorized(97_000, at: from + 50, key: "pay-3"),
            ], from: from, to: from + 3600)
        #expect(held.replayed.map(\.candidateOutcome) == ["authorized", "authorized"])
    }

    @Test("the hold timeline counts what a plain sum counts, over random holds, windows and releases")
    func holdTimeline() {
        var random = SplitMix64(state: 18)
        var timeline = HoldTimeline()
        var holds: [(time: Int64, amount: Int64, releasedAt: Int64?)] = []
        var now: Int64 = 0
        for _ in 0..<2_000 {
            now += Int64(random.next() % 50)
            let amount = Int64(random.next() % 10_000) + 1
            let releasedAt: Int64? = random.next() % 3 == 0 ? now + Int64(random.next() % 500) : nil
            timeline.add(time: now, amount: amount, releasedAt: releasedAt)
            holds.append((now, amount, releasedAt))
            let windowStart = now - Int64(random.next() % 3_000)
            let expected = holds.filter { $0.time >= windowStart && ($0.releasedAt.map { $0 > now } ?? true) }.reduce(0) { $0 + $1.amount }
            let counted = timeline.counted(since: windowStart, at: now)
            #expect(counted == expected, "at \(now) since \(windowStart)")
            if counted != expected { return }
        }
    }
}
