import CountersignClient
import CountersignConfiguration
import CountersignServer
import Foundation
import Logging
import NIOCore
import NIOPosix
import PKCS11
import Policy
import ServiceLifecycle
import Signing
import TestSupport
import Testing
import Wire

/// A real `countersignd` in the test process: its own data directory, the fixture's SoftHSM token, both
/// listeners on free loopback ports.
final class TestServer: Sendable {
    let application: CountersignApplication
    let serviceGroup: ServiceGroup
    let running: Task<Void, any Error>
    let dataDirectory: URL
    let admin: CredentialFile
    let port: Int
    let httpPort: Int
    /// The server's own event loop: its listeners and connections are not queued behind every other suite's, which
    /// share NIO's two singleton loops with the clients (one CI run had 11 handshakes wait more than 5 s for them at
    /// once). Timers stay on the singleton, so none outlives this group.
    let eventLoops: MultiThreadedEventLoopGroup

    struct Options {
        /// Generous: in a full parallel run the two cores are shared by every suite; the tests of the handshake
        /// timeout set theirs, on an injected clock.
        var handshakeTimeout = "30s"
        var idleTimeout = "300s"
        var maxInFlight = 64
        var maxConnections = 1024
        /// Generous: on two cores shared by every suite (and SoftHSM signing on them), a burst of HSM-tier requests
        /// can wait seconds for one of the four sessions; the tests of the timeout set theirs.
        var hsmTimeout = "10s"
        var breakerCooldown = "5s"
        var breakerFailures = 3
        var faultyHSM = false
        var clock: ManualClock?
        var tls: (certificate: String, key: String)?
        /// The HTTP listener's port; 0 picks a free one.
        var httpPort = 0
        /// Reuse a data directory (a restart); a fresh one otherwise.
        var dataDirectory: URL?
        /// A `budgets:` section, verbatim.
        var budgets = ""
        /// A `profiles:` section, verbatim.
        var profiles = ""
        /// Any other policy sections (teams, organizations, escalation, contexts), verbatim.
        var policy = ""
        /// The `tiers:` section, verbatim; two tiers (standard: software, high: HSM) unless given.
        var tiers: String?
        var wallClock: WallClock?
        /// Where the server's log lines go (at info and above); nowhere unless given.
        var logs: CapturedLogs?
    }

    static func yaml(dataDirectory: URL, options: Options) -> String {
        var text = """
            issuer: countersign.test
            listen: { address: 127.0.0.1, port: 0 }
            http: { address: 127.0.0.1, port: \(options.httpPort) }
            data_dir: \(dataDirectory.path)
            hsm:
              token_label: \(SoftHSMFixture.tokenLabel)
              max_sessions: 4
              timeout: \(options.hsmTimeout)
              breaker_failures: \(options.breakerFailures)
              breaker_cooldown: \(options.breakerCooldown)
            limits:
              handshake_timeout: \(options.handshakeTimeout)
              idle_timeout: \(options.idleTimeout)
              max_in_flight: \(options.maxInFlight)
              max_connections: \(options.maxConnections)

            """
        text +=
            options.tiers ?? """
                tiers:
                  - { name: standard, max_amount: { USD: 50000, JPY: 75000 }, key: standard, backend: software, lifetime: 5m }
                  - { name: high, max_amount: { USD: 5000000 }, key: high, backend: hsm, lifetime: 2m }

                """
        text += options.budgets + options.profiles + options.policy
        if let tls = options.tls {
            text += "tls: { certificate: \(tls.certificate), private_key: \(tls.key) }\n"
        }
        return text
    }

    static func start(_ options: Options = Options()) async throws -> TestServer {
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            return try await Self.start(options, on: eventLoops)
        } catch {
            try? await eventLoops.shutdownGracefully()
            throw error
        }
    }

    private static func start(_ options: Options, on eventLoops: MultiThreadedEventLoopGroup) async throws -> TestServer {
        let fixture = try SoftHSMFixture.shared()
        let dataDirectory = options.dataDirectory ?? fixture.directory.appendingPathComponent("server-\(UUID().uuidString.prefix(8))")
        let configuration = try ServerConfiguration.parse(yaml: Self.yaml(dataDirectory: dataDirectory, options: options), file: "test.yaml")
        var environment = ServerEnvironment()
        var logger = options.logs?.logger() ?? Logger(label: "countersign.test")
        if options.logs == nil { logger.logLevel = .warning }
        environment.logger = logger
        environment.eventLoopGroup = eventLoops
        environment.pkcs11Module = options.faultyHSM ? FaultInjection.module(wrapping: fixture.module) : fixture.module
        // The fault-injecting module never finalizes the real one, which other tests share.
        environment.reinitializesInjectedModule = options.faultyHSM
        if let clock = options.clock {
            environment.time = MonotonicTime(clock)
        }
        if let wallClock = options.wallClock {
            environment.wallClock = wallClock
        }
        let report = try await CountersignApplication.initialize(configuration: configuration, pin: fixture.pin(), environment: environment)
        let admin = try CredentialFile.read(path: report.adminCredentialPath ?? dataDirectory.appendingPathComponent("admin.credential").path)
        let application = try await CountersignApplication(configuration: configuration, pin: fixture.pin(), environment: environment)
        let group = ServiceGroup(configuration: .init(services: application.services, logger: logger))
        let running = Task {
            do {
                try await group.run()
            } catch {
                await application.finish()
                throw error
            }
            await application.finish()
        }
        let port: Int
        let httpPort: Int
        do {
            port = try await application.framedServer.localAddress.port!
            httpPort = try await application.httpServer.localAddress.port!
        } catch {
            // Its services wind down on this server's event loop before the caller shuts the loop down.
            await group.triggerGracefulShutdown()
            _ = await running.result
            throw error
        }
        return TestServer(
            application: application, serviceGroup: group, running: running, dataDirectory: dataDirectory, admin: admin, port: port, httpPort: httpPort,
            eventLoops: eventLoops)
    }

    private init(
        application: CountersignApplication, serviceGroup: ServiceGroup, running: Task<Void, any Error>, dataDirectory: URL, admin: CredentialFile, port: Int,
        httpPort: Int, eventLoops: MultiThreadedEventLoopGroup
    ) {
        self.application = application
        self.serviceGroup = serviceGroup
        self.running = running
        self.dataDirectory = dataDirectory
        self.admin = admin
        self.port = port
        self.httpPort = httpPort
        self.eventLoops = eventLoops
    }

    func connect(_ credential: CredentialFile) async throws -> CountersignClient {
        try await CountersignClient.connect(host: "127.0.0.1", port: self.port, credential: credential)
    }

    /// Registers a principal through the admin connection and returns its credential.
    func addPrincipal(_ id: String, algorithm: CredentialAlgorithm = .es256, role: Role = .agent) async throws -> CredentialFile {
        let key = CredentialPrivateKey.generate(algorithm)
        let admin = try await self.connect(self.admin)
        defer { Task { await admin.close() } }
        _ = try await admin.addAgent(id: id, publicKey: key.publicKey, role: role)
        return CredentialFile(principal: id, key: key, server: "127.0.0.1:\(self.port)")
    }

    func stop() async throws {
        await self.serviceGroup.triggerGracefulShutdown()
        let outcome = await self.running.result
        try await self.eventLoops.shutdownGracefully()
        try outcome.get()
    }

    /// `connections` connections (round robin over `credentials`) each pipelining `perConnection` authorize
    /// requests for `amount`; every outcome, signed or refused.
    func authorizeConcurrently(
        _ credentials: [CredentialFile], connections: Int, perConnection: Int, amount: Int64
    ) async throws -> [Result<Authorization, WireError>] {
        try await withThrowingTaskGroup(of: [Result<Authorization, WireError>].self) { group in
            for connection in 0..<connections {
                let credential = credentials[connection % credentials.count]
                group.addTask {
                    let client = try await self.connect(credential)
                    var outcomes: [Result<Authorization, WireError>] = []
                    try await withThrowingTaskGroup(of: Result<Authorization, WireError>.self) { requests in
                        for _ in 0..<perConnection {
                            requests.addTask {
                                do { return .success(try await client.authorize(TestServer.request(amount))) } catch let error as WireError {
                                    return .failure(error)
                                }
                            }
                        }
                        for try await outcome in requests { outcomes.append(outcome) }
                    }
                    await client.close()
                    return outcomes
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
    }

    /// A well-formed AUTHORIZE body for `amount` minor units of `currency`.
    static func request(_ amount: Int64, _ currency: String = "USD", key: String = UUID().uuidString) -> AuthorizeRequest {
        AuthorizeRequest(
            idempotencyKey: key, amount: amount, currency: currency, merchantID: "m-42", merchantCategoryCode: "5734",
            intent: Intent(description: "USB-C cables", lineItems: [LineItem(description: "USB-C cable", quantity: 2, unitAmount: amount / 2)])
        )
    }
}

/// Runs `body` with a started server and stops it afterwards, also when `body` throws.
func withServer(_ options: TestServer.Options = .init(), _ body: (TestServer) async throws -> Void) async throws {
    let server = try await TestServer.start(options)
    do {
        try await body(server)
    } catch {
        try? await server.stop()
        throw error
    }
    try await server.stop()
}
