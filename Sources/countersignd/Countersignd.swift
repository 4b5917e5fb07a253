import ArgumentParser
import Audit
import CanonicalJSON
import CountersignConfiguration
import CountersignServer
import Foundation
import Logging
import NIOCore
import NIOPosix
import Policy
import PostgresLedger
import ServiceLifecycle
import UnixSignals
import Wire

@main
enum Main {
    static func main() async {
        // The event loops run Swift concurrency's jobs too: one pool of threads instead of two, and a request's
        // task often writes its answer on the connection's own loop (a job resumed from GRDB's or the HSM's threads
        // goes to any loop, then hops). Nothing on an async path may block a thread: SQLite runs on GRDB's queues,
        // PKCS#11 and the witness file's synced writes on thread pools (docs/architecture.md, "One pool of threads").
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        await Countersignd.main()
    }
}

struct Countersignd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "countersignd",
        abstract: "The Countersign server: signed payment authorizations for AI agents.",
        version: "countersignd \(CountersignVersion.current) (protocol version \(WireProtocol.version))",
        subcommands: [Serve.self, Init.self, MigrateStore.self, CheckConfig.self],
        defaultSubcommand: Serve.self
    )
}

/// Options every subcommand shares: where the configuration and the state are.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file (env COUNTERSIGN_CONFIG; default hsm-config/countersign.yaml).")
    var config: String?

    @Option(name: .customLong("data-dir"), help: "State directory (env COUNTERSIGN_DATA_DIR; default: data_dir in the configuration).")
    var dataDirectory: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    func load() throws -> ServerConfiguration {
        let path = self.config ?? self.environment["COUNTERSIGN_CONFIG"] ?? "hsm-config/countersign.yaml"
        var configuration = try ServerConfiguration.load(path: path)
        if let dataDirectory = self.dataDirectory ?? self.environment["COUNTERSIGN_DATA_DIR"] {
            configuration.dataDirectory = dataDirectory
        }
        // The same variables the CLI's HSM commands read (and the Makefile sets) choose the token here too.
        if let label = self.environment["COUNTERSIGN_TOKEN_LABEL"], !label.isEmpty {
            configuration.hsm.tokenLabel = label
        }
        if let module = self.environment["COUNTERSIGN_PKCS11_MODULE"], !module.isEmpty {
            configuration.hsm.modulePath = module
        }
        return configuration
    }

    /// Where the HSM settings came from, for the log at start: an override is never silent.
    func describeHSM(_ configuration: ServerConfiguration) -> String {
        var text = "module \(configuration.hsm.modulePath), token '\(configuration.hsm.tokenLabel)'"
        if self.environment["COUNTERSIGN_TOKEN_LABEL"]?.isEmpty == false { text += " (label from COUNTERSIGN_TOKEN_LABEL)" }
        if self.environment["COUNTERSIGN_PKCS11_MODULE"]?.isEmpty == false { text += " (module from COUNTERSIGN_PKCS11_MODULE)" }
        return text
    }

    func bootstrapLogging() -> Logger {
        let level = self.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "countersignd")
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server until SIGTERM or SIGINT.")

    @OptionGroup var options: ServerOptions

    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain for the framed listener.")
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: "PEM private key for the framed listener.")
    var tlsKey: String?

    @Flag(name: .customLong("insecure-plaintext"), help: "Allow a non-loopback listener without TLS.")
    var insecurePlaintext = false

    @Flag(
        name: .customLong("verify-log"),
        help: "Before serving, verify the whole audit log against every signed checkpoint (not only the latest), with progress.")
    var verifyLog = false

    func run() async throws {
        let logger = self.options.bootstrapLogging()
        var configuration = try self.options.load()
        switch (self.tlsCertificate, self.tlsKey) {
        case (let certificate?, let key?):
            configuration.tls = .init(certificatePath: certificate, privateKeyPath: key)
        case (nil, nil):
            break
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        if self.insecurePlaintext { configuration.insecurePlaintext = true }
        let pin = try HSMPINSource.read(pinFile: configuration.hsm.pinFile, environment: self.options.environment)
        var environment = ServerEnvironment()
        environment.logger = logger
        logger.notice("starting", metadata: ["hsm": "\(self.options.describeHSM(configuration))", "data_dir": "\(configuration.dataDirectory)"])
        let application = try await CountersignApplication(configuration: configuration, pin: pin, environment: environment)
        if self.verifyLog {
            do {
                let report = try await application.verifyWholeLog { done, total in
                    logger.notice("verifying the audit log", metadata: ["verified": "\(done)", "of": "\(total)"])
                }
                logger.notice(
                    "audit log verified",
                    metadata: ["entries": "\(report.entries)", "checkpoints": "\(report.checkpoints)", "root": "\(Data(report.root).base64EncodedString())"]
                )
            } catch {
                await application.finish()
                throw error
            }
        }
        let group = ServiceGroup(
            configuration: .init(services: application.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        do {
            try await group.run()
        } catch {
            await application.finish()
            logger.error("countersignd stopped on an error", metadata: ["error": "\(error)"])
            throw error
        }
        await application.finish()
        // The last line of a clean stop: without it, an operator cannot tell a stop from a crash.
        logger.notice("countersignd stopped")
    }
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the store, the keys of every tier and the first admin credential. Safe to run again."
    )

    @OptionGroup var options: ServerOptions

    @Option(name: .customLong("admin"), help: "The first admin's principal id.")
    var adminID = "admin"

    func run() async throws {
        var logger = self.options.bootstrapLogging()
        logger.logLevel = .warning
        let configuration = try self.options.load()
        let pin = try HSMPINSource.read(pinFile: configuration.hsm.pinFile, environment: self.options.environment)
        var environment = ServerEnvironment()
        environment.logger = logger
        let report = try await CountersignApplication.initialize(configuration: configuration, pin: pin, adminID: self.adminID, environment: environment)
        if report.created.isEmpty {
            print("nothing to do: the store in \(configuration.dataDirectory) and its keys exist")
        }
        for line in report.created {
            print("created \(line)")
        }
        for warning in report.warnings {
            FileHandle.standardError.write(Data("warning: \(warning)\n".utf8))
        }
        if let path = report.adminCredentialPath {
            print("keep \(path) secret: it is the admin's private key (mode 0600)")
        }
    }
}

struct MigrateStore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate-store",
        abstract: "Copy an SQLite installation (a stopped server's data directory) into the PostgreSQL store of the configuration.",
        discussion: """
            Every row of every table is copied in one transaction into an empty database (the schema is created first), then the copy's \
            audit log is checked entry by entry and its Merkle root compared with the source's: the same log, the same checkpoints. The \
            source is opened read-only and not changed. Stop its server first.
            """
    )

    @OptionGroup var options: ServerOptions

    @Option(name: .customLong("from"), help: "The data directory of the SQLite installation (it holds countersign.sqlite).")
    var source: String

    func run() async throws {
        var logger = self.options.bootstrapLogging()
        logger.logLevel = .warning
        let configuration = try self.options.load()
        guard case .postgres(let postgres) = configuration.store else {
            throw StartupError("the configuration's store is not PostgreSQL: set store.kind to postgres (with host, database, user, password_file) first")
        }
        let path = (self.source as NSString).appendingPathComponent("countersign.sqlite")
        guard FileManager.default.fileExists(atPath: path) else { throw StartupError("no SQLite store at \(path)") }
        let target = PostgresStoreConfiguration(postgres)
        let report = try await StoreMigration.copy(sqlitePath: path, to: target, logger: logger)
        for (table, count) in report.rows { print("copied \(count) \(table) row(s)") }
        print("the audit log in \(target.location): \(report.auditSize) entries, root \(Data(report.root).base64EncodedString()), as in \(path)")
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration file and exit: the line and the reason of the first problem."
    )

    @OptionGroup var options: ServerOptions

    func run() async throws {
        let configuration = try self.options.load()
        try configuration.validateTransportSecurity()
        print(
            "configuration OK: \(configuration.tiers.tiers.count) tiers, \(configuration.policy.profiles.count) profiles, policy \(configuration.policy.version), listening on \(configuration.listen)"
        )
    }
}
