import ArgumentParser
import CountersignClient
import Foundation
import Wire

/// `countersign approvals list|show|approve|deny` (admins read; approvers decide).
struct ApprovalsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approvals",
        abstract: "See payments waiting for human approval, and approve or deny them (approver credential).",
        subcommands: [List.self, Show.self, Approve.self, Deny.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the payments waiting for approval, oldest first.")

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let approvals = try await connection.listApprovals()
                if self.json {
                    try JSONOutput.print(ApprovalsList(approvals: approvals))
                    return
                }
                if approvals.isEmpty { print("nothing waits for approval") }
                for approval in approvals {
                    print(
                        "\(approval.authorizationID)\t\(approval.approvers.count)/\(approval.approvalsRequired) approvals\tuntil \(Terminal.time(approval.approvalExpiresAt))\t\(approval.summary)"
                    )
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one request exactly as the agent sent it, with the policy's decision and the verdicts so far.")

        @Argument(help: "The authorization id.")
        var id: String

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                try JSONOutput.print(try await connection.showApproval(id: self.id))
            }
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Approve a payment; the approval that completes the quorum signs it and sends it to the waiting agent."
        )

        @Argument(help: "The authorization id.")
        var id: String

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                ApprovalsCommand.report(try await connection.approve(id: self.id))
            }
        }
    }

    struct Deny: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deny a payment: it is refused and its budget hold released.")

        @Argument(help: "The authorization id.")
        var id: String

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                ApprovalsCommand.report(try await connection.deny(id: self.id))
            }
        }
    }

    static func report(_ detail: ApprovalDetail) {
        let approval = detail.approval
        print(
            "\(approval.authorizationID): \(approval.status), approved by \(approval.approvers.isEmpty ? "nobody" : approval.approvers.joined(separator: ", ")) (\(approval.approvers.count)/\(approval.approvalsRequired))"
        )
    }
}

/// `countersign budgets show <agent>`.
struct BudgetsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "budgets",
        abstract: "Budgets and what is spent of them.",
        subcommands: [Show.self]
    )

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every budget an agent's spending counts against (its own, its team's, its organization's) in the current window."
        )

        @Argument(help: "The agent id.")
        var agent: String

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let report = try await connection.budgets(agent: self.agent)
                if self.json {
                    try JSONOutput.print(report)
                    return
                }
                print("\(report.agentID) counts against: \(report.scopes.joined(separator: ", "))")
                if report.budgets.isEmpty { print("no budget applies") }
                for line in report.budgets {
                    let money = { (minorUnits: Int64) in Terminal.money(minorUnits, line.currency) }
                    print(
                        "\(line.scope)\t\(line.window) from \(Terminal.time(line.windowStart))\tlimit \(money(line.limit))\tspent \(money(line.spent)) (pending approval \(money(line.pending)))\tremaining \(money(line.remaining))"
                    )
                }
            }
        }
    }
}

/// `countersign contexts list|set`.
struct ContextsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contexts",
        abstract: "Modes and schedules that raise or lower agents' limits (admin credential).",
        subcommands: [List.self, Set.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the contexts and whether each is in force.")

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let contexts = try await connection.contexts()
                if self.json {
                    try JSONOutput.print(ContextsList(contexts: contexts))
                    return
                }
                for context in contexts {
                    print("\(context.name)\t\(context.kind)\t\(context.inForce ? "in force" : "not in force")\t\(context.summary)")
                }
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Switch a mode on or off, e.g. `countersign contexts set incident on`.")

        @Argument(help: "The mode's name.")
        var name: String

        @Argument(help: "on or off.")
        var state: String

        @OptionGroup var client: ClientOptions

        func run() async throws {
            guard self.state == "on" || self.state == "off" else { throw ValidationError("the state is 'on' or 'off'") }
            try await self.client.withConnection { connection in
                let context = try await connection.setContext(self.name, active: self.state == "on")
                print("\(context.name): \(context.inForce ? "in force" : "not in force") (\(context.summary))")
            }
        }
    }
}
