import CountersignConfiguration
import CountersignServer
import Foundation
import Policy
import TestSupport
import Testing

@Suite("Configuration: refused at start with the line and the reason")
struct ConfigurationTests {
    static let valid = """
        listen: { address: 127.0.0.1, port: 7600 }
        tiers:
          - name: standard
            max_amount: { USD: 50000 }
            key: standard
            backend: software
          - name: high
            max_amount: { USD: 5000000 }
            key: high
            backend: hsm
            lifetime: 2m
        """

    func parse(_ yaml: String) throws -> ServerConfiguration {
        try ServerConfiguration.parse(yaml: yaml, file: "countersign.yaml")
    }

    @Test("the example configuration in the repository is valid")
    func example() throws {
        let path = SoftHSMFixture.repositoryRoot.appendingPathComponent("hsm-config/countersign.yaml").path
        let configuration = try ServerConfiguration.load(path: path)
        #expect(configuration.tiers.tiers.map(\.name) == ["micro", "standard", "high", "critical"])
        #expect(configuration.tiers.tiers.map(\.backend) == [.software, .software, .hsm, .hsm])
        #expect(configuration.tiers.tiers.map { $0.approval?.quorum } == [nil, nil, nil, 2])
        let policy = configuration.policy
        #expect(policy.profiles.count >= 2)
        #expect(policy.scopes(of: "agent-1") == [.agent("agent-1"), .team("procurement"), .organization("acme")])
        #expect(policy.scopes(of: "agent-travel") == [.agent("agent-travel"), .team("travel"), .organization("acme")])
        #expect(configuration.listen.description == "127.0.0.1:7600" && configuration.http.description == "127.0.0.1:7680")
        #expect(configuration.hsm.timeout == .seconds(2))
    }

    @Test("defaults fill what is not given")
    func defaults() throws {
        let configuration = try self.parse(Self.valid)
        #expect(configuration.tiers.tiers[0].lifetimeSeconds == 300 && configuration.tiers.tiers[1].lifetimeSeconds == 120)
        #expect(configuration.limits.handshakeTimeout == .seconds(5) && configuration.limits.maximumFrameLength == 65536)
    }

    @Test(
        "each mistake names its line",
        arguments: [
            ("tiers:\n  - name: a\n    max_amount: { USD: 10 }\n    key: a\n    backend: software\n    thresold: 3\n", 6, "unknown key 'tiers[0].thresold'"),
            ("listen: { address: 127.0.0.1, port: 7600 }\nlistn: { port: 1 }\n", 2, "unknown key 'listn'"),
            ("tiers:\n  - name: a\n    max_amount: { USD: -10 }\n    key: a\n    backend: software\n", 3, "outside 1...1000000000000000"),
            ("tiers:\n  - name: a\n    max_amount: { USD: 12.50 }\n    key: a\n    backend: software\n", 3, "expected an integer"),
            ("tiers:\n  - name: a\n    max_amount: { XYZ: 10 }\n    key: a\n    backend: software\n", 3, "'XYZ' is not an ISO 4217 currency code"),
            ("tiers:\n  - name: a\n    max_amount: { USD: 10 }\n    key: a\n    backend: cloud\n", 5, "'cloud' is not a backend"),
            (
                "tiers:\n  - name: a\n    max_amount: { USD: 100 }\n    key: a\n    backend: software\n  - name: b\n    max_amount: { USD: 50 }\n    key: b\n    backend: hsm\n",
                2, "tier 'b' must have a higher bound for USD than tier 'a'"
            ),
            ("tiers:\n  - name: a\n    max_amount: { USD: 10 }\n    key: a\n    backend: software\n    lifetime: 5 minutes\n", 6, "expected a duration"),
            ("tiers: [\n", 2, "not valid YAML"),
            ("issuer: x\n", 1, "'tiers' is required"),
            (
                "tiers:\n  - { name: a, max_amount: { USD: 10 }, key: a, backend: software }\nprofiles:\n  - { name: p, agents: [x], highest_tier: gold }\n", 4,
                "names tier 'gold', which is not defined"
            ),
            (
                "tiers:\n  - { name: a, max_amount: { USD: 10 }, key: a, backend: software }\nprofiles:\n  - { name: p, agents: [x] }\n  - { name: q, agents: [x] }\n",
                4, "agent 'x' is in profiles 'p' and 'q'"
            ),
            (
                "tiers:\n  - { name: a, max_amount: { USD: 10 }, key: a, backend: software }\nprofiles:\n  - name: p\n    agents: [x]\n    categories: { block: [57x4] }\n",
                6, "'57x4' is not a merchant category code"
            ),
            (
                "tiers:\n  - { name: a, max_amount: { USD: 10 }, key: a, backend: software }\nbudgets:\n  - { agent: x, limit: { USD: 5 }, window: fortnight }\n",
                4, "expected a duration"
            ),
            (
                "tiers:\n  - { name: a, max_amount: { USD: 10 }, key: a, backend: software }\nlimits:\n  idle_timeout: 60s\n", 4,
                "must be longer than the longest wait of a FETCH_AUTHORIZATION (60s)"
            ),
        ]
    )
    func mistakes(_ yaml: String, line: Int, reason: String) {
        let error = #expect(throws: ConfigurationError.self) { try self.parse(yaml) }
        #expect(error?.line == line, "\(error?.description ?? "")")
        #expect(error?.description.contains(reason) == true, "\(error?.description ?? "")")
        #expect(error?.description.hasPrefix("countersign.yaml:") == true)
    }

    @Test("a missing file is refused")
    func missingFile() {
        let error = #expect(throws: ConfigurationError.self) { try ServerConfiguration.load(path: "/nonexistent/countersign.yaml") }
        #expect(error?.description == "/nonexistent/countersign.yaml: cannot read the configuration file")
    }

    @Test("a non-loopback listener without TLS is refused unless the operator insists")
    func plaintextOnTheNetwork() throws {
        var configuration = try self.parse(Self.valid.replacingOccurrences(of: "127.0.0.1", with: "0.0.0.0"))
        let error = #expect(throws: ConfigurationError.self) { try configuration.validateTransportSecurity() }
        #expect(error?.reason.contains("without TLS") == true)
        configuration.insecurePlaintext = true
        try configuration.validateTransportSecurity()
        configuration.insecurePlaintext = false
        configuration.tls = .init(certificatePath: "c.pem", privateKeyPath: "k.pem")
        try configuration.validateTransportSecurity()
    }

    @Test("the console: an https origin (plain http only on localhost), an rp id the origin's host ends with, and TLS off loopback, whatever the operator says")
    func console() throws {
        let console = try self.parse(Self.valid + "\nconsole: { origin: \"https://approvals.example.com\", rp_id: example.com, session_lifetime: 10m }\n")
        #expect(console.console?.rpID == "example.com")
        #expect(console.console?.sessionLifetime == .seconds(600))
        #expect(try self.parse(Self.valid + "\nconsole: { origin: \"http://localhost:7680\" }\n").console?.rpID == "localhost")
        for (bad, reason) in [
            ("{ origin: \"http://approvals.example.com\" }", "must be https"), ("{ origin: \"https://a.example.com/console\" }", "nothing after it"),
            ("{ origin: \"https://a.example.com\", rp_id: other.com }", "suffix of it"), ("{ rp_id: localhost }", "needs 'origin'"),
            ("{ origin: \"https://a.example.com\", session_lifetime: 2d }", "session_lifetime"),
        ] {
            let error = #expect(throws: ConfigurationError.self, "\(bad)") { try self.parse(Self.valid + "\nconsole: \(bad)\n") }
            #expect(error?.reason.contains(reason) == true, "\(bad): \(error?.reason ?? "")")
        }
        var exposed = try self.parse(
            Self.valid + "\nhttp: { address: 0.0.0.0, port: 7680 }\ninsecure_plaintext: true\nconsole: { origin: \"https://approvals.example.com\" }\n")
        let refused = #expect(throws: ConfigurationError.self) { try exposed.validateTransportSecurity() }
        #expect(refused?.reason.contains("refusing to serve the approvals console on 0.0.0.0:7680 without TLS") == true, "\(refused?.reason ?? "")")
        exposed.console?.tls = .init(certificatePath: "c.pem", privateKeyPath: "k.pem")
        try exposed.validateTransportSecurity()
        // Loopback is an address, not a name that starts like one.
        for (host, loopback) in [("127.0.0.1", true), ("127.1.2.3", true), ("localhost", true), ("::1", true), ("127.example.com", false), ("127.0.0", false)] {
            #expect(ServerConfiguration.Endpoint(host: host, port: 1).isLoopback == loopback, "\(host)")
        }
    }

    @Test("one duration parser: a whole number and ms, s, m, h or d; anything else is refused, not guessed")
    func durations() {
        #expect(DurationText.parse("250ms") == .milliseconds(250))
        #expect(DurationText.parse("5s") == .seconds(5))
        #expect(DurationText.parse("2m") == .seconds(120))
        #expect(DurationText.parse("1h") == .seconds(3600))
        #expect(DurationText.parse("30d") == .seconds(30 * 86_400))
        #expect(DurationText.parse("0s") == .zero)
        for refused in ["", "s", "5", "1.5s", "-5s", "+5s", " 5s", "5 s", "5S", "5sec", "5w", "٥s", "9223372036854775807d"] {
            #expect(DurationText.parse(refused) == nil, "'\(refused)'")
        }
    }
}
