import Policy
import TestSupport
import Testing

/// The policy version names the policy, not the order its parts were written or loaded in.
@Suite("The policy version")
struct PolicyVersionTests {

    static let agents = (1...9).map { "agent-\($0)" }

    /// The same policy with its unordered parts in the order `generator` picks.
    static func engine(shuffling generator: inout SplitMix64) throws -> PolicyEngine {
        let profiles = [
            AgentProfile(
                name: "shopping", agents: Set(Self.agents.prefix(5).shuffled(using: &generator)), team: "procurement",
                maximumPerAuthorization: ["USD": 10_000, "EUR": 9_000], allowedMerchants: ["m-1", "m-2", "m-3"], blockedCategories: ["7995", "5933"]
            ),
            AgentProfile(name: "travel", agents: Set(Self.agents.suffix(4).shuffled(using: &generator)), team: "travel"),
        ]
        // One budget per agent of each profile (as the configuration makes them), and team budgets.
        let budgets =
            Self.agents.map { Budget(agent: $0, limits: ["USD": 50_000, "EUR": 40_000], window: .day) } + [
                Budget(scope: .team("procurement"), limits: ["USD": 1_000_000], window: .month),
                Budget(scope: .team("travel"), limits: ["USD": 500_000], window: .week),
                Budget(scope: .organization("acme"), limits: ["USD": 9_000_000], window: .rolling(seconds: 86_400)),
            ]
        return try PolicyEngine(
            tiers: try TierTable([
                Tier(name: "standard", maximumAmounts: ["USD": 50_000, "EUR": 40_000], keyName: "standard", backend: .software, lifetimeSeconds: 300),
                Tier(name: "high", maximumAmounts: ["USD": 5_000_000], keyName: "high", backend: .hsm, lifetimeSeconds: 120),
            ]),
            profiles: profiles.shuffled(using: &generator),
            teams: [Team(name: "procurement", organization: "acme"), Team(name: "travel", organization: "acme")].shuffled(using: &generator),
            budgets: BudgetTable(budgets.shuffled(using: &generator)),
            escalation: EscalationRules(amountFactor: 5, historySeconds: 86_400, minimumHistory: 3, newMerchantAbove: ["USD": 10_000, "EUR": 9_000]),
            contexts: [
                PolicyContext(
                    name: "nights", activation: .mode, agents: Set(Self.agents.shuffled(using: &generator)), profiles: ["travel", "shopping"],
                    highestTier: "standard")
            ]
        )
    }

    @Test("200 orderings of profiles, teams, budgets and every set give one version")
    func orderDoesNotMatter() throws {
        var generator = SplitMix64(state: 3)
        let versions = Set(try (0..<200).map { _ in try Self.engine(shuffling: &generator).version })
        #expect(versions.count == 1, "\(versions)")
    }

    @Test("a change to any part changes the version")
    func changesShow() throws {
        var generator = SplitMix64(state: 3)
        let base = try Self.engine(shuffling: &generator)
        let other = try PolicyEngine(
            tiers: base.tiers, profiles: base.profiles, teams: base.teams, budgets: BudgetTable(base.budgets.budgets.dropLast()), escalation: base.escalation,
            contexts: base.contexts)
        #expect(other.version != base.version)
        var profiles = base.profiles
        profiles[0].blockedMerchants.insert("m-9")
        let blocked = try PolicyEngine(
            tiers: base.tiers, profiles: profiles, teams: base.teams, budgets: base.budgets, escalation: base.escalation, contexts: base.contexts)
        #expect(blocked.version != base.version)
    }

    /// A pinned value: a change to what the version hashes (its fields, their order, their spelling) shows here
    /// and is then made on purpose, since every token issued after it carries another version.
    @Test("the version of a fixed policy is pinned")
    func pinned() {
        #expect(CascadeTests.engine.version == "sha256:26924de03afe115e")
    }
}
