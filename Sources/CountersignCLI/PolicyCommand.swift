import ArgumentParser
import CountersignConfiguration
import Foundation
import Policy

/// `countersign policy check <file>`: validate a configuration and print its policy.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Inspect a policy before it is deployed.",
        subcommands: [Check.self, PolicyEvaluate.self, PolicyTraces.self, PolicyReplayCommand.self]
    )

    /// The configuration at `path`, or its first problem (file:line: reason) on standard error and a validation exit.
    static func load(_ path: String) throws -> ServerConfiguration {
        do {
            return try ServerConfiguration.load(path: path)
        } catch let error as ConfigurationError {
            Terminal.note("\(error)")
            throw ExitCode.validationFailure
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a configuration file (file:line: reason on the first problem) and print its tier table and policy."
        )

        @Argument(help: "The configuration file.")
        var file: String

        @Flag(help: "Print the policy as JSON (amounts in minor units, durations in seconds).")
        var json = false

        func run() async throws {
            let configuration = try PolicyCommand.load(self.file)
            if self.json {
                try JSONOutput.print(PolicyJSON(configuration.policy))
            } else {
                print(PolicyReport(configuration.policy).text, terminator: "")
            }
        }
    }
}

/// A readable description of a policy.
struct PolicyReport {
    let policy: PolicyEngine

    init(_ policy: PolicyEngine) {
        self.policy = policy
    }

    var text: String {
        var lines = [
            "policy \(self.policy.version)", "", "tiers (a request belongs to the lowest tier whose bound it does not exceed; above the last: refused)",
        ]
        let header = ["tier", "up to", "key", "backend", "lifetime", "checks (cascaded)", "approval"]
        var rows: [[String]] = [header]
        for tier in self.policy.tiers.tiers {
            let bounds = Terminal.amounts(tier.maximumAmounts)
            let checks = (["profile", "budget"] + self.policy.tiers.checks(at: tier).sorted().map(\.rawValue)).joined(separator: ",")
            let approval = tier.approval.map { "\($0.quorum) approver(s) within \(Terminal.duration(seconds: $0.ttlSeconds))" } ?? "-"
            rows.append([tier.name, bounds, tier.keyName, tier.backend.rawValue, Terminal.duration(seconds: tier.lifetimeSeconds), checks, approval])
        }
        lines += Self.table(rows)
        if !self.policy.profiles.isEmpty {
            lines += ["", "profiles"]
            for profile in self.policy.profiles {
                var parts = ["agents: \(profile.agents.sorted().joined(separator: ", "))"]
                if let team = profile.team { parts.append("team: \(team)") }
                if let tier = profile.highestTier { parts.append("highest tier: \(tier)") }
                if !profile.maximumPerAuthorization.isEmpty {
                    parts.append("max per authorization: " + Terminal.amounts(profile.maximumPerAuthorization))
                }
                if let allowed = profile.allowedMerchants { parts.append("merchants allowed: only " + allowed.sorted().joined(separator: ", ")) }
                if !profile.blockedMerchants.isEmpty { parts.append("merchants blocked: " + profile.blockedMerchants.sorted().joined(separator: ", ")) }
                if let allowed = profile.allowedCategories { parts.append("categories allowed: only " + allowed.sorted().joined(separator: ", ")) }
                if !profile.blockedCategories.isEmpty { parts.append("categories blocked: " + profile.blockedCategories.sorted().joined(separator: ", ")) }
                if let rate = profile.rateLimit { parts.append("rate limit: \(rate.requests) per \(Terminal.duration(seconds: rate.perSeconds))") }
                lines.append("  \(profile.name): " + parts.joined(separator: "; "))
            }
        }
        if !self.policy.teams.isEmpty {
            lines += ["", "teams"] + self.policy.teams.map { "  \($0.name)" + ($0.organization.map { " (organization \($0))" } ?? "") }
        }
        if !self.policy.budgets.budgets.isEmpty {
            lines += ["", "budgets"]
            for budget in self.policy.budgets.budgets {
                lines.append("  \(budget.scope.key)\t\(budget.window)\t" + Terminal.amounts(budget.limits))
            }
        }
        let rules = self.policy.escalation
        if rules != .none {
            lines += ["", "escalation (moves a request up one tier)"]
            if let factor = rules.amountFactor {
                lines.append(
                    "  amount above \(factor)x the agent's mean over \(Terminal.duration(seconds: rules.historySeconds)) (after \(rules.minimumHistory) authorizations)"
                )
            }
            if !rules.newMerchantAbove.isEmpty {
                lines.append("  first payment to a merchant above " + Terminal.amounts(rules.newMerchantAbove))
            }
            if let burst = rules.burst { lines.append("  more than \(burst.requests) requests within \(Terminal.duration(seconds: burst.perSeconds))") }
            if let window = rules.splittingWindowSeconds {
                lines.append("  payments to one merchant within \(Terminal.duration(seconds: window)) are judged at the tier of their sum")
            }
        }
        if !self.policy.contexts.isEmpty {
            lines += ["", "contexts"]
            for context in self.policy.contexts {
                let when: String
                switch context.activation {
                case .mode: when = "mode (admins switch it)"
                case .schedule(let schedule): when = "schedule \(schedule)"
                }
                var changes: [String] = []
                if let tier = context.highestTier { changes.append("highest tier \(tier)") }
                if !context.maximumPerAuthorization.isEmpty { changes.append("max per authorization " + Terminal.amounts(context.maximumPerAuthorization)) }
                let whom = context.agents.sorted().map { "agent \($0)" } + context.profiles.sorted().map { "profile \($0)" }
                lines.append("  \(context.name): \(when); \(changes.joined(separator: ", ")) for \(whom.joined(separator: ", "))")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func table(_ rows: [[String]]) -> [String] {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            "  "
                + row.enumerated().map { index, cell in cell.padding(toLength: widths[index], withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }
    }
}

/// A policy as scripts read it: the same facts as ``PolicyReport``, in the protocol's units.
struct PolicyJSON: Encodable {
    struct TierJSON: Encodable {
        var name: String
        var maxAmount: [String: Int64]
        var key: String
        var backend: String
        var lifetimeSeconds: Int64
        var checks: [String]
        var approvalQuorum: Int?
        var approvalTTLSeconds: Int64?

        enum CodingKeys: String, CodingKey {
            case name, key, backend, checks
            case maxAmount = "max_amount"
            case lifetimeSeconds = "lifetime_seconds"
            case approvalQuorum = "approval_quorum"
            case approvalTTLSeconds = "approval_ttl_seconds"
        }
    }

    struct ProfileJSON: Encodable {
        var name: String
        var agents: [String]
        var team: String?
        var highestTier: String?
        var maxPerAuthorization: [String: Int64]
        var allowedMerchants: [String]?
        var blockedMerchants: [String]
        var allowedCategories: [String]?
        var blockedCategories: [String]

        enum CodingKeys: String, CodingKey {
            case name, agents, team
            case highestTier = "highest_tier"
            case maxPerAuthorization = "max_per_authorization"
            case allowedMerchants = "allowed_merchants"
            case blockedMerchants = "blocked_merchants"
            case allowedCategories = "allowed_categories"
            case blockedCategories = "blocked_categories"
        }
    }

    struct BudgetJSON: Encodable {
        var scope: String
        var window: String
        var limit: [String: Int64]
    }

    struct ContextJSON: Encodable {
        var name: String
        var activation: String
        var agents: [String]
        var profiles: [String]
        var highestTier: String?
        var maxPerAuthorization: [String: Int64]

        enum CodingKeys: String, CodingKey {
            case name, activation, agents, profiles
            case highestTier = "highest_tier"
            case maxPerAuthorization = "max_per_authorization"
        }
    }

    var policyVersion: String
    var tiers: [TierJSON]
    var profiles: [ProfileJSON]
    var budgets: [BudgetJSON]
    var contexts: [ContextJSON]

    enum CodingKeys: String, CodingKey {
        case tiers, profiles, budgets, contexts
        case policyVersion = "policy_version"
    }

    init(_ policy: PolicyEngine) {
        self.policyVersion = policy.version
        self.tiers = policy.tiers.tiers.map { tier in
            TierJSON(
                name: tier.name, maxAmount: tier.maximumAmounts, key: tier.keyName, backend: tier.backend.rawValue, lifetimeSeconds: tier.lifetimeSeconds,
                checks: policy.tiers.checks(at: tier).sorted().map(\.rawValue), approvalQuorum: tier.approval?.quorum,
                approvalTTLSeconds: tier.approval?.ttlSeconds
            )
        }
        self.profiles = policy.profiles.sorted { $0.name < $1.name }.map { profile in
            ProfileJSON(
                name: profile.name, agents: profile.agents.sorted(), team: profile.team, highestTier: profile.highestTier,
                maxPerAuthorization: profile.maximumPerAuthorization, allowedMerchants: profile.allowedMerchants?.sorted(),
                blockedMerchants: profile.blockedMerchants.sorted(), allowedCategories: profile.allowedCategories?.sorted(),
                blockedCategories: profile.blockedCategories.sorted()
            )
        }
        self.budgets = policy.budgets.budgets.map { BudgetJSON(scope: $0.scope.key, window: $0.window.versionKey, limit: $0.limits) }
        self.contexts = policy.contexts.map { context in
            let activation: String
            switch context.activation {
            case .mode: activation = "mode"
            case .schedule(let schedule): activation = "schedule \(schedule)"
            }
            return ContextJSON(
                name: context.name, activation: activation, agents: context.agents.sorted(), profiles: context.profiles.sorted(),
                highestTier: context.highestTier, maxPerAuthorization: context.maximumPerAuthorization
            )
        }
    }
}
