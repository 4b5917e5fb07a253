import ArgumentParser
import Audit
import CountersignConfiguration
import CountersignCore
import Crypto
import Foundation
import HTTPServices
import Logging
import NIOPosix
import ServiceLifecycle
import UnixSignals

extension AuditCommand {
    /// `countersign audit witness`: a C2SP witness for the audit log, to run on a machine the server cannot write to.
    struct Witness: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a C2SP witness for the audit log: cosign each checkpoint that extends the last one, refuse a fork.",
            discussion: """
                Point the server's audit.witness at it (url, and the verifier key this prints). It trusts the audit key(s) of \
                the key set (--jwks, or the server's) for --origin; restart it after the audit key rotates. Its state file \
                holds the last checkpoint it cosigned: keep it, and never start a witness afresh for a log it followed.
                """
        )

        @Option(help: "host:port to listen on.")
        var listen = "127.0.0.1:7690"

        @Option(help: "The witness's name, a schema-less URL (e.g. witness.example.com/countersign).")
        var name: String

        @Option(name: .customLong("key-file"), help: "Its Ed25519 private key; made (mode 0600) if the file does not exist.")
        var keyFile: String

        @Option(help: "Its state: the last checkpoint it cosigned, per log.")
        var state: String

        @Option(help: "The log's origin line (the server's audit.origin, by default <issuer>/audit).")
        var origin: String

        @Option(name: .customLong("jwks"), help: "A JWKS file or https URL with the audit key (default: ask the server).")
        var jwksFile: String?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            guard !self.name.isEmpty, !self.name.contains(where: { $0 == "+" || $0.isWhitespace }) else {
                throw ValidationError("--name is a schema-less URL without spaces or '+' (they would break the signature line and the verifier key)")
            }
            let keys = try await AuditProofCheck.auditKeys(self.client, jwks: self.jwksFile)
            let privateKey = try Self.privateKey(at: self.keyFile)
            let parts = self.listen.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]), (0...65535).contains(port) else {
                throw ValidationError("--listen is host:port, not '\(self.listen)'")
            }
            var logger = Logger(label: "countersign.witness")
            logger.logLevel = .info
            let service = try WitnessService(
                name: self.name, privateKey: privateKey, policy: WitnessPolicy(logs: [self.origin: keys]), statePath: self.state,
                endpoint: .init(host: String(parts[0]), port: port), group: MultiThreadedEventLoopGroup.singleton, logger: logger
            )
            // Written at once (not buffered): whoever started the witness reads the key to configure the server.
            FileHandle.standardOutput.write(Data("verifier key: \(service.cosigner.verifierKey)\n".utf8))
            let group = ServiceGroup(configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }

        /// Reads the key (one base64 line), or makes one and writes it with mode 0600.
        static func privateKey(at path: String) throws -> Curve25519.Signing.PrivateKey {
            if let data = FileManager.default.contents(atPath: path) {
                let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard let raw = Data(base64Encoded: text), let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
                    throw ValidationError("'\(path)' is not a witness key (one base64 line of 32 bytes)")
                }
                return key
            }
            let key = Curve25519.Signing.PrivateKey()
            try PrivateFile.create(path, with: Data((key.rawRepresentation.base64EncodedString() + "\n").utf8))
            Terminal.note("made a new witness key in \(path)")
            return key
        }
    }
}
