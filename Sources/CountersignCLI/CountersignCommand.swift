import ArgumentParser
import Wire

/// `countersign`: the command line for agents and security teams.
public struct CountersignCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "countersign",
        abstract: "Signed payment authorizations for AI agents: client and administration tool.",
        version: "countersign \(CountersignVersion.current) (protocol version \(WireProtocol.version))",
        subcommands: [
            AuthorizeCommand.self, FetchCommand.self, VoidCommand.self, VerifyCommand.self, KeysCommand.self, AgentsCommand.self, ApprovalsCommand.self,
            BudgetsCommand.self,
            ContextsCommand.self, PolicyCommand.self, ReportCommand.self, AuditCommand.self, BenchCommand.self, PingCommand.self, HSMCommand.self,
            ApproversCommand.self,
            MCPCommand.self,
        ]
    )

    public init() {}

}

/// `countersign hsm …`: checks of a PKCS#11 token before Countersign is deployed on it.
public struct HSMCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "hsm",
        abstract: "Inspect and test the PKCS#11 token (HSM) that holds Countersign's keys.",
        subcommands: [HSMInfoCommand.self, HSMSelftestCommand.self]
    )

    public init() {}
}
