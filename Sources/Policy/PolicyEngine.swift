import CanonicalJSON
import CountersignCore
import Crypto
import Foundation

/// The whole policy: tiers, agent profiles, teams, budgets, escalation rules and contexts. Pure: no I/O and
/// no clock; what it needs beyond the request comes in ``PolicyFacts``.
public struct PolicyEngine: Sendable, Hashable {
    public let tiers: TierTable
    public let profiles: [AgentProfile]
    public let teams: [Team]
    public let budgets: BudgetTable
    public let escalation: EscalationRules
    public let contexts: [PolicyContext]
    /// The adaptive anomaly model's settings, when configured (`anomaly:`); its per-agent state comes in the facts.
    public let behaviour: BehaviourModel?
    /// `sha256:` and 16 hex digits over the whole policy; carried in every authorization.
    public let version: String

    /// A policy of tiers alone: every agent may use every tier.
    public init(tiers: TierTable) {
        self.init(validated: tiers, profiles: [], teams: [], budgets: BudgetTable([]), escalation: .none, contexts: [], behaviour: nil)
    }

    /// - Throws: ``PolicyError`` when a part names something undefined, or an agent is in two profiles.
    public init(
        tiers: TierTable, profiles: [AgentProfile], teams: [Team] = [], budgets: BudgetTable = BudgetTable([]),
        escalation: EscalationRules = .none, contexts: [PolicyContext] = [], behaviour: BehaviourModel? = nil
    ) throws(PolicyError) {
        let tierNames = Set(tiers.tiers.map(\.name))
        let teamNames = Set(teams.map(\.name))
        let organizations = Set(teams.compactMap(\.organization))
        guard teamNames.count == teams.count else { throw PolicyError("a team is defined twice") }
        var seen: [String: String] = [:]
        for profile in profiles {
            if let tier = profile.highestTier, !tierNames.contains(tier) {
                throw PolicyError("profile '\(profile.name)' names tier '\(tier)', which is not defined")
            }
            if let team = profile.team, !teamNames.contains(team) {
                throw PolicyError("profile '\(profile.name)' names team '\(team)', which is not defined")
            }
            for agent in profile.agents {
                if let other = seen.updateValue(profile.name, forKey: agent) {
                    throw PolicyError("agent '\(agent)' is in profiles '\(other)' and '\(profile.name)'; an agent has one profile")
                }
            }
        }
        for budget in budgets.budgets {
            switch budget.scope {
            case .agent: break
            case .team(let name) where !teamNames.contains(name):
                throw PolicyError("a budget names team '\(name)', which is not defined")
            case .organization(let name) where !organizations.contains(name):
                throw PolicyError("a budget names organization '\(name)', which no team belongs to")
            default: break
            }
        }
        var contextNames: Set<String> = []
        for context in contexts {
            guard contextNames.insert(context.name).inserted else { throw PolicyError("context '\(context.name)' is defined twice") }
            if let tier = context.highestTier, !tierNames.contains(tier) {
                throw PolicyError("context '\(context.name)' names tier '\(tier)', which is not defined")
            }
            for profile in context.profiles where !profiles.contains(where: { $0.name == profile }) {
                throw PolicyError("context '\(context.name)' names profile '\(profile)', which is not defined")
            }
        }
        for rule in behaviour?.rules ?? [] where !tierNames.contains(rule.tier) {
            throw PolicyError("an anomaly rule names tier '\(rule.tier)', which is not defined")
        }
        self.init(validated: tiers, profiles: profiles, teams: teams, budgets: budgets, escalation: escalation, contexts: contexts, behaviour: behaviour)
    }

    private init(
        validated tiers: TierTable, profiles: [AgentProfile], teams: [Team], budgets: BudgetTable, escalation: EscalationRules, contexts: [PolicyContext],
        behaviour: BehaviourModel?
    ) {
        self.tiers = tiers
        self.profiles = profiles
        self.teams = teams
        self.budgets = budgets
        self.escalation = escalation
        self.contexts = contexts
        self.behaviour = behaviour
        self.version = Self.version(
            of: VersionedParts(
                tiers: tiers, profiles: Set(profiles), teams: Set(teams), budgets: Set(budgets.budgets), escalation: escalation, contexts: contexts,
                behaviour: behaviour))
    }

    /// What the version names: the whole policy value, every stored part (a test holds this list to the engine's
    /// properties). Where order has no meaning (profiles, teams, budgets) the parts are a set, so the version names
    /// the policy, not the order it was written or loaded in; tiers and contexts keep their order, which decides.
    struct VersionedParts: Encodable {
        let tiers: TierTable
        let profiles: Set<AgentProfile>
        let teams: Set<Team>
        let budgets: Set<Budget>
        let escalation: EscalationRules
        let contexts: [PolicyContext]
        var behaviour: BehaviourModel?
    }

    /// `sha256:` and the first 16 hex digits of SHA-256 over the parts' canonical encoding.
    static func version(of parts: VersionedParts) -> String {
        // The policy's types are synthesized Encodables and the canonical encoder's containers never throw.
        let bytes = try! CanonicalEncoder.encode(parts)
        return "sha256:" + HexDigits.string(SHA256.hash(data: bytes)).prefix(16)
    }

    public func profile(of agent: String) -> AgentProfile? {
        self.profiles.first { $0.agents.contains(agent) }
    }

    /// Where an agent's spending counts: itself, its team and the team's organization.
    public func scopes(of agent: String) -> [BudgetScope] {
        var scopes: [BudgetScope] = [.agent(agent)]
        if let teamName = self.profile(of: agent)?.team {
            scopes.append(.team(teamName))
            if let organization = self.teams.first(where: { $0.name == teamName })?.organization {
                scopes.append(.organization(organization))
            }
        }
        return scopes
    }

    /// Whether evaluating `request` will look at the agent's history (so the caller can skip fetching it).
    public func needsHistory(_ request: PolicyRequest) -> Bool {
        let rules = self.escalation
        guard rules.amountFactor != nil || rules.newMerchantAbove[request.amount.currency.code] != nil || rules.splittingWindowSeconds != nil,
            case .success(let tier) = self.tiers.tier(for: request.amount)
        else { return false }
        return self.tiers.checks(at: tier).contains(.escalation)
    }

    /// The windows the caller's request log must count: the agent's rate-limit window and the burst window.
    public func requestWindows(of agent: String) -> (rate: Duration?, burst: Duration?) {
        (self.profile(of: agent)?.rateLimit.map { .seconds($0.perSeconds) }, self.escalation.burst.map { .seconds($0.perSeconds) })
    }

    /// Decides a request: the tier by amount (raised by escalation), then each check of that tier and the
    /// tiers below it, each recorded; then the budgets the store must check atomically.
    public func evaluate(_ request: PolicyRequest, facts: PolicyFacts) -> Decision {
        var evaluation = Evaluation(policy: self, request: request, facts: facts)
        return evaluation.run()
    }
}
