import CountersignClient
import Foundation
import NIOSSL
import TestSupport
import Testing
import Wire

@Suite("TLS on the framed listener", .timeLimit(.minutes(1)))
struct TLSTests {
    /// A self-signed certificate for localhost / 127.0.0.1, made with the openssl command.
    static func certificate(in directory: URL) async throws -> (certificate: String, key: String) {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let certificate = directory.appendingPathComponent("server.pem").path
        let key = directory.appendingPathComponent("server.key").path
        let result = try await ProcessResult.run(
            executable: URL(fileURLWithPath: "/usr/bin/openssl"),
            arguments: [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", certificate,
            ],
            environment: ProcessInfo.processInfo.environment
        )
        guard result.status == 0 else { throw FixtureError(reason: "openssl failed: \(result.standardError)") }
        return (certificate, key)
    }

    @Test("a client that trusts the server's certificate authorizes over TLS; a plaintext client gets nothing")
    func tls() async throws {
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("tls-\(UUID().uuidString.prefix(6))")
        let files = try await Self.certificate(in: directory)
        try await withServer(.init(tls: files)) { server in
            let credential = try await server.addPrincipalOverTLS("agent-tls", certificate: files.certificate)
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(files.certificate))
            let client = try await CountersignClient.connect(
                host: "127.0.0.1", port: server.port, principal: credential.principal, key: try credential.key(), tls: configuration,
                serverHostname: "localhost"
            )
            #expect(try await client.authorize(TestServer.request(300_000)).tier == "high")
            await client.close()

            await #expect(throws: (any Error).self) { try await server.connect(credential) }

            var untrusting = TLSConfiguration.makeClientConfiguration()
            untrusting.trustRoots = .certificates([])
            await #expect(throws: (any Error).self) {
                try await CountersignClient.connect(
                    host: "127.0.0.1", port: server.port, principal: credential.principal, key: try credential.key(), tls: untrusting,
                    serverHostname: "localhost")
            }
        }
    }
}

extension TestServer {
    func addPrincipalOverTLS(_ id: String, certificate: String) async throws -> CredentialFile {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificate))
        let admin = try await CountersignClient.connect(
            host: "127.0.0.1", port: self.port, principal: self.admin.principal, key: try self.admin.key(), tls: configuration, serverHostname: "localhost"
        )
        let key = CredentialPrivateKey.generate(.es256)
        _ = try await admin.addAgent(id: id, publicKey: key.publicKey)
        await admin.close()
        return CredentialFile(principal: id, key: key, server: nil)
    }
}
