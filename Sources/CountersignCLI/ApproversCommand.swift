import ArgumentParser
import CountersignClient
import Wire

/// `countersign approvers enroll <id>`: the approvals console's enrollment links.
struct ApproversCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approvers",
        abstract: "Invite people to the approvals console (docs/console.md).",
        subcommands: [Enroll.self]
    )

    struct Enroll: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a one-time link (valid 15 minutes) for a person to register a passkey in the approvals console.",
            discussion: """
                A principal not yet registered is created with --role (approver unless given) and can sign in only with the \
                passkeys it registers: it has no credential file. Send the link over a channel you trust: whoever opens it \
                first registers the passkey.
                """
        )

        @Argument(help: "The person's principal id.")
        var id: String

        @Option(help: "For a new principal: approver, admin or auditor.")
        var role: Role?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let link = try await connection.enrollApprover(self.id, role: self.role)
                print(link.url)
                Terminal.note("for '\(link.principal)' (\(link.role.rawValue)), once, until \(Terminal.time(link.expiresAt))")
            }
        }
    }
}

extension Role: ExpressibleByArgument {}
