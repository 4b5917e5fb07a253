import CanonicalJSON
import Foundation
import TestSupport
import Testing

@testable import Policy

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

    /// The names of a value's encoded members.
    static func encodedMembers(_ value: some Encodable) throws -> Set<String> {
        let object = try JSONSerialization.jsonObject(with: Data(try CanonicalEncoder.encode(value))) as? [String: Any]
        return Set(try #require(object).keys)
    }

    static func storedProperties(_ value: Any) -> Set<String> {
        Set(Mirror(reflecting: value).children.compactMap(\.label))
    }

    @Test("every stored property of every part of the policy is in the encoding the version hashes")
    func everyPropertyCounts() throws {
        // Every optional set, so that each property has something to encode.
        let schedule = Schedule(days: [1, 2], fromMinute: 60, toMinute: 120)
        let samples: [any Encodable] = [
            Tier(
                name: "high", maximumAmounts: ["USD": 1], keyName: "high", backend: .hsm, lifetimeSeconds: 60, addedChecks: [.intent],
                approval: ApprovalRequirement(quorum: 2, ttlSeconds: 600)),
            ApprovalRequirement(quorum: 2, ttlSeconds: 600),
            AgentProfile(
                name: "p", agents: ["a"], team: "t", highestTier: "high", maximumPerAuthorization: ["USD": 1], allowedMerchants: ["m"],
                blockedMerchants: ["n"], allowedCategories: ["5411"], blockedCategories: ["7995"], rateLimit: RateLimit(requests: 1, perSeconds: 1)),
            RateLimit(requests: 1, perSeconds: 1),
            Team(name: "t", organization: "o"),
            Budget(scope: .team("t"), limits: ["USD": 1], window: .day),
            EscalationRules(
                amountFactor: 5, historySeconds: 60, minimumHistory: 3, newMerchantAbove: ["USD": 1], burst: RateLimit(requests: 1, perSeconds: 1),
                splittingWindowSeconds: 60),
            PolicyContext(
                name: "c", activation: .schedule(schedule), agents: ["a"], profiles: ["p"], highestTier: "high", maximumPerAuthorization: ["USD": 1]),
            schedule,
            BehaviourModel(rules: [.init(tier: "micro", score: 8, action: .escalate)]),
            BehaviourModel.Rule(tier: "micro", score: 8, action: .escalate),
        ]
        for sample in samples {
            #expect(try Self.encodedMembers(sample) == Self.storedProperties(sample), "\(type(of: sample))")
        }
        // The engine's parts are all its stored properties but the version itself.
        let engine = CascadeTests.engine
        let parts = PolicyEngine.VersionedParts(
            tiers: engine.tiers, profiles: Set(engine.profiles), teams: Set(engine.teams), budgets: Set(engine.budgets.budgets),
            escalation: engine.escalation, contexts: engine.contexts, behaviour: engine.behaviour)
        #expect(Self.storedProperties(engine).subtracting(["version"]) == Self.storedProperties(parts))
        #expect(PolicyEngine.version(of: parts) == engine.version)
        // With every optional part present, every part is encoded (an absent one, like the anomaly model here, is
        // left out, so adding the model did not change the version of a policy without it).
        var full = parts
        full.behaviour = BehaviourModel(rules: BehaviourModel.defaultRules(firstTier: "micro"))
        #expect(try Self.encodedMembers(full) == Self.storedProperties(full))
        #expect(try Self.encodedMembers(parts) == Self.storedProperties(parts).subtracting(["behaviour"]))
    }

    @Test("a change deep inside any part changes the version")
    func deepChanges() throws {
        let base = CascadeTests.engine
        func version(
            tiers: TierTable? = nil, profiles: [AgentProfile]? = nil, teams: [Team]? = nil, escalation: EscalationRules? = nil,
            contexts: [PolicyContext]? = nil
        ) throws -> String {
            try PolicyEngine(
                tiers: tiers ?? base.tiers, profiles: profiles ?? base.profiles, teams: teams ?? base.teams, budgets: base.budgets,
                escalation: escalation ?? base.escalation, contexts: contexts ?? base.contexts
            ).version
        }
        var seen: Set<String> = [base.version]
        var tiers = base.tiers.tiers
        tiers[0].lifetimeSeconds += 1
        #expect(seen.insert(try version(tiers: TierTable(tiers))).inserted, "a tier's lifetime")
        tiers = base.tiers.tiers
        tiers.swapAt(0, 1)
        #expect(throws: (any Error).self, "tiers must ascend, so their order is not free") { try version(tiers: TierTable(tiers)) }
        var profiles = base.profiles
        profiles[0].rateLimit = RateLimit(requests: 1_000, perSeconds: 1)
        #expect(seen.insert(try version(profiles: profiles)).inserted, "a profile's rate limit")
        var teams = base.teams
        teams.append(Team(name: "spare", organization: "acme"))
        #expect(seen.insert(try version(teams: teams)).inserted, "another team")
        var escalation = base.escalation
        escalation.splittingWindowSeconds = (escalation.splittingWindowSeconds ?? 0) + 1
        #expect(seen.insert(try version(escalation: escalation)).inserted, "the splitting window")
        var contexts = base.contexts
        contexts[0].maximumPerAuthorization["EUR"] = 1
        #expect(seen.insert(try version(contexts: contexts)).inserted, "a context's limit")
    }

    @Test("sets and dictionaries encode in one order whatever the process's hash seed")
    func canonicalOrder() throws {
        func text(_ value: some Encodable) throws -> String { String(decoding: try CanonicalEncoder.encode(value), as: UTF8.self) }
        #expect(try text(Set(["b", "a", "c"])) == #"["a","b","c"]"#)
        #expect(try text(["b": 2, "a": 1]) == #"[["a",1],["b",2]]"#)
        #expect(try text(Team(name: "t", organization: nil)) == #"{"name":"t"}"#)
        #expect(try text(BudgetScope.team("x")) == #"{"team":{"_0":"x"}}"#)
    }

    /// A pinned value: a change to what the version hashes (its fields, their order, their spelling) shows here
    /// and is then made on purpose, since every token issued after it carries another version.
    @Test("the version of a fixed policy is pinned")
    func pinned() {
        #expect(CascadeTests.engine.version == "sha256:5024e6992b23f83c")
    }
}
