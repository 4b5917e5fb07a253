import ArgumentParser
import CountersignServer
import Foundation
import Policy

/// `countersign policy check <file>`: validate a configuration and print its policy.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Inspect a policy before it is deployed.",
        subcommands: [Check.self]
    )

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a configuration file (file:line: reason on the first problem) and print its tier table and policy."
        )

        @Argument(help: "The configuration file.")
        var file: String

        func run() async throws {
            let configuration: ServerConfiguration
            do {
                configuration = try ServerConfiguration.load(path: self.file)
            } catch let error as ConfigurationError {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                throw ExitCode.validationFailure
            }
            print(PolicyReport(configuration.policy).text, terminator: "")
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
        var lines = ["policy \(self.policy.version)", "", "tiers (a request belongs to the lowest tier whose bound it does not exceed; above the last: refused)"]
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
                lines.append("  amount above \(factor)x the agent's mean over \(Terminal.duration(seconds: rules.historySeconds)) (after \(rules.minimumHistory) authorizations)")
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
            "  " + row.enumerated().map { index, cell in cell.padding(toLength: widths[index], withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }
    }
}
