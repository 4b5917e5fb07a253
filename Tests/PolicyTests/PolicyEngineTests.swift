import CountersignCore
import Policy
import Testing

@Suite("The policy engine (pure, table-driven)")
struct PolicyEngineTests {
    static let usd = Currency(code: "USD")!
    static let jpy = Currency(code: "JPY")!

    static let tiers = try! TierTable([
        Tier(name: "micro", maximumAmounts: ["USD": 1_000, "JPY": 1_500], keyName: "micro", backend: .software, lifetimeSeconds: 300),
        Tier(name: "standard", maximumAmounts: ["USD": 50_000], keyName: "standard", backend: .software, lifetimeSeconds: 300),
        Tier(name: "high", maximumAmounts: ["USD": 5_000_000], keyName: "high", backend: .hsm, lifetimeSeconds: 120),
    ])

    static let engine = try! PolicyEngine(
        tiers: tiers,
        profiles: [
            AgentProfile(
                name: "shopping", agents: ["shopper"], highestTier: "standard", maximumPerAuthorization: ["USD": 20_000],
                allowedMerchants: nil, blockedMerchants: ["m-casino"], allowedCategories: nil, blockedCategories: ["7995"]
            ),
            AgentProfile(name: "travel", agents: ["traveller"], allowedMerchants: ["m-airline", "m-hotel"], allowedCategories: ["3000", "7011"]),
        ]
    )

    static let facts = PolicyFacts(now: 1_700_000_000)

    static func request(_ agent: String, _ minorUnits: Int64, _ currency: Currency = usd, merchant: String = "m-shop", mcc: String = "5734") -> PolicyRequest {
        PolicyRequest(agent: agent, amount: Money(minorUnits: minorUnits, currency: currency), merchant: merchant, merchantCategoryCode: mcc)
    }

    static func outcome(_ decision: Decision) -> String {
        switch decision.outcome {
        case .authorized(let tier): tier.name
        case .pendingApproval(let tier, _): "pending:" + tier.name
        case .denied(let code, _): code.rawValue
        }
    }

    @Test(
        "tier boundaries: exactly at the bound stays, one minor unit above moves up",
        arguments: [
            (Int64(1), "micro"), (1_000, "micro"), (1_001, "standard"), (50_000, "standard"), (50_001, "high"),
            (5_000_000, "high"), (5_000_001, "AMOUNT_ABOVE_LIMIT"),
        ]
    )
    func boundaries(amount: Int64, expected: String) {
        #expect(Self.outcome(Self.engine.evaluate(Self.facts, Self.request("nobody-special", amount))) == expected)
    }

    @Test("a currency only the lowest tier accepts stops there; one no tier accepts is refused")
    func currencies() {
        #expect(Self.outcome(Self.engine.evaluate(Self.facts, Self.request("a", 1_500, Self.jpy))) == "micro")
        #expect(Self.outcome(Self.engine.evaluate(Self.facts, Self.request("a", 1_501, Self.jpy))) == "AMOUNT_ABOVE_LIMIT")
        #expect(Self.outcome(Self.engine.evaluate(Self.facts, Self.request("a", 100, Currency(code: "EUR")!))) == "CURRENCY_NOT_ACCEPTED")
    }

    @Test(
        "each profile rule refuses with its code",
        arguments: [
            (request("shopper", 20_000), "standard"),
            (request("shopper", 20_001), "PER_AUTHORIZATION_LIMIT"),
            (request("shopper", 900, merchant: "m-casino"), "MERCHANT_NOT_ALLOWED"),
            (request("shopper", 900, mcc: "7995"), "CATEGORY_NOT_ALLOWED"),
            (request("traveller", 60_000, merchant: "m-airline", mcc: "3000"), "high"),
            (request("traveller", 600, merchant: "m-shop", mcc: "3000"), "MERCHANT_NOT_ALLOWED"),
            (request("traveller", 600, merchant: "m-hotel", mcc: "5734"), "CATEGORY_NOT_ALLOWED"),
        ]
    )
    func profileRules(request: PolicyRequest, expected: String) {
        #expect(Self.outcome(Self.engine.evaluate(Self.facts, request)) == expected)
    }

    @Test("the highest tier caps an agent below the amount's tier")
    func highestTier() {
        let engine = try! PolicyEngine(tiers: Self.tiers, profiles: [AgentProfile(name: "small", agents: ["tiny"], highestTier: "micro")])
        #expect(Self.outcome(engine.evaluate(Self.facts, Self.request("tiny", 1_000))) == "micro")
        let decision = engine.evaluate(Self.facts, Self.request("tiny", 1_001))
        #expect(Self.outcome(decision) == "TIER_NOT_ALLOWED")
        if case .denied(_, let reason) = decision.outcome {
            #expect(reason == "the request needs tier 'standard'; tiny may reach tier 'micro' at most")
        }
    }

    @Test("the decision records every check it evaluated, and the policy version")
    func decisionRecord() {
        let decision = Self.engine.evaluate(Self.facts, Self.request("shopper", 900, mcc: "7995"))
        #expect(decision.checks.map(\.name) == ["tier", "max_per_authorization", "highest_tier", "merchant", "merchant_category"])
        #expect(decision.checks.map(\.result) == [.pass, .pass, .pass, .pass, .fail])
        #expect(decision.tierReason == "9.00 USD is within tier 'micro' (up to 10.00 USD)")
        #expect(decision.policyVersion == Self.engine.version)
        #expect(Self.engine.version.hasPrefix("sha256:") && Self.engine.version.count == 23)
    }

    @Test("any change to the policy changes its version; an unknown tier or an agent in two profiles is refused")
    func versionAndValidation() throws {
        let changed = try PolicyEngine(
            tiers: Self.tiers, profiles: [AgentProfile(name: "shopping", agents: ["shopper"], blockedMerchants: ["m-casino", "m-other"])])
        let original = try PolicyEngine(tiers: Self.tiers, profiles: [AgentProfile(name: "shopping", agents: ["shopper"], blockedMerchants: ["m-casino"])])
        #expect(changed.version != original.version)
        #expect(PolicyEngine(tiers: Self.tiers).version != original.version)
        #expect(throws: PolicyError.self) { try PolicyEngine(tiers: Self.tiers, profiles: [AgentProfile(name: "x", agents: ["a"], highestTier: "platinum")]) }
        #expect(throws: PolicyError.self) {
            try PolicyEngine(tiers: Self.tiers, profiles: [AgentProfile(name: "x", agents: ["a"]), AgentProfile(name: "y", agents: ["a"])])
        }
    }

    @Test("amounts parse from decimals with the currency's digits, never more")
    func money() {
        #expect(Money(decimal: "12.50", currency: Self.usd)?.minorUnits == 1_250)
        #expect(Money(decimal: "12", currency: Self.usd)?.minorUnits == 1_200)
        #expect(Money(decimal: "12.505", currency: Self.usd) == nil)
        #expect(Money(decimal: "-1", currency: Self.usd) == nil)
        #expect(Money(decimal: "1e3", currency: Self.usd) == nil)
        #expect(Money(decimal: "99999999999999999999", currency: Self.usd) == nil, "overflow is refused")
        #expect(Money(decimal: "15", currency: Self.jpy)?.minorUnits == 15)
        #expect(Money(decimal: "1.5", currency: Self.jpy) == nil)
        #expect(Money(minorUnits: 1_205, currency: Self.usd).description == "12.05 USD")
    }
}

extension PolicyEngine {
    /// `evaluate` with the facts first, so that table rows read naturally.
    func evaluate(_ facts: PolicyFacts, _ request: PolicyRequest) -> Decision {
        self.evaluate(request, facts: facts)
    }
}
