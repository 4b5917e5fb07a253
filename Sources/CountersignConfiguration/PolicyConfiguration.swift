import Foundation
import Policy

/// Reads the policy parts of the configuration: tiers, profiles, teams, organizations, budgets, escalation
/// and contexts. Every error names the file, the line and the reason.
enum PolicyConfiguration {
    static func policy(tiers: TierTable, entries: [String: ConfigurationReader], root: ConfigurationReader) throws -> PolicyEngine {
        var budgets: [Budget] = []
        var profiles: [AgentProfile] = []
        var teams: [Team] = []
        if let list = entries["budgets"] {
            for entry in try list.sequence() {
                let fields = try entry.mapping(allowing: ["agent", "limit", "window"])
                guard let agent = fields["agent"] else {
                    throw entry.error("a budget here needs 'agent' (team and organization budgets go under teams and organizations)")
                }
                budgets.append(try Self.budget(entry, fields: fields, scope: .agent(try agent.string())))
            }
        }
        if let list = entries["organizations"] {
            for entry in try list.sequence() {
                let fields = try entry.mapping(allowing: ["name", "budgets"])
                guard let name = fields["name"] else { throw entry.error("an organization needs 'name'") }
                budgets += try Self.budgets(fields["budgets"], scope: .organization(try name.string()))
            }
        }
        if let list = entries["teams"] {
            for entry in try list.sequence() {
                let fields = try entry.mapping(allowing: ["name", "organization", "budgets"])
                guard let name = fields["name"] else { throw entry.error("a team needs 'name'") }
                let team = Team(name: try name.string(), organization: try fields["organization"]?.string())
                teams.append(team)
                budgets += try Self.budgets(fields["budgets"], scope: .team(team.name))
            }
        }
        if let list = entries["profiles"] {
            for entry in try list.sequence() {
                let (profile, profileBudgets) = try Self.profile(entry)
                profiles.append(profile)
                budgets += profileBudgets
            }
        }
        let escalation = try entries["escalation"].map(Self.escalation) ?? .none
        let contexts = try entries["contexts"].map { try $0.sequence().map(Self.context) } ?? []
        let behaviour = try entries["anomaly"].map { try Self.anomaly($0, firstTier: tiers.tiers[0].name) }
        // Validated part by part, so that an error points at the section it is in.
        let stages: [(ConfigurationReader?, () throws(PolicyError) -> PolicyEngine)] = [
            (entries["profiles"], { () throws(PolicyError) in try PolicyEngine(tiers: tiers, profiles: profiles, teams: teams) }),
            (
                entries["budgets"] ?? entries["teams"] ?? entries["organizations"],
                { () throws(PolicyError) in
                    try PolicyEngine(tiers: tiers, profiles: profiles, teams: teams, budgets: BudgetTable(budgets))
                }
            ),
            (
                entries["contexts"],
                { () throws(PolicyError) in
                    try PolicyEngine(tiers: tiers, profiles: profiles, teams: teams, budgets: BudgetTable(budgets), escalation: escalation, contexts: contexts)
                }
            ),
            (
                entries["anomaly"],
                { () throws(PolicyError) in
                    try PolicyEngine(
                        tiers: tiers, profiles: profiles, teams: teams, budgets: BudgetTable(budgets), escalation: escalation, contexts: contexts,
                        behaviour: behaviour)
                }
            ),
        ]
        var engine = PolicyEngine(tiers: tiers)
        for (section, build) in stages {
            do {
                engine = try build()
            } catch {
                throw (section ?? root).error(error.reason)
            }
        }
        return engine
    }

    static func tiers(_ reader: ConfigurationReader?, root: ConfigurationReader) throws -> TierTable {
        guard let reader else { throw root.error("'tiers' is required: at least one tier") }
        var tiers: [Tier] = []
        for entry in try reader.sequence() {
            let fields = try entry.mapping(allowing: ["name", "max_amount", "key", "backend", "lifetime", "checks", "approval"])
            guard let name = fields["name"], let maximum = fields["max_amount"], let key = fields["key"], let backend = fields["backend"] else {
                throw entry.error("a tier needs 'name', 'max_amount', 'key' and 'backend'")
            }
            let bounds = try Self.amounts(maximum)
            let backendName = try backend.string()
            guard let keyBackend = KeyBackend(rawValue: backendName) else {
                throw backend.error("'\(backendName)' is not a backend; use software or hsm")
            }
            let keyName = try key.string()
            guard keyName.range(of: "^[a-z][a-z0-9-]{0,31}$", options: .regularExpression) != nil else {
                throw key.error("key names are 1 to 32 characters: a-z, 0-9 and '-', starting with a letter")
            }
            let lifetime = try fields["lifetime"]?.duration(in: .seconds(10) ... .seconds(3600)) ?? .seconds(300)
            var tier = Tier(
                name: try name.string(), maximumAmounts: bounds, keyName: keyName, backend: keyBackend, lifetimeSeconds: lifetime.components.seconds)
            if let checks = fields["checks"] {
                tier.addedChecks = Set(
                    try checks.sequence().map { item in
                        let text = try item.string()
                        guard let check = PolicyCheck(rawValue: text) else {
                            throw item.error(
                                "'\(text)' is not a check; use \(PolicyCheck.allCases.map(\.rawValue).joined(separator: ", ")) (budgets are always checked)")
                        }
                        return check
                    }
                )
            }
            if let approval = fields["approval"] {
                let approvalFields = try approval.mapping(allowing: ["quorum", "ttl"])
                guard let quorum = approvalFields["quorum"] else { throw approval.error("an approval needs 'quorum', the number of distinct approvers") }
                tier.approval = ApprovalRequirement(
                    quorum: Int(try quorum.integer(in: 1...10)),
                    ttlSeconds: try approvalFields["ttl"]?.duration(in: .seconds(60) ... .seconds(7 * 86_400)).components.seconds ?? 900
                )
            }
            tiers.append(tier)
        }
        do {
            return try TierTable(tiers)
        } catch {
            throw reader.error(error.reason)
        }
    }

    private static func profile(_ entry: ConfigurationReader) throws -> (AgentProfile, [Budget]) {
        let fields = try entry.mapping(allowing: [
            "name", "agents", "team", "highest_tier", "max_per_authorization", "merchants", "categories", "rate_limit", "budgets",
        ])
        guard let name = fields["name"], let agents = fields["agents"] else {
            throw entry.error("a profile needs 'name' and 'agents'")
        }
        let agentIDs = try agents.sequence().map { try $0.string() }
        guard Set(agentIDs).count == agentIDs.count else { throw agents.error("an agent is listed twice in profile '\(try name.string())'") }
        var profile = AgentProfile(name: try name.string(), agents: Set(agentIDs))
        profile.team = try fields["team"]?.string()
        if let tier = fields["highest_tier"] { profile.highestTier = try tier.string() }
        if let maximum = fields["max_per_authorization"] { profile.maximumPerAuthorization = try Self.amounts(maximum) }
        if let merchants = fields["merchants"] {
            let lists = try merchants.mapping(allowing: ["allow", "block"])
            profile.allowedMerchants = try lists["allow"].map { Set(try $0.sequence().map { try $0.string() }) }
            profile.blockedMerchants = try lists["block"].map { Set(try $0.sequence().map { try $0.string() }) } ?? []
        }
        if let categories = fields["categories"] {
            let lists = try categories.mapping(allowing: ["allow", "block"])
            profile.allowedCategories = try lists["allow"].map(Self.categoryCodes)
            profile.blockedCategories = try lists["block"].map(Self.categoryCodes) ?? []
        }
        if let rate = fields["rate_limit"] { profile.rateLimit = try Self.rate(rate) }
        var budgets: [Budget] = []
        // In the order written, so that budgets are checked (and refusals name them) the same way every run.
        for agent in agentIDs {
            budgets += try Self.budgets(fields["budgets"], scope: .agent(agent))
        }
        return (profile, budgets)
    }

    private static func escalation(_ reader: ConfigurationReader) throws -> EscalationRules {
        let fields = try reader.mapping(allowing: ["amount_factor", "history", "min_history", "new_merchant_above", "burst", "splitting_window"])
        var rules = EscalationRules()
        rules.amountFactor = try fields["amount_factor"]?.integer(in: 2...1000)
        if let history = fields["history"] { rules.historySeconds = try history.duration(in: .seconds(3600) ... .seconds(366 * 86_400)).components.seconds }
        if let minimum = fields["min_history"] { rules.minimumHistory = Int(try minimum.integer(in: 1...10_000)) }
        if let above = fields["new_merchant_above"] { rules.newMerchantAbove = try Self.amounts(above) }
        if let burst = fields["burst"] { rules.burst = try Self.rate(burst) }
        rules.splittingWindowSeconds = try fields["splitting_window"]?.duration(in: .seconds(1) ... .seconds(7 * 86_400)).components.seconds
        return rules
    }

    /// `anomaly: { half_life: 14d, min_history: 12, actions: [{ tier: micro, score: 8, action: escalate }, …] }`.
    private static func anomaly(_ reader: ConfigurationReader, firstTier: String) throws -> BehaviourModel {
        let fields = try reader.mapping(allowing: ["half_life", "min_history", "actions"])
        var model = BehaviourModel()
        if let halfLife = fields["half_life"] {
            model.halfLifeSeconds = try halfLife.duration(in: .seconds(86_400) ... .seconds(366 * 86_400)).components.seconds
        }
        if let minimum = fields["min_history"] { model.minimumHistory = Int(try minimum.integer(in: 1...10_000)) }
        if let actions = fields["actions"] {
            model.rules = try actions.sequence().map { entry in
                let rule = try entry.mapping(allowing: ["tier", "score", "action"])
                guard let tier = rule["tier"], let score = rule["score"], let action = rule["action"] else {
                    throw entry.error("an anomaly action needs 'tier', 'score' and 'action'")
                }
                let name = try action.string()
                guard let parsed = AnomalyAction(rawValue: name) else {
                    throw action.error("'\(name)' is not an anomaly action: none, escalate, approval or refuse")
                }
                return BehaviourModel.Rule(tier: try tier.string(), score: Int(try score.integer(in: 0...100)), action: parsed)
            }
        } else {
            model.rules = BehaviourModel.defaultRules(firstTier: firstTier)
        }
        return model
    }

    private static func context(_ entry: ConfigurationReader) throws -> PolicyContext {
        let fields = try entry.mapping(allowing: ["name", "mode", "schedule", "agents", "profiles", "highest_tier", "max_per_authorization"])
        guard let name = fields["name"] else { throw entry.error("a context needs 'name'") }
        let activation: PolicyContext.Activation
        switch (fields["mode"], fields["schedule"]) {
        case (let mode?, nil):
            guard try mode.bool() else { throw mode.error("write 'mode: true' for a context that admins switch, or give a 'schedule'") }
            activation = .mode
        case (nil, let schedule?):
            activation = .schedule(try Self.schedule(schedule))
        default:
            throw entry.error("a context needs exactly one of 'mode: true' (switched by admins) and 'schedule'")
        }
        var context = PolicyContext(name: try name.string(), activation: activation)
        context.agents = Set(try fields["agents"]?.sequence().map { try $0.string() } ?? [])
        context.profiles = Set(try fields["profiles"]?.sequence().map { try $0.string() } ?? [])
        guard !context.agents.isEmpty || !context.profiles.isEmpty else { throw entry.error("a context needs 'agents' or 'profiles' to apply to") }
        context.highestTier = try fields["highest_tier"]?.string()
        if let maximum = fields["max_per_authorization"] { context.maximumPerAuthorization = try Self.amounts(maximum) }
        return context
    }

    private static func schedule(_ reader: ConfigurationReader) throws -> Schedule {
        let fields = try reader.mapping(allowing: ["days", "hours"])
        let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        var days: Set<Int> = []
        for item in try fields["days"]?.sequence() ?? [] {
            let day = try item.string()
            guard let index = names.firstIndex(of: day) else { throw item.error("'\(day)' is not a day; use mon, tue, wed, thu, fri, sat, sun") }
            days.insert(index)
        }
        var from = 0
        var to = 24 * 60
        if let hours = fields["hours"] {
            let text = try hours.string()
            let parts = text.split(separator: "-").map { $0.split(separator: ":").compactMap { Int($0) } }
            guard parts.count == 2, parts.allSatisfy({ $0.count == 2 && (0...24).contains($0[0]) && (0..<60).contains($0[1]) }) else {
                throw hours.error("hours are 'HH:MM-HH:MM' in UTC, e.g. 09:00-17:00, not '\(text)'")
            }
            from = parts[0][0] * 60 + parts[0][1]
            to = parts[1][0] * 60 + parts[1][1]
            guard from != to, from <= 24 * 60, to <= 24 * 60 else { throw hours.error("'\(text)' is an empty range") }
        }
        return Schedule(days: days, fromMinute: from, toMinute: to)
    }

    private static func budgets(_ reader: ConfigurationReader?, scope: BudgetScope) throws -> [Budget] {
        guard let reader else { return [] }
        return try reader.sequence().map { entry in
            try Self.budget(entry, fields: try entry.mapping(allowing: ["limit", "window"]), scope: scope)
        }
    }

    private static func budget(_ entry: ConfigurationReader, fields: [String: ConfigurationReader], scope: BudgetScope) throws -> Budget {
        guard let limit = fields["limit"], let window = fields["window"] else {
            throw entry.error("a budget needs 'limit' and 'window'")
        }
        let budgetWindow: BudgetWindow
        switch try window.string() {
        case "day": budgetWindow = .day
        case "week": budgetWindow = .week
        case "month": budgetWindow = .month
        default: budgetWindow = .rolling(seconds: try window.duration(in: .seconds(1) ... .seconds(366 * 86_400)).components.seconds)
        }
        return Budget(scope: scope, limits: try Self.amounts(limit), window: budgetWindow)
    }

    private static func rate(_ reader: ConfigurationReader) throws -> RateLimit {
        let fields = try reader.mapping(allowing: ["requests", "per"])
        guard let requests = fields["requests"], let per = fields["per"] else {
            throw reader.error("give 'requests' and 'per', e.g. { requests: 60, per: 1m }")
        }
        return RateLimit(
            requests: Int(try requests.integer(in: 1...1_000_000)), perSeconds: try per.duration(in: .seconds(1) ... .seconds(86_400)).components.seconds)
    }

    /// A map of ISO 4217 codes to positive minor units.
    private static func amounts(_ reader: ConfigurationReader) throws -> [String: Int64] {
        var amounts: [String: Int64] = [:]
        for (code, amount) in try reader.mapping(allowing: nil) {
            guard Currency(code: code) != nil else { throw amount.error("'\(code)' is not an ISO 4217 currency code") }
            amounts[code] = try amount.integer(in: 1...1_000_000_000_000_000)
        }
        guard !amounts.isEmpty else { throw reader.error("give at least one currency, e.g. USD: 50000 (minor units)") }
        return amounts
    }

    private static func categoryCodes(_ list: ConfigurationReader) throws -> Set<String> {
        Set(
            try list.sequence().map { item in
                let code = try item.string()
                guard code.count == 4, code.allSatisfy(\.isASCII), code.allSatisfy(\.isNumber) else {
                    throw item.error("'\(code)' is not a merchant category code (four digits)")
                }
                return code
            }
        )
    }
}
