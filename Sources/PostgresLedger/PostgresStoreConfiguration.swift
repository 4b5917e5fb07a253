import CountersignCore
import Foundation
import Ledger
import NIOSSL
import PostgresNIO

/// Where the cluster's PostgreSQL is and how to reach it. The password is read from a file (mode 0600 or
/// stricter), never taken from the YAML or a command line; it is never printed: ``location`` names the
/// user, host, port and database only.
public struct PostgresStoreConfiguration: Sendable {
    public enum TLS: String, Sendable, CaseIterable {
        /// Plain TCP: for loopback and a private network only.
        case disable
        /// TLS when the server offers it.
        case prefer
        /// TLS, and the server's certificate verified against `caFile` (or the system's roots).
        case require
    }

    public var host: String
    public var port: Int
    public var database: String
    public var user: String
    public var passwordFile: String?
    public var poolSize: Int
    public var tls: TLS
    public var caFile: String?
    /// The longest a store call may take before it answers `STORE_UNAVAILABLE`.
    public var operationTimeout: Duration = .seconds(5)
    /// The longest the first connection and the schema's migration may take.
    public var connectTimeout: Duration = .seconds(15)
    /// The longest reading and checking the whole audit log at start may take.
    public var openTimeout: Duration = .seconds(600)
    /// How long an index reserved but never written may stay a hole below written entries before any server
    /// fills it with a `lost` entry (its server died): longer than any request's way from reserving its index
    /// to its commit (the HSM's timeout and the store's included).
    public var lostAfter: Duration = .seconds(30)
    /// How often a server reads the entries other servers wrote, for the log's contiguous prefix.
    public var followInterval: Duration = .milliseconds(200)

    public init(
        host: String, port: Int = 5432, database: String, user: String, passwordFile: String?, poolSize: Int = 16, tls: TLS = .prefer,
        caFile: String? = nil
    ) {
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.passwordFile = passwordFile
        self.poolSize = poolSize
        self.tls = tls
        self.caFile = caFile
    }

    /// `postgres://user@host:port/database`: for logs, errors and metrics. Never the password.
    public var location: String { "postgres://\(self.user)@\(self.host):\(self.port)/\(self.database)" }

    /// The password, read from its file when the store opens (a rotated password needs a restart of the server).
    /// - Throws: ``StartupError`` when the file is missing, unreadable or readable by others.
    func password() throws -> String? {
        guard let path = self.passwordFile else { return nil }
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw StartupError("the PostgreSQL password file '\(path)' cannot be read (\(String(cString: strerror(errno))))")
        }
        guard status.st_mode & 0o077 == 0 else {
            throw StartupError("the PostgreSQL password file '\(path)' is readable by others; make it 0600 (chmod 600 '\(path)')")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StartupError("the PostgreSQL password file '\(path)' cannot be read")
        }
        var text = String(decoding: data, as: UTF8.self)
        while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
        return text
    }

    private func tlsConfiguration() throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile = self.caFile {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        }
        // A bad CA file would otherwise fail every connection later, with a vaguer error.
        _ = try NIOSSLContext(configuration: tls)
        return tls
    }

    func clientConfiguration() throws -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS
        switch self.tls {
        case .disable: tls = .disable
        case .prefer: tls = .prefer(try self.tlsConfiguration())
        case .require: tls = .require(try self.tlsConfiguration())
        }
        var configuration = PostgresClient.Configuration(
            host: self.host, port: self.port, username: self.user, password: try self.password(), database: self.database, tls: tls)
        configuration.options.maximumConnections = self.poolSize
        configuration.options.minimumConnections = min(2, self.poolSize)
        configuration.options.connectTimeout = min(self.operationTimeout, .seconds(5))
        configuration.options.keepAliveBehavior = .init(frequency: .seconds(15))
        // A statement the database runs past the deadline is stopped there too, not left holding locks.
        let milliseconds = self.operationTimeout.components.seconds * 1000 + self.operationTimeout.components.attoseconds / 1_000_000_000_000_000
        configuration.options.additionalStartupParameters = [("statement_timeout", "\(milliseconds)"), ("application_name", "countersignd")]
        return configuration
    }

    /// A connection of its own (outside the pool): for the checkpoint lease, which must stay on one session.
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch self.tls {
        case .disable: tls = .disable
        case .prefer: tls = .prefer(try NIOSSLContext(configuration: self.tlsConfiguration()))
        case .require: tls = .require(try NIOSSLContext(configuration: self.tlsConfiguration()))
        }
        var configuration = PostgresConnection.Configuration(
            host: self.host, port: self.port, username: self.user, password: try self.password(), database: self.database, tls: tls)
        // PostgreSQL probes this session's peer every 5 s after 10 s of silence and ends it after 3 missed probes: a
        // server that lost power or its network gives up its checkpoint lease in about 25 s, not at the kernel's
        // default of two hours.
        configuration.options.additionalStartupParameters = [
            ("tcp_keepalives_idle", "10"), ("tcp_keepalives_interval", "5"), ("tcp_keepalives_count", "3"), ("application_name", "countersignd"),
        ]
        return configuration
    }
}
