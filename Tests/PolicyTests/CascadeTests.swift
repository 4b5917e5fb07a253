import CountersignCore
import Policy
import Testing

/// A four-tier policy with a profile in a team in an organization, escalation rules and contexts.
@Suite("Cascading tiers, escalation, contexts, intent (pure, table-driven)")
struct CascadeTests {
    static let usd = Currency(code: "USD")!
    // 2026-11-25T13:14:15Z, a Wednesday.
    static let wednesdayNoon: Int64 = 1_795_612_455

    static let tiers = try! TierTable([
        Tier(name: "micro", maximumAmounts: ["USD": 1_000], keyName: "micro", backend: .software, lifetimeSeconds: 300, addedChecks: [.rateLimit]),
        Tier(
            name: "standard", maximumAmounts: ["USD": 50_000], keyName: "standard", backend: .software, lifetimeSeconds: 300,
            addedChecks: [.merchantRules, .escalation]),
        Tier(name: "high", maximumAmounts: ["USD": 5_000_000], keyName: "high", backend: .hsm, lifetimeSeconds: 120, addedChecks: [.intent]),
        Tier(
            name: "critical", maximumAmounts: ["USD": 50_000_000], keyName: "critical", backend: .hsm, lifetimeSeconds: 60, addedChecks: [],
            approval: ApprovalRequirement(quorum: 2, ttlSeconds: 900)
        ),
    ])

    static let engine = try! PolicyEngine(
        tiers: tiers,
        profiles: [
            AgentProfile(
                name: "shopping", agents: ["shopper"], team: "procurement", maximumPerAuthorization: ["USD": 10_000_000], blockedMerchants: ["m-casino"],
                blockedCategories: ["7995"], rateLimit: RateLimit(requests: 3, perSeconds: 60)
            )
        ],
        teams: [Team(name: "procurement", organization: "acme")],
        budgets: BudgetTable([
            Budget(scope: .agent("shopper"), limits: ["USD": 100_000], window: .day),
            Budget(scope: .team("procurement"), limits: ["USD": 1_000_000], window: .day),
            Budget(scope: .organization("acme"), limits: ["USD": 10_000_000], window: .month),
        ]),
        escalation: EscalationRules(
            amountFactor: 5, historySeconds: 30 * 86_400, minimumHistory: 3, newMerchantAbove: ["USD": 10_000], burst: RateLimit(requests: 10, perSeconds: 60),
            splittingWindowSeconds: 600
        ),
        contexts: [
            PolicyContext(name: "incident", activation: .mode, profiles: ["shopping"], highestTier: "standard"),
            PolicyContext(
                name: "night", activation: .schedule(Schedule(days: [], fromMinute: 22 * 60, toMinute: 6 * 60)), agents: ["shopper"],
                maximumPerAuthorization: ["USD": 5_000]
            ),
        ]
    )

    /// A request whose intent has one line item for the whole amount, unless told otherwise.
    static func request(
        _ minorUnits: Int64, agent: String = "nobody", merchant: String = "m-shop", mcc: String = "5734",
        items: [PolicyRequest.LineItem]? = nil, withoutItems: Bool = false
    ) -> PolicyRequest {
        PolicyRequest(
            agent: agent, amount: Money(minorUnits: minorUnits, currency: usd), merchant: merchant, merchantCategoryCode: mcc,
            lineItems: withoutItems ? nil : items ?? [PolicyRequest.LineItem(quantity: 1, unitAmount: minorUnits, category: nil)]
        )
    }

    static func facts(
        now: Int64 = wednesdayNoon, modes: Set<String> = [], rate: Int = 1, burst: Int = 1, history: (Int, Int64) = (0, 0), paidBefore: Bool = true,
        recent: Int64 = 0
    ) -> PolicyFacts {
        PolicyFacts(
            now: now, activeModes: modes, requestsInRateWindow: rate, requestsInBurstWindow: burst, historyCount: history.0, historyMeanAmount: history.1,
            merchantPaidBefore: paidBefore, recentSpendAtMerchant: recent
        )
    }

    static func outcome(_ decision: Decision) -> String {
        switch decision.outcome {
        case .authorized(let tier): tier.name
        case .pendingApproval(let tier, let approval): "pending:\(tier.name):\(approval.quorum)"
        case .denied(let code, _): code.rawValue
        }
    }

    @Test("checks cascade: each tier applies its own and every lower tier's")
    func cascade() {
        let checks = Self.tiers.tiers.map { Self.tiers.checks(at: $0) }
        #expect(
            checks == [
                [.rateLimit], [.rateLimit, .merchantRules, .escalation], [.rateLimit, .merchantRules, .escalation, .intent],
                [.rateLimit, .merchantRules, .escalation, .intent],
            ])
    }

    @Test(
        "four tiers: exactly at each bound stays, one minor unit above moves up; the last tier waits for 2 approvers",
        arguments: [
            (Int64(1), "micro"), (1_000, "micro"), (1_001, "standard"), (50_000, "standard"), (50_001, "high"), (5_000_000, "high"),
            (5_000_001, "pending:critical:2"), (50_000_000, "pending:critical:2"), (50_000_001, "AMOUNT_ABOVE_LIMIT"), (.max, "AMOUNT_ABOVE_LIMIT"),
            (0, "INVALID_REQUEST"), (-1, "INVALID_REQUEST"),
        ]
    )
    func boundaries(amount: Int64, expected: String) {
        #expect(Self.outcome(Self.engine.evaluate(Self.request(amount), facts: Self.facts())) == expected)
    }

    @Test(
        "a rule applies only from the tier that adds it",
        arguments: [
            (request(900, agent: "shopper", merchant: "m-casino"), facts(), "micro"),
            (request(1_001, agent: "shopper", merchant: "m-casino"), facts(), "MERCHANT_NOT_ALLOWED"),
            (request(1_001, agent: "shopper", mcc: "7995"), facts(), "CATEGORY_NOT_ALLOWED"),
            (request(900, agent: "shopper"), facts(rate: 3), "micro"),
            (request(900, agent: "shopper"), facts(rate: 4), "RATE_LIMITED"),
            (request(900), facts(burst: 11), "micro"),
            (request(40_000, withoutItems: true), facts(), "standard"),
            (request(60_000, withoutItems: true), facts(), "INTENT_REQUIRED"),
        ] as [(PolicyRequest, PolicyFacts, String)]
    )
    func cascadingRules(request: PolicyRequest, facts: PolicyFacts, expected: String) {
        #expect(Self.outcome(Self.engine.evaluate(request, facts: facts)) == expected)
    }

    @Test(
        "intent: line items must sum to the amount and be of categories the agent may buy",
        arguments: [
            ([PolicyRequest.LineItem(quantity: 3, unitAmount: 20_000, category: "5734")], "high"),
            ([.init(quantity: 2, unitAmount: 20_000, category: nil), .init(quantity: 1, unitAmount: 20_000, category: nil)], "high"),
            ([.init(quantity: 3, unitAmount: 20_000, category: nil), .init(quantity: 1, unitAmount: 1, category: nil)], "INTENT_MISMATCH"),
            ([.init(quantity: 3, unitAmount: 19_999, category: nil)], "INTENT_MISMATCH"),
            ([.init(quantity: .max, unitAmount: 2, category: nil)], "INTENT_MISMATCH"),
            ([.init(quantity: 3, unitAmount: 20_000, category: "7995")], "CATEGORY_NOT_ALLOWED"),
            ([], "INTENT_REQUIRED"),
        ]
    )
    func intent(items: [PolicyRequest.LineItem], expected: String) {
        let decision = Self.engine.evaluate(Self.request(60_000, agent: "shopper", items: items), facts: Self.facts())
        #expect(Self.outcome(decision) == expected)
    }

    @Test(
        "anomalies move the request up one tier; splitting is judged at the tier of the sum",
        arguments: [
            // amount against the agent's own mean: 5 x 5,000 = 25,000 is the line
            (request(25_000), facts(history: (3, 5_000)), "standard", nil),
            (request(25_001), facts(history: (3, 5_000)), "high", "250.01 USD is more than 5 times the agent's mean of 50.00 USD"),
            (request(25_001), facts(history: (2, 5_000)), "standard", nil),
            // a merchant never paid before, above 100.00 USD
            (request(10_000), facts(paidBefore: false), "standard", nil),
            (request(10_001), facts(paidBefore: false), "high", "first payment to m-shop"),
            // a burst of requests
            (request(2_000), facts(burst: 10), "standard", nil),
            (request(2_000), facts(burst: 11), "high", "11 requests within 60 s"),
            // from high, one up is critical, which waits for approvers; at critical, the approvers see the anomaly
            (request(60_000), facts(burst: 11), "pending:critical:2", "escalated to tier 'critical'"),
            (request(6_000_000), facts(burst: 11), "pending:critical:2", "anomalous (11 requests within 60 s), flagged for the approvers"),
            // splitting: 450.00 earlier + 100.00 now = 550.00, tier high; 400.00 + 100.00 stays standard
            (request(10_000), facts(recent: 45_000), "high", "sum to 550.00 USD"),
            (request(10_000), facts(recent: 40_000), "standard", nil),
            (request(10_000), facts(recent: 49_990_000), "pending:critical:2", "sum to 500000.00 USD"),
            (request(10_000), facts(recent: 50_000_000), "AMOUNT_ABOVE_LIMIT", "above the highest tier"),
            // micro does not check escalation
            (request(900), facts(burst: 50, recent: 10_000_000), "micro", nil),
        ] as [(PolicyRequest, PolicyFacts, String, String?)]
    )
    func escalation(request: PolicyRequest, facts: PolicyFacts, expected: String, reason: String?) {
        let decision = Self.engine.evaluate(request, facts: facts)
        #expect(Self.outcome(decision) == expected)
        if let reason {
            #expect(decision.tierReason.contains(reason), "\(decision.tierReason)")
            #expect(decision.checks.contains { $0.result == .escalate })
        } else {
            #expect(!decision.checks.contains { $0.result == .escalate })
        }
    }

    @Test("without approvers on top, an anomaly at the highest tier is refused")
    func escalationAboveLimit() throws {
        let engine = try PolicyEngine(tiers: try TierTable(Array(Self.tiers.tiers.prefix(3))), profiles: [], escalation: Self.engine.escalation)
        let decision = engine.evaluate(Self.request(60_000), facts: Self.facts(burst: 11))
        #expect(Self.outcome(decision) == "ESCALATION_ABOVE_LIMIT")
        #expect(decision.tierReason.hasSuffix("anomaly (11 requests within 60 s) with no tier above 'high'"))
    }

    @Test(
        "contexts: an admin's mode and a schedule change the agent's limits while in force",
        arguments: [
            (request(60_000, agent: "shopper"), facts(), "high"),
            (request(60_000, agent: "shopper"), facts(modes: ["incident"]), "TIER_NOT_ALLOWED"),
            (request(60_000), facts(modes: ["incident"]), "high"),  // not one of its agents
            (request(6_000, agent: "shopper"), facts(now: wednesdayNoon - 13 * 3600 - 14 * 60 - 15 + 23 * 3600), "PER_AUTHORIZATION_LIMIT"),
            (request(6_000, agent: "shopper"), facts(now: wednesdayNoon - 13 * 3600 - 14 * 60 - 15 + 5 * 3600 + 59 * 60), "PER_AUTHORIZATION_LIMIT"),
            (request(6_000, agent: "shopper"), facts(now: wednesdayNoon - 13 * 3600 - 14 * 60 - 15 + 6 * 3600), "standard"),
        ] as [(PolicyRequest, PolicyFacts, String)]
    )
    func contexts(request: PolicyRequest, facts: PolicyFacts, expected: String) {
        let decision = Self.engine.evaluate(request, facts: facts)
        #expect(Self.outcome(decision) == expected)
    }

    @Test("a refusal names the context that lowered the limit, and when it is in force")
    func contextNamedInRefusal() {
        let night = Self.engine.evaluate(
            Self.request(6_000, agent: "shopper"), facts: Self.facts(now: Self.wednesdayNoon - 13 * 3600 - 14 * 60 - 15 + 23 * 3600))
        guard case .denied(_, let reason) = night.outcome else { Issue.record("not refused: \(night.outcome)"); return }
        #expect(reason == "60.00 USD is above shopper's limit of 50.00 USD per authorization, set by context 'night', in force every day 22:00-06:00 UTC")
        let incident = Self.engine.evaluate(Self.request(60_000, agent: "shopper"), facts: Self.facts(modes: ["incident"]))
        guard case .denied(_, let tierReason) = incident.outcome else { Issue.record("not refused: \(incident.outcome)"); return }
        #expect(tierReason == "the request needs tier 'high'; shopper may reach tier 'standard' at most, set by mode 'incident', which an admin switched on")
        let plain = Self.engine.evaluate(Self.request(10_000_001, agent: "shopper"), facts: Self.facts())
        guard case .denied(_, let plainReason) = plain.outcome else { Issue.record("not refused: \(plain.outcome)"); return }
        #expect(!plainReason.contains("set by"), "the profile's own limit names no context: \(plainReason)")
    }

    @Test(
        "schedules cover their days and hours in UTC, including ranges past midnight",
        arguments: [
            // Wednesday 2026-11-25 (weekday 2) at 13:14
            (Schedule(days: [2], fromMinute: 9 * 60, toMinute: 17 * 60), true),
            (Schedule(days: [3], fromMinute: 9 * 60, toMinute: 17 * 60), false),
            (Schedule(days: [], fromMinute: 13 * 60 + 15, toMinute: 17 * 60), false),
            (Schedule(days: [], fromMinute: 13 * 60 + 14, toMinute: 17 * 60), true),
            // 22:00-14:00 wraps past midnight: at 13:14 on Wednesday it is the range that began on Tuesday
            (Schedule(days: [2], fromMinute: 22 * 60, toMinute: 14 * 60), false),
            (Schedule(days: [1], fromMinute: 22 * 60, toMinute: 14 * 60), true),
            (Schedule(days: [5, 6], fromMinute: 0, toMinute: 24 * 60), false),
        ]
    )
    func schedules(schedule: Schedule, covered: Bool) {
        #expect(schedule.covers(Self.wednesdayNoon) == covered, "\(schedule)")
    }

    @Test("a spend counts at the agent, its team and its organization, each with its own budget")
    func scopes() {
        let decision = Self.engine.evaluate(Self.request(900, agent: "shopper"), facts: Self.facts())
        #expect(decision.scopes == [.agent("shopper"), .team("procurement"), .organization("acme")])
        #expect(decision.budgetChecks.map(\.scope) == [.agent("shopper"), .team("procurement"), .organization("acme")])
        #expect(decision.budgetChecks.map(\.limit) == [100_000, 1_000_000, 10_000_000])
        #expect(decision.budgetChecks.map(\.windowStart) == [1_795_564_800, 1_795_564_800, 1_793_491_200])
        #expect(
            decision.checks.last
                == CheckRecord(
                    name: "budget", inputs: "agent:shopper day (UTC) 1000.00 USD; team:procurement day (UTC) 10000.00 USD; org:acme month (UTC) 100000.00 USD",
                    result: .atCommit))
        let other = Self.engine.evaluate(Self.request(900), facts: Self.facts())
        #expect(other.scopes == [.agent("nobody")])
        #expect(other.budgetChecks.isEmpty)
    }

    @Test("the decision record names each check, the tier and why, and serializes canonically")
    func decisionRecord() throws {
        let decision = Self.engine.evaluate(Self.request(10_001, agent: "shopper"), facts: Self.facts(paidBefore: false))
        let record = decision.record(outcome: "authorized")
        #expect(record.tier == "high")
        #expect(
            record.tierReason == "100.01 USD is within tier 'standard' (up to 500.00 USD); escalated to tier 'high': first payment to m-shop, above 100.00 USD")
        #expect(
            record.checks.map(\.name) == [
                "tier", "new_merchant", "burst", "max_per_authorization", "rate_limit", "merchant", "merchant_category", "intent_sum", "intent_categories",
                "budget",
            ])
        let json = String(decoding: record.json, as: UTF8.self)
        #expect(json.hasPrefix(#"{"checks":[{"inputs":"100.01 USD","name":"tier","result":"pass"}"#))
        #expect(json.contains(#""policy_version":"\#(Self.engine.version)""#))
    }

    @Test("a policy that names what it does not define is refused with the reason")
    func validation() {
        #expect(throws: PolicyError("profile 'p' names team 'nope', which is not defined")) {
            try PolicyEngine(tiers: Self.tiers, profiles: [AgentProfile(name: "p", agents: ["a"], team: "nope")])
        }
        #expect(throws: PolicyError("a budget names organization 'globex', which no team belongs to")) {
            try PolicyEngine(tiers: Self.tiers, profiles: [], budgets: BudgetTable([Budget(scope: .organization("globex"), limits: ["USD": 1], window: .day)]))
        }
        #expect(throws: PolicyError("context 'c' names tier 'gold', which is not defined")) {
            try PolicyEngine(tiers: Self.tiers, profiles: [], contexts: [PolicyContext(name: "c", activation: .mode, agents: ["a"], highestTier: "gold")])
        }
        #expect(throws: PolicyError("tier 'x' needs approval, so it must be signed by an HSM key")) {
            try TierTable([
                Tier(name: "x", maximumAmounts: ["USD": 1], keyName: "x", backend: .software, lifetimeSeconds: 60, approval: .init(quorum: 1, ttlSeconds: 600))
            ])
        }
        let withoutEscalation = try! PolicyEngine(
            tiers: Self.tiers, profiles: Self.engine.profiles, teams: Self.engine.teams, budgets: Self.engine.budgets, contexts: Self.engine.contexts)
        #expect(withoutEscalation.version != Self.engine.version)
    }

    @Test("the request log counts per agent within each window, keeping only what the thresholds need")
    func requestLog() {
        var log = RequestLog(keep: 4, horizon: .seconds(60))
        #expect(log.record(agent: "a", at: .seconds(0), windows: [.seconds(60), .seconds(10)]) == [1, 1])
        #expect(log.record(agent: "a", at: .seconds(5), windows: [.seconds(60), .seconds(10)]) == [2, 2])
        #expect(log.record(agent: "b", at: .seconds(6), windows: [.seconds(60), .seconds(10)]) == [1, 1])
        #expect(log.record(agent: "a", at: .seconds(15), windows: [.seconds(60), .seconds(10)]) == [3, 1])
        for second in 16...30 {
            _ = log.record(agent: "a", at: .seconds(Int64(second)), windows: [])
        }
        #expect(log.record(agent: "a", at: .seconds(31), windows: [.seconds(60)]) == [4], "capped at keep")
        #expect(log.record(agent: "a", at: .seconds(200), windows: [.seconds(60)]) == [1], "older than the horizon is forgotten")
    }
}
