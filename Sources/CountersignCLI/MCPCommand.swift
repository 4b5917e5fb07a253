import ArgumentParser
import CountersignClient
import Logging
import MCP
import Wire

/// `countersign mcp`: a Model Context Protocol server over stdio that gives a model payment tools with this agent's
/// credential. The model sees the tools' answers, never the credential: the key stays in this process, which signs
/// only the handshake with it.
struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "Serve payment tools to an AI agent over the Model Context Protocol (stdio), with the agent's credential.",
        discussion: """
            An MCP client (an agent framework, a desktop assistant) starts this command and speaks JSON-RPC on its standard \
            input and output. Tools: request_payment_authorization, get_authorization_status, void_authorization, get_budgets. \
            Requests retry, fail over across --server's list, and fail fast while every server is down (docs/agents.md).
            """
    )

    @OptionGroup var client: ClientOptions

    func run() async throws {
        let credential = try self.client.credentialFile()
        let cluster = try self.client.cluster()
        let tools = PaymentTools(client: cluster, agent: credential.principal)
        let server = Server(
            name: "countersign",
            version: CountersignVersion.current,
            instructions: """
                Before paying any merchant, call request_payment_authorization and pay only with the authorization token it \
                returns. Amounts are decimal strings. A payment that needs human approval is not authorized until \
                get_authorization_status says so.
                """,
            capabilities: .init(tools: .init(listChanged: false))
        )
        await server.withMethodHandler(ListTools.self) { _ in .init(tools: PaymentTools.definitions) }
        await server.withMethodHandler(CallTool.self) { parameters in await tools.call(parameters.name, parameters.arguments) }
        // Standard output is the protocol's: diagnostics go to standard error only.
        try await server.start(
            transport: StdioTransport(logger: Logger(label: "countersign.mcp", factory: { label in StreamLogHandler.standardError(label: label) })))
        await server.waitUntilCompleted()
        await cluster.close()
    }
}
