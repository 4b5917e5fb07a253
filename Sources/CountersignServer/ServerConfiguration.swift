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
        public var isLoopback: Bool {
            self.host == "localhost" || self.host == "::1" || self.host.hasPrefix("127.")
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
        /// How long a shutdown waits for a connection's answers before it closes the connection anyway.
        public var shutdownGrace: TimeAmount = .seconds(30)
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
    /// The tiers and the agent profiles.
    public var policy: PolicyEngine
    public var tiers: TierTable { self.policy.tiers }
    /// Per-agent spending limits over windows; an agent without a budget is limited only by the tiers.
    public var budgets = BudgetTable([])

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
        let entries = try root.mapping(allowing: ["issuer", "listen", "http", "tls", "insecure_plaintext", "data_dir", "hsm", "limits", "tiers", "profiles", "budgets"])
        guard let tierList = entries["tiers"] else {
            throw root.error("'tiers' is required: at least one tier")
        }
        var configuration = ServerConfiguration(tiers: try Self.tiers(tierList))
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
        if let budgets = entries["budgets"] { configuration.budgets = try Self.budgets(budgets) }
        if let profiles = entries["profiles"] {
            let parsed = try Self.profiles(profiles)
            do {
                configuration.policy = try PolicyEngine(tiers: configuration.tiers, profiles: parsed)
            } catch {
                throw profiles.error(error.reason)
            }
        }
        return configuration
    }

    /// Refuses a plaintext listener on a non-loopback address unless the operator insisted.
    public func validateTransportSecurity() throws {
        if self.tls == nil, !self.listen.isLoopback, !self.insecurePlaintext {
            throw ConfigurationError(
                file: "configuration",
                line: nil,
                reason: "refusing to listen on \(self.listen) without TLS: give --tls-cert and --tls-key, or --insecure-plaintext if the network is protected otherwise"
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
        let fields = try reader.mapping(allowing: ["max_frame_bytes", "max_connections", "handshake_timeout", "idle_timeout", "max_in_flight", "shutdown_grace"])
        var limits = Limits()
        if let frame = fields["max_frame_bytes"] { limits.maximumFrameLength = Int(try frame.integer(in: 1024...16 * 1024 * 1024)) }
        if let connections = fields["max_connections"] { limits.maximumConnections = Int(try connections.integer(in: 1...1_000_000)) }
        if let handshake = fields["handshake_timeout"] { limits.handshakeTimeout = try handshake.duration(in: .milliseconds(10) ... .seconds(300)) }
        if let idle = fields["idle_timeout"] { limits.idleTimeout = try idle.duration(in: .seconds(1) ... .seconds(86400)) }
        if let inFlight = fields["max_in_flight"] { limits.maximumInFlight = Int(try inFlight.integer(in: 1...100_000)) }
        if let grace = fields["shutdown_grace"] {
            let duration = try grace.duration(in: .seconds(1) ... .seconds(3600))
            limits.shutdownGrace = .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
        }
        return limits
    }

    private static func profiles(_ reader: ConfigurationReader) throws -> [AgentProfile] {
        try reader.sequence().map { entry in
            let fields = try entry.mapping(allowing: ["name", "agents", "highest_tier", "max_per_authorization", "merchants", "categories"])
            guard let name = fields["name"], let agents = fields["agents"] else {
                throw entry.error("a profile needs 'name' and 'agents'")
            }
            var profile = AgentProfile(name: try name.string(), agents: Set(try agents.sequence().map { try $0.string() }))
            if let tier = fields["highest_tier"] { profile.highestTier = try tier.string() }
            if let maximum = fields["max_per_authorization"] {
                for (code, amount) in try maximum.mapping(allowing: nil) {
                    guard Currency(code: code) != nil else { throw amount.error("'\(code)' is not an ISO 4217 currency code") }
                    profile.maximumPerAuthorization[code] = try amount.integer(in: 1...1_000_000_000_000_000)
                }
            }
            if let merchants = fields["merchants"] {
                let lists = try merchants.mapping(allowing: ["allow", "block"])
                profile.allowedMerchants = try lists["allow"].map { Set(try $0.sequence().map { try $0.string() }) }
                profile.blockedMerchants = try lists["block"].map { Set(try $0.sequence().map { try $0.string() }) } ?? []
            }
            if let categories = fields["categories"] {
                let lists = try categories.mapping(allowing: ["allow", "block"])
                let codes: (ConfigurationReader) throws -> Set<String> = { list in
                    Set(try list.sequence().map { item in
                        let code = try item.string()
                        guard code.count == 4, code.allSatisfy(\.isASCII), code.allSatisfy(\.isNumber) else {
                            throw item.error("'\(code)' is not a merchant category code (four digits)")
                        }
                        return code
                    })
                }
                profile.allowedCategories = try lists["allow"].map(codes)
                profile.blockedCategories = try lists["block"].map(codes) ?? []
            }
            return profile
        }
    }

    private static func budgets(_ reader: ConfigurationReader) throws -> BudgetTable {
        var budgets: [Budget] = []
        for entry in try reader.sequence() {
            let fields = try entry.mapping(allowing: ["agent", "limit", "window"])
            guard let agent = fields["agent"], let limit = fields["limit"], let window = fields["window"] else {
                throw entry.error("a budget needs 'agent', 'limit' and 'window'")
            }
            var limits: [String: Int64] = [:]
            for (code, amount) in try limit.mapping(allowing: nil) {
                guard Currency(code: code) != nil else { throw amount.error("'\(code)' is not an ISO 4217 currency code") }
                limits[code] = try amount.integer(in: 1...1_000_000_000_000_000)
            }
            guard !limits.isEmpty else { throw limit.error("give at least one currency, e.g. USD: 100000 (minor units)") }
            let budgetWindow: BudgetWindow
            switch try window.string() {
            case "day": budgetWindow = .day
            case "week": budgetWindow = .week
            case "month": budgetWindow = .month
            default: budgetWindow = .rolling(seconds: try window.duration(in: .seconds(1) ... .seconds(366 * 86_400)).components.seconds)
            }
            budgets.append(Budget(agent: try agent.string(), limits: limits, window: budgetWindow))
        }
        return BudgetTable(budgets)
    }

    private static func tiers(_ reader: ConfigurationReader) throws -> TierTable {
        var tiers: [Tier] = []
        for entry in try reader.sequence() {
            let fields = try entry.mapping(allowing: ["name", "max_amount", "key", "backend", "lifetime"])
            guard let name = fields["name"], let maximum = fields["max_amount"], let key = fields["key"], let backend = fields["backend"] else {
                throw entry.error("a tier needs 'name', 'max_amount', 'key' and 'backend'")
            }
            var bounds: [String: Int64] = [:]
            for (code, amount) in try maximum.mapping(allowing: nil) {
                guard Currency(code: code) != nil else {
                    throw amount.error("'\(code)' is not an ISO 4217 currency code")
                }
                bounds[code] = try amount.integer(in: 1...1_000_000_000_000_000)
            }
            guard !bounds.isEmpty else { throw maximum.error("give at least one currency, e.g. USD: 50000 (minor units)") }
            let backendName = try backend.string()
            guard let keyBackend = KeyBackend(rawValue: backendName) else {
                throw backend.error("'\(backendName)' is not a backend; use software or hsm")
            }
            let keyName = try key.string()
            guard keyName.range(of: "^[a-z][a-z0-9-]{0,31}$", options: .regularExpression) != nil else {
                throw key.error("key names are 1 to 32 characters: a-z, 0-9 and '-', starting with a letter")
            }
            let lifetime = try fields["lifetime"]?.duration(in: .seconds(10) ... .seconds(3600)) ?? .seconds(300)
            tiers.append(
                Tier(name: try name.string(), maximumAmounts: bounds, keyName: keyName, backend: keyBackend, lifetimeSeconds: lifetime.components.seconds)
            )
        }
        do {
            return try TierTable(tiers)
        } catch {
            throw reader.error(error.reason)
        }
    }
}
