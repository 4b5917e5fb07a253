import Audit
import Foundation
import NIOCore
import Policy
import Wire

/// `countersignd`'s configuration (YAML; the example is `hsm-config/countersign.yaml`).
///
/// The HSM PIN is never part of it: it comes from `COUNTERSIGN_HSM_PIN_FILE` / `COUNTERSIGN_HSM_PIN`, or
/// from the file named by `hsm.pin_file`.
public struct ServerConfiguration: Sendable {
    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public var description: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }

        /// Whether the address is on this machine only (127.0.0.0/8, ::1, localhost).
        /// `localhost`, `::1`, or an IPv4 address in 127.0.0.0/8 (four decimal octets: `127.example.com` is not).
        public var isLoopback: Bool {
            if self.host == "localhost" || self.host == "::1" { return true }
            let octets = self.host.split(separator: ".", omittingEmptySubsequences: false)
            return octets.count == 4 && octets.first == "127"
                && octets.allSatisfy { !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isASCII) && UInt8($0) != nil }
        }
    }

    public struct TLS: Sendable, Hashable {
        public var certificatePath: String
        public var privateKeyPath: String

        public init(certificatePath: String, privateKeyPath: String) {
            self.certificatePath = certificatePath
            self.privateKeyPath = privateKeyPath
        }
    }

    public struct HSM: Sendable, Hashable {
        public var modulePath: String = "/usr/lib/softhsm/libsofthsm2.so"
        public var tokenLabel: String = "countersign"
        public var pinFile: String?
        public var maximumSessions: Int = 8
        /// The longest an HSM signature may take before the request gets `HSM_UNAVAILABLE`.
        public var timeout: Duration = .seconds(2)
        public var breakerFailures: Int = 3
        public var breakerCooldown: Duration = .seconds(5)
    }

    public struct Limits: Sendable, Hashable {
        public var maximumFrameLength: Int = WireProtocol.defaultMaximumFrameLength
        public var maximumConnections: Int = 1024
        public var handshakeTimeout: Duration = .seconds(5)
        public var idleTimeout: Duration = .seconds(300)
        public var maximumInFlight: Int = 64
        /// Reads of the audit log (entries, proofs, consistency) running at once across every connection; when more
        /// wait, principals take turns. Half the cores by default, so a flood of them leaves the rest to authorizations.
        public var maximumLogReaders: Int = max(1, System.coreCount / 2)
        /// The share of their time those readers may work; after each read they pause for the rest, so a flood of
        /// reads keeps at most `maximumLogReaders × logReadShare` cores.
        public var logReadShare: Double = 0.5
        /// How long a shutdown waits for a connection's answers before it closes the connection anyway.
        public var shutdownGrace: Duration = .seconds(30)
    }

    /// `iss` of every authorization.
    public var issuer: String = "countersign"
    public var listen = Endpoint(host: "127.0.0.1", port: 7600)
    public var http = Endpoint(host: "127.0.0.1", port: 7680)
    public var tls: TLS?
    /// Allows a non-loopback listener without TLS. Off unless the operator says so.
    public var insecurePlaintext = false
    public var dataDirectory = ".data"
    public var hsm = HSM()
    public var limits = Limits()
    /// The tiers, agent profiles, teams, budgets, escalation rules and contexts.
    public var policy: PolicyEngine
    public var tiers: TierTable { self.policy.tiers }
    public struct AuditLog: Sendable, Hashable {
        /// The name of the key that signs checkpoints (on the HSM).
        public static let keyName = "audit"
        /// The checkpoints' origin line and signature name; `<issuer>/audit` unless given.
        public var origin: String?
        /// A checkpoint at least this often, even when nothing happened.
        public var checkpointInterval: Duration = .seconds(60)
        /// A file, best on another disk or machine (a mount), that every signed checkpoint is appended to; at
        /// start the store must still extend the last one there. See docs/operations.md, "What an auditor keeps".
        public var witnessFile: String?
        /// A C2SP witness (`countersign audit witness` on another machine) that every signed checkpoint is sent to.
        public var witness: Witness?
        /// And after this many entries.
        public var checkpointEntries: Int = 1000
    }

    /// The approvals console on the HTTP listener (docs/console.md): where browsers reach it, and its TLS.
    public struct Console: Sendable, Hashable {
        /// `https://approvals.example.com` (or `http://localhost:7680`): passkeys are bound to it, and every state
        /// change must come from it.
        public var origin: String
        /// The WebAuthn relying party id: the origin's host unless given (a registrable suffix of it).
        public var rpID: String
        /// How long a sign-in lasts (15 minutes unless given; at most 12 hours).
        public var sessionLifetime: Duration = .seconds(900)
        /// The HTTP listener's certificate and key: required unless it listens on loopback only.
        public var tls: TLS?
    }

    public var console: Console?

    /// A witness's address (`http://host:port`, its submission prefix) and verifier key (`name+keyid+key`).
    public struct Witness: Sendable, Hashable {
        public var url: String
        public var verifierKey: String
    }

    public var audit = AuditLog()

    /// Where the ledger is: the embedded SQLite file in `data_dir` (one server), or a PostgreSQL database
    /// shared by several servers.
    public enum StoreKind: Sendable, Hashable {
        case sqlite
        case postgres(Postgres)
    }

    /// `store: { kind: postgres, … }`. The password is read from `password_file` (0600), never written here.
    public struct Postgres: Sendable, Hashable {
        public var host: String
        public var port: Int = 5432
        public var database: String
        public var user: String
        public var passwordFile: String?
        public var poolSize: Int = 16
        /// `disable`, `prefer` or `require` (with `ca_file`, the server's certificate is verified against it).
        public var tls: String = "prefer"
        public var caFile: String?
        /// The longest a store call may take before the request answers `STORE_UNAVAILABLE`.
        public var timeout: Duration = .seconds(5)
        /// How long a hole a dead server left in the audit log stays before it is filled with a `lost` entry.
        public var lostAfter: Duration = .seconds(30)

        public init(host: String, database: String, user: String) {
            self.host = host
            self.database = database
            self.user = user
        }
    }

    public var store: StoreKind = .sqlite

    /// Automatic rotation per key name.
    public var keyPolicies: [String: KeyRotationPolicy] = [:]

    public init(tiers: TierTable) {
        self.policy = PolicyEngine(tiers: tiers)
    }

    /// Loads and validates a configuration file.
    /// - Throws: ``ConfigurationError`` naming the file, the line and the reason.
    public static func load(path: String) throws -> ServerConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(file: path, line: nil, reason: "cannot read the configuration file")
        }
        return try Self.parse(yaml: String(decoding: data, as: UTF8.self), file: path)
    }

    public static func parse(yaml: String, file: String) throws -> ServerConfiguration {
        let root = try ConfigurationReader.parse(yaml: yaml, file: file)
        let entries = try root.mapping(allowing: [
            "issuer", "listen", "http", "tls", "insecure_plaintext", "data_dir", "hsm", "limits", "tiers", "profiles", "budgets", "teams",
            "organizations", "escalation", "anomaly", "contexts", "keys", "audit", "store", "console",
        ])
        var configuration = ServerConfiguration(tiers: try PolicyConfiguration.tiers(entries["tiers"], root: root))
        if let issuer = entries["issuer"] { configuration.issuer = try issuer.string() }
        if let listen = entries["listen"] { configuration.listen = try Self.endpoint(listen) }
        if let http = entries["http"] { configuration.http = try Self.endpoint(http) }
        if let tls = entries["tls"] {
            let fields = try tls.mapping(allowing: ["certificate", "private_key"])
            guard let certificate = fields["certificate"], let key = fields["private_key"] else {
                throw tls.error("needs both 'certificate' and 'private_key'")
            }
            configuration.tls = TLS(certificatePath: try certificate.string(), privateKeyPath: try key.string())
        }
        if let insecure = entries["insecure_plaintext"] { configuration.insecurePlaintext = try insecure.bool() }
        if let dataDirectory = entries["data_dir"] { configuration.dataDirectory = try dataDirectory.string() }
        if let hsm = entries["hsm"] { configuration.hsm = try Self.hsm(hsm) }
        if let limits = entries["limits"] { configuration.limits = try Self.limits(limits) }
        configuration.policy = try PolicyConfiguration.policy(tiers: configuration.tiers, entries: entries, root: root)
        if let audit = entries["audit"] {
            let fields = try audit.mapping(allowing: ["origin", "checkpoint_interval", "checkpoint_entries", "witness_file", "witness"])
            configuration.audit.origin = try fields["origin"]?.string()
            configuration.audit.witnessFile = try fields["witness_file"]?.string()
            if let witness = fields["witness"] {
                let entries = try witness.mapping(allowing: ["url", "key"])
                guard let url = entries["url"], let key = entries["key"] else { throw witness.error("audit.witness needs url and key") }
                let text = try url.string()
                guard let parsed = URL(string: text), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
                    throw url.error("audit.witness.url must be http://host:port or https://host:port")
                }
                let verifierKey = try key.string()
                do {
                    _ = try Cosigner(verifierKey: verifierKey)
                } catch {
                    throw key.error("audit.witness.key is not the witness's verifier key (countersign audit witness prints it): \(error)")
                }
                configuration.audit.witness = Witness(url: text, verifierKey: verifierKey)
            }
            if let interval = fields["checkpoint_interval"] { configuration.audit.checkpointInterval = try interval.duration(in: .seconds(1) ... .seconds(60)) }
            if let entries = fields["checkpoint_entries"] { configuration.audit.checkpointEntries = Int(try entries.integer(in: 1...1_000_000)) }
        }
        if let keys = entries["keys"] { configuration.keyPolicies = try Self.keyPolicies(keys, tiers: configuration.tiers) }
        if let store = entries["store"] { configuration.store = try Self.store(store) }
        if let console = entries["console"] { configuration.console = try Self.console(console) }
        return configuration
    }

    private static func console(_ reader: ConfigurationReader) throws -> Console {
        let fields = try reader.mapping(allowing: ["origin", "rp_id", "session_lifetime", "tls"])
        guard let originField = fields["origin"] else { throw reader.error("console needs 'origin' (e.g. https://approvals.example.com)") }
        let origin = try originField.string()
        guard let url = URL(string: origin), let scheme = url.scheme, let host = url.host, url.path.isEmpty, url.query == nil, url.fragment == nil
        else { throw originField.error("console.origin must be scheme://host[:port], nothing after it") }
        guard scheme == "https" || (scheme == "http" && host == "localhost") else {
            throw originField.error("console.origin must be https (passkeys need a secure origin); plain http only for http://localhost")
        }
        let rpID = try fields["rp_id"]?.string() ?? host
        guard host == rpID || host.hasSuffix("." + rpID) else {
            throw (fields["rp_id"] ?? originField).error("console.rp_id '\(rpID)' must be the origin's host or a suffix of it")
        }
        var console = Console(origin: origin, rpID: rpID)
        if let lifetime = fields["session_lifetime"] { console.sessionLifetime = try lifetime.duration(in: .seconds(60) ... .seconds(43_200)) }
        if let tls = fields["tls"] {
            let entries = try tls.mapping(allowing: ["certificate", "private_key"])
            guard let certificate = entries["certificate"], let key = entries["private_key"] else {
                throw tls.error("needs both 'certificate' and 'private_key'")
            }
            console.tls = TLS(certificatePath: try certificate.string(), privateKeyPath: try key.string())
        }
        return console
    }

    private static func store(_ reader: ConfigurationReader) throws -> StoreKind {
        let fields = try reader.mapping(allowing: [
            "kind", "host", "port", "database", "user", "password_file", "pool_size", "tls", "ca_file", "timeout", "lost_after", "password",
        ])
        guard let kind = fields["kind"] else { throw reader.error("store.kind is required: sqlite or postgres") }
        switch try kind.string() {
        case "sqlite":
            if let extra = fields.keys.sorted().first(where: { $0 != "kind" }) {
                throw fields[extra]!.error("store.\(extra) is for kind postgres; an SQLite store lives in data_dir")
            }
            return .sqlite
        case "postgres":
            if let password = fields["password"] {
                throw password.error(
                    "a password is never written in the configuration: put it in a file readable by countersignd only and name it in store.password_file")
            }
            guard let host = fields["host"], let database = fields["database"], let user = fields["user"] else {
                throw reader.error("a postgres store needs host, database and user (and password_file unless the server trusts this user)")
            }
            var postgres = Postgres(host: try host.string(), database: try database.string(), user: try user.string())
            if let port = fields["port"] { postgres.port = Int(try port.integer(in: 1...65535)) }
            postgres.passwordFile = try fields["password_file"]?.string()
            if let size = fields["pool_size"] { postgres.poolSize = Int(try size.integer(in: 1...1000)) }
            if let tls = fields["tls"] {
                let mode = try tls.string()
                guard ["disable", "prefer", "require"].contains(mode) else { throw tls.error("store.tls is disable, prefer or require, not '\(mode)'") }
                postgres.tls = mode
            }
            postgres.caFile = try fields["ca_file"]?.string()
            if let timeout = fields["timeout"] { postgres.timeout = try timeout.duration(in: .milliseconds(100) ... .seconds(60)) }
            if let lostAfter = fields["lost_after"] { postgres.lostAfter = try lostAfter.duration(in: .seconds(1) ... .seconds(3600)) }
            return .postgres(postgres)
        case let other:
            throw kind.error("store.kind is sqlite or postgres, not '\(other)'")
        }
    }

    /// Refuses a plaintext listener on a non-loopback address unless the operator insisted.
    public func validateTransportSecurity() throws {
        // The console's sessions and passkey ceremonies never cross a network in the clear, whatever the operator says.
        if let console = self.console, console.tls == nil, !self.http.isLoopback {
            throw ConfigurationError(
                file: "configuration", line: nil,
                reason: "refusing to serve the approvals console on \(self.http) without TLS: give console.tls, or listen on loopback behind a TLS proxy")
        }
        if self.tls == nil, !self.listen.isLoopback, !self.insecurePlaintext {
            throw ConfigurationError(
                file: "configuration",
                line: nil,
                reason:
                    "refusing to listen on \(self.listen) without TLS: give --tls-cert and --tls-key, or --insecure-plaintext if the network is protected otherwise"
            )
        }
    }

    private static func endpoint(_ reader: ConfigurationReader) throws -> Endpoint {
        let fields = try reader.mapping(allowing: ["address", "port"])
        var endpoint = Endpoint(host: "127.0.0.1", port: 0)
        if let address = fields["address"] { endpoint.host = try address.string() }
        guard let port = fields["port"] else { throw reader.error("'port' is required") }
        endpoint.port = Int(try port.integer(in: 0...65535))
        return endpoint
    }

    private static func hsm(_ reader: ConfigurationReader) throws -> HSM {
        let fields = try reader.mapping(allowing: ["module", "token_label", "pin_file", "max_sessions", "timeout", "breaker_failures", "breaker_cooldown"])
        var hsm = HSM()
        if let module = fields["module"] { hsm.modulePath = try module.string() }
        if let label = fields["token_label"] { hsm.tokenLabel = try label.string() }
        if let pinFile = fields["pin_file"] { hsm.pinFile = try pinFile.string() }
        if let sessions = fields["max_sessions"] { hsm.maximumSessions = Int(try sessions.integer(in: 1...1024)) }
        if let timeout = fields["timeout"] { hsm.timeout = try timeout.duration(in: .milliseconds(10) ... .seconds(60)) }
        if let failures = fields["breaker_failures"] { hsm.breakerFailures = Int(try failures.integer(in: 1...1000)) }
        if let cooldown = fields["breaker_cooldown"] { hsm.breakerCooldown = try cooldown.duration(in: .milliseconds(10) ... .seconds(3600)) }
        return hsm
    }

    private static func limits(_ reader: ConfigurationReader) throws -> Limits {
        let fields = try reader.mapping(allowing: [
            "max_frame_bytes", "max_connections", "handshake_timeout", "idle_timeout", "max_in_flight", "max_log_readers", "log_read_percent", "shutdown_grace",
        ])
        var limits = Limits()
        if let frame = fields["max_frame_bytes"] { limits.maximumFrameLength = Int(try frame.integer(in: 1024...16 * 1024 * 1024)) }
        if let connections = fields["max_connections"] { limits.maximumConnections = Int(try connections.integer(in: 1...1_000_000)) }
        if let handshake = fields["handshake_timeout"] { limits.handshakeTimeout = try handshake.duration(in: .milliseconds(10) ... .seconds(300)) }
        if let idle = fields["idle_timeout"] {
            limits.idleTimeout = try idle.duration(in: .seconds(1) ... .seconds(86400))
            // The idle timeout counts from the last frame; a FETCH_AUTHORIZATION that waits for approvers is answered
            // that long after its request, and a shorter timeout would close the connection before its answer.
            let longestWait = Duration.seconds(FetchAuthorizationRequest.longestWaitSeconds)
            guard limits.idleTimeout > longestWait else {
                throw idle.error(
                    "must be longer than the longest wait of a FETCH_AUTHORIZATION (\(longestWait.components.seconds)s), or a fetch waiting for approvers loses its answer"
                )
            }
        }
        if let inFlight = fields["max_in_flight"] { limits.maximumInFlight = Int(try inFlight.integer(in: 1...100_000)) }
        if let readers = fields["max_log_readers"] { limits.maximumLogReaders = Int(try readers.integer(in: 1...10_000)) }
        if let share = fields["log_read_percent"] {
            // A whole percentage in the file, as every figure of the configuration is a whole number.
            limits.logReadShare = Double(try share.integer(in: 1...100)) / 100
        }
        if let grace = fields["shutdown_grace"] {
            limits.shutdownGrace = try grace.duration(in: .seconds(1) ... .seconds(3600))
        }
        return limits
    }

    private static func keyPolicies(_ reader: ConfigurationReader, tiers: TierTable) throws -> [String: KeyRotationPolicy] {
        var policies: [String: KeyRotationPolicy] = [:]
        let names = Set(tiers.tiers.map(\.keyName) + [AuditLog.keyName])
        for (name, entry) in try reader.mapping(allowing: nil) {
            guard names.contains(name) else { throw entry.error("no tier uses a key named '\(name)'; the keys are \(names.sorted().joined(separator: ", "))") }
            let fields = try entry.mapping(allowing: ["rotate_every", "max_signatures"])
            var policy = KeyRotationPolicy()
            policy.rotateEverySeconds = try fields["rotate_every"]?.duration(in: .seconds(3600) ... .seconds(366 * 86_400)).components.seconds
            policy.maximumSignatures = try fields["max_signatures"].map { Int(try $0.integer(in: 1...1_000_000_000_000)) }
            policies[name] = policy
        }
        return policies
    }
}

/// When a key rotates by itself.
public struct KeyRotationPolicy: Sendable, Hashable {
    /// Rotate once the active version has been active this long (at least an hour).
    public var rotateEverySeconds: Int64?
    /// Rotate once the active version has signed this many authorizations.
    public var maximumSignatures: Int?

    public init(rotateEverySeconds: Int64? = nil, maximumSignatures: Int? = nil) {
        self.rotateEverySeconds = rotateEverySeconds
        self.maximumSignatures = maximumSignatures
    }
}
