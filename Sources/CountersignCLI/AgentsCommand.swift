import ArgumentParser
import CountersignClient
import Foundation
import Wire

/// `countersign agents add|list|revoke` (admins).
struct AgentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agents",
        abstract: "Register, list and revoke principals (admin credential required).",
        subcommands: [Add.self, List.self, Revoke.self, RotateCredential.self]
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register a principal: its key pair is made here, only the public key goes to the server, the credential file is written with mode 0600."
        )

        @Argument(help: "The new principal's id.")
        var id: String

        @Option(help: "ES256 or Ed25519.")
        var algorithm: String = "ES256"

        @Option(help: "agent, admin, approver (an admin who may also approve payments), or auditor (reads the audit log, nothing else).")
        var role: String = "agent"

        @Option(name: .customLong("out"), help: "Where to write the credential file (default <id>.credential).")
        var output: String?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            guard let algorithm = CredentialAlgorithm(rawValue: self.algorithm) else { throw ValidationError("--algorithm is ES256 or Ed25519") }
            guard let role = Role(rawValue: self.role) else { throw ValidationError("--role is agent, admin, approver or auditor") }
            let path = self.output ?? "\(self.id).credential"
            try ClientOptions.requireFree(path)
            let key = CredentialPrivateKey.generate(algorithm)
            try await self.client.withConnection { connection in
                let info = try await connection.addAgent(id: self.id, publicKey: key.publicKey, role: role)
                try self.client.writeCredential(principal: info.id, key: key, to: path)
                print("added \(info.role.rawValue) '\(info.id)' (\(info.algorithm.rawValue)); credential written to \(path) (mode 0600)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List principals.")

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let agents = try await connection.listAgents()
                if self.json {
                    try JSONOutput.print(AgentsList(agents: agents))
                    return
                }
                for agent in agents {
                    let status = agent.revokedAt.map { "revoked at \(Terminal.time($0))" } ?? "active"
                    print("\(agent.id)\t\(agent.role.rawValue)\t\(agent.algorithm.rawValue)\t\(status)")
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a principal: it can never authenticate again.")

        @Argument var id: String

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let info = try await connection.revokeAgent(id: self.id)
                print("revoked '\(info.id)'")
            }
        }
    }

    struct RotateCredential: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-credential",
            abstract: "Issue a principal a new credential (key pair made here, written with mode 0600); the old one keeps working for the grace period."
        )

        @Argument(help: "The principal's id.")
        var id: String

        @Option(help: "ES256 or Ed25519.")
        var algorithm: String = "ES256"

        @Option(help: "How long the old credential keeps working, e.g. 1h or 7d (default 1d, at most 30d).")
        var grace: String = "1d"

        @Option(name: .customLong("out"), help: "Where to write the new credential file (default <id>.credential.new).")
        var output: String?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            guard let algorithm = CredentialAlgorithm(rawValue: self.algorithm) else { throw ValidationError("--algorithm is ES256 or Ed25519") }
            let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
            guard let unit = self.grace.last.flatMap({ units[$0] }), let number = Int64(self.grace.dropLast()), number >= 0 else {
                throw ValidationError("--grace is a duration such as 30m, 12h or 7d")
            }
            let path = self.output ?? "\(self.id).credential.new"
            try ClientOptions.requireFree(path)
            let key = CredentialPrivateKey.generate(algorithm)
            try await self.client.withConnection { connection in
                let info = try await connection.rotateCredential(id: self.id, publicKey: key.publicKey, graceSeconds: number * unit)
                try self.client.writeCredential(principal: info.id, key: key, to: path)
                print("new credential for '\(info.id)' written to \(path) (mode 0600); the old one works for \(self.grace) more")
            }
        }
    }
}
