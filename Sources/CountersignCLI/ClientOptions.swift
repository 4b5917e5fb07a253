import ArgumentParser
import CanonicalJSON
import CountersignClient
import Foundation
import NIOSSL
import Signing
import Wire

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// How a command reaches the server: flags first, then the environment.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "host:port of countersignd, or several separated by commas, tried in order (env COUNTERSIGN_SERVER; default 127.0.0.1:7600).")
    var server: String?

    @Option(name: .long, help: "Credential file (env COUNTERSIGN_CREDENTIAL).")
    var credential: String?

    @Option(name: .customLong("tls-ca"), help: "PEM file of the CA that signed the server's certificate; connects with TLS.")
    var tlsCA: String?

    private var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// The servers to try, in order: `--server a:7600,b:7600` (or `COUNTERSIGN_SERVER`, or the credential's server).
    func endpoints(credential: CredentialFile?) throws -> [ClusterClient.Endpoint] {
        let text = self.server ?? self.environment["COUNTERSIGN_SERVER"] ?? credential?.server ?? "127.0.0.1:7600"
        do {
            return try ClusterClient.Endpoint.list(text)
        } catch {
            throw ValidationError("--server must be host:port, or several separated by commas, not '\(text)'")
        }
    }

    /// The first server of the list.
    func endpoint(credential: CredentialFile?) throws -> (host: String, port: Int) {
        let first = try self.endpoints(credential: credential)[0]
        return (first.host, first.port)
    }

    private var tlsConfiguration: TLSConfiguration? {
        get throws {
            guard let ca = self.tlsCA else { return nil }
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            return configuration
        }
    }

    /// The servers as one client that moves to the next server when one is lost, asking again with the same request.
    func cluster() throws -> ClusterClient {
        let credential = try self.credentialFile()
        return try ClusterClient(
            endpoints: try self.endpoints(credential: credential), principal: credential.principal, key: try credential.key(), tls: try self.tlsConfiguration)
    }

    func credentialFile() throws -> CredentialFile {
        guard let path = self.credential ?? self.environment["COUNTERSIGN_CREDENTIAL"] else {
            throw ValidationError("no credential: give --credential <file> or set COUNTERSIGN_CREDENTIAL")
        }
        return try CredentialFile.read(path: path)
    }

    /// A connection to the first server of the list that answers.
    func connect() async throws -> CountersignClient {
        let credential = try self.credentialFile()
        let tls = try self.tlsConfiguration
        var lastError: (any Error)?
        for endpoint in try self.endpoints(credential: credential) {
            do {
                return try await CountersignClient.connect(
                    host: endpoint.host, port: endpoint.port, principal: credential.principal, key: try credential.key(), tls: tls)
            } catch let error as ClientError where error.isConnectionFailure || ClusterClient.isTransient(error) {
                lastError = error
            }
        }
        throw lastError ?? ClientError.connectionClosed
    }
}

extension ClientOptions {
    /// Refuses to overwrite an existing credential file.
    static func requireFree(_ path: String) throws {
        guard !FileManager.default.fileExists(atPath: path) else { throw ValidationError("'\(path)' exists; choose another --out") }
    }

    /// Writes a principal's credential file (mode 0600) naming this server.
    func writeCredential(principal: String, key: CredentialPrivateKey, to path: String) throws {
        let server = try self.endpoint(credential: nil)
        try CredentialFile(principal: principal, key: key, server: "\(server.host):\(server.port)").write(path: path)
    }

    /// The key set from a JWKS file or URL; without one, from the server: over the framed connection when
    /// there is a credential, otherwise from its public HTTP listener (the key set needs no credential).
    func keySet(file: String?) async throws -> JWKSet {
        if file == nil, !self.hasCredential, self.server != nil || self.environment["COUNTERSIGN_SERVER"] != nil {
            // The HTTP listener's address cannot be derived from the framed one's: say which key set to use.
            throw ValidationError("without a credential the key set is read over HTTP: give --jwks http://<host>:<http port>/.well-known/jwks.json (or a file)")
        }
        let source = file ?? (self.hasCredential ? nil : "http://127.0.0.1:7680/.well-known/jwks.json")
        guard let source else { return try await self.withConnection { try await $0.keys() } }
        let data: Data
        if source.hasPrefix("http://") || source.hasPrefix("https://") {
            guard let url = URL(string: source) else { throw ValidationError("'\(source)' is not a URL") }
            do {
                let (body, response) = try await URLSession.shared.data(from: url)
                guard (response as? HTTPURLResponse)?.statusCode == 200 else { throw ValidationError("\(source) answered \(response)") }
                data = body
            } catch let error as ValidationError {
                throw error
            } catch {
                throw ValidationError("cannot fetch the key set from \(source): \(error.localizedDescription)")
            }
        } else {
            guard let contents = FileManager.default.contents(atPath: source) else { throw ValidationError("cannot read the JWKS file '\(source)'") }
            data = contents
        }
        guard let decoded = try? StrictJSONDecoder(allowsUnknownMembers: true).decode(JWKSet.self, from: Array(data)) else {
            throw ValidationError("'\(source)' is not a JWKS")
        }
        return decoded
    }

    /// Whether a credential was given (flag or environment).
    var hasCredential: Bool {
        self.credential != nil || self.environment["COUNTERSIGN_CREDENTIAL"] != nil
    }

    /// Waits for the decision on a pending authorization. A lost connection or a retryable refusal (the server
    /// restarting, `SHUTTING_DOWN`, an HSM that is down while the approved payment is signed) does not end the
    /// wait: it asks again, on a new connection when needed, with backoff (0.5 s doubling to 10 s). Only an
    /// answer (the authorization still pending) counts as progress; after `patience` without one it gives up
    /// with the last error.
    /// - Throws: the server's refusal (`APPROVAL_DENIED`, `APPROVAL_EXPIRED`, …), or the last transient error.
    func awaitApproval(id: String, on first: CountersignClient?, patience: Duration = .seconds(300)) async throws -> Authorization {
        var connection: CountersignClient? = first
        var delay: Duration = .milliseconds(500)
        var lastProgress = ContinuousClock.now
        while true {
            do {
                let current: CountersignClient
                if let connection { current = connection } else { current = try await self.connect() }
                connection = current
                if case .authorized(let authorization) = try await current.fetchAuthorization(id: id, waitSeconds: 30) {
                    await current.close()
                    return authorization
                }
                lastProgress = .now
                delay = .milliseconds(500)
            } catch {
                await connection?.close()
                connection = nil
                guard Self.isTransient(error), ContinuousClock.now - lastProgress < patience else { throw error }
                Terminal.note("\(error); asking again in \(delay) to keep waiting for \(id)")
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }

    /// Whether asking again, perhaps on a new connection, may succeed (the client library's rule).
    static func isTransient(_ error: any Error) -> Bool { ClusterClient.isTransient(error) }

    /// Connects, runs `body`, and closes the connection (also when `body` throws).
    func withConnection<Result>(_ body: (CountersignClient) async throws -> Result) async throws -> Result {
        let connection = try await self.connect()
        do {
            let result = try await body(connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }
}

/// Prints JSON with sorted keys, one value per invocation.
enum JSONOutput {
    static func print(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        Swift.print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}
