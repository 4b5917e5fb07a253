import ArgumentParser
import CountersignClient
import CountersignConfiguration
import Crypto
import Foundation
import Histogram
import NIOCore
import NIOPosix
import PKCS11
import Signing
import Synchronization
import Wire

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `countersign bench`: a load generator on `CountersignClient`, with the raw signing ceilings of the same
/// machine measured in the same invocation (`--baseline`).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Load the server with authorize requests and print throughput, latency percentiles, errors by code and the server's memory.",
        discussion: "Needs an admin credential: the bench registers its own agent. Amounts are chosen to land in each tier of the mix."
    )

    @OptionGroup var client: ClientOptions
    @OptionGroup var hsm: HSMOptions

    @Option(help: "Connections.")
    var connections = 4

    @Option(help: "Requests in flight per connection (pipelining depth).")
    var depth = 16

    @Option(help: "How long to measure, e.g. 10s.")
    var duration = "10s"

    @Option(help: "Stop after this many requests instead.")
    var requests: Int?

    @Option(help: "Load before measuring, e.g. 2s.")
    var warmup = "2s"

    @Option(help: "Tier weights, e.g. micro=60,standard=30,high=10 (default: the first tier only).")
    var mix: String?

    @Option(help: "Agents the load comes from, each registered by the bench; connections are shared among them in turn.")
    var agents = 1

    @Option(help: "Idempotency keys: random (UUID version 4, the costliest for the server) or time-ordered (version 7).")
    var keys: KeyKind = .random

    func validate() throws {
        guard self.agents >= 1, self.agents <= self.connections else {
            throw ValidationError("--agents is from 1 to --connections (\(self.connections)): each agent needs a connection of its own")
        }
    }

    enum KeyKind: String, ExpressibleByArgument, Sendable {
        case random
        case timeOrdered = "time-ordered"
    }

    @Option(help: "Currency of the requests.")
    var currency = "USD"

    @Option(help: "Open loop: this many requests per second in total (default: closed loop, as fast as answered).")
    var rate: Double?

    @Flag(name: .customLong("at-half"), help: "After the closed-loop run, run open loop at half its throughput and report that latency too.")
    var atHalf = false

    @Flag(help: "First measure the raw ceilings: swift-crypto P-256 and the token's C_Sign, on --threads threads.")
    var baseline = false

    @Option(help: "Threads for the baselines (default: the machine's cores).")
    var threads: Int?

    private var threadCount: Int { self.threads ?? System.coreCount }

    @Option(name: .customLong("baseline-seconds"), help: "How long each baseline runs.")
    var baselineSeconds = 3

    @Option(name: .customLong("idle-connections"), help: "Instead of load: hold this many authenticated connections open and report the server's memory.")
    var idleConnections: Int?

    @Option(
        name: .customLong("audit-flood"),
        help:
            "Instead of the closed loop: agents at --rate (default 300/s) alone, then while auditors pipeline this many AUDIT_ENTRIES each and close half-way.")
    var auditFlood: Int?

    @Option(name: .customLong("auditors"), help: "Auditor connections for --audit-flood.")
    var auditors = 1

    @Option(help: "Rounds of --audit-flood (alone, then flooded, each round); the medians are compared.")
    var rounds = 3

    @Option(
        help:
            "Instead of the closed loop: agents at --rate (default 300/s) for this long, e.g. 10m, beside rounds of abuse; reports the server's memory over time."
    )
    var soak: String?

    @Option(name: .customLong("soak-abuse"), help: "The abuse of --soak: connections, auditor, or both (comma-separated).")
    var soakAbuse = "connections,auditor"

    @Option(help: "host:port of the server's HTTP listener, for its memory (default: the server's host, port 7680).")
    var http: String?

    func run() async throws {
        var ceilings: (software: Double, hsm: Double)?
        if self.baseline {
            let software = Baselines.swiftCrypto(threads: self.threadCount, seconds: self.baselineSeconds)
            print(String(format: "baseline swift-crypto P-256: %.0f signatures/s on %d threads", software, self.threadCount))
            let hsm = try await Baselines.pkcs11(options: self.hsm, threads: self.threadCount, seconds: self.baselineSeconds)
            print("baseline PKCS#11 C_Sign (\(self.hsm.resolvedTokenLabel)): " + String(format: "%.0f signatures/s on %d sessions", hsm, self.threadCount))
            ceilings = (software, hsm)
        }

        let admin = try await self.client.connect()
        let (host, port) = try self.client.endpoint(credential: nil)
        let run = UUID().uuidString.prefix(8).lowercased()
        var credentials: [CredentialFile] = []
        for index in 0..<self.agents {
            let key = CredentialPrivateKey.generate(.es256)
            let agentID = "bench-" + run + (self.agents > 1 ? "-\(index)" : "")
            _ = try await admin.addAgent(id: agentID, publicKey: key.publicKey)
            credentials.append(CredentialFile(principal: agentID, key: key, server: "\(host):\(port)"))
        }
        let keySet = try await admin.keys()
        await admin.close()
        let credential = credentials[0]

        if let idle = self.idleConnections {
            try await self.holdIdle(idle, credential: credential, host: host, port: port)
            return
        }

        let targets = try Self.targets(keySet: keySet, mix: self.mix, currency: self.currency)
        var clients: [CountersignClient] = []
        for index in 0..<self.connections {
            clients.append(try await CountersignClient.connect(host: host, port: port, credential: credentials[index % credentials.count]))
        }
        defer { for client in clients { Task { await client.close() } } }
        var generator = LoadGenerator(clients: clients, depth: self.depth, targets: targets, currency: self.currency)
        generator.timeOrderedKeys = self.keys == .timeOrdered
        if let soak = self.soak {
            let client = self.client
            let http = self.http
            try await Soak(
                generator: generator, rate: self.rate ?? 300, duration: try Self.duration(soak), host: host, port: port,
                memory: { await Self.serverMemory(host: host, http: http) }, admin: { try await client.connect() },
                kinds: Set(self.soakAbuse.split(separator: ",").map(String.init))
            ).run()
            return
        }
        if let flood = self.auditFlood {
            let warmup = try Self.duration(self.warmup)
            if warmup > .zero { _ = await generator.run(duration: warmup, requests: nil, rate: self.rate ?? 300) }
            let client = self.client
            try await AuditFlood(
                generator: generator, rate: self.rate ?? 300, duration: try Self.duration(self.duration), requestsPerAuditor: flood, auditors: self.auditors,
                admin: { try await client.connect() }
            ).run(rounds: self.rounds)
            if let memory = await self.serverMemory(host: host) {
                print(String(format: "server resident memory: %.1f MB", Double(memory) / 1_048_576))
            }
            return
        }
        let mixText = targets.map { "\($0.tier)=\($0.weight) (\($0.backend))" }.joined(separator: ",")

        let warmup = try Self.duration(self.warmup)
        if warmup > .zero { _ = await generator.run(duration: warmup, requests: nil, rate: nil) }
        let duration = try Self.duration(self.duration)
        let mode = self.rate.map { String(format: "open loop at %.0f req/s", $0) } ?? "closed loop"
        let agentsText = self.agents > 1 ? ", \(self.agents) agents" : ""
        print("scenario: \(mode), \(self.connections) connections x depth \(self.depth)\(agentsText), mix \(mixText), \(self.keys.rawValue) idempotency keys")
        let result = await self.measuringServerCPU(host: host) { await generator.run(duration: duration, requests: self.requests, rate: self.rate) }
        Self.report(result, openLoop: self.rate != nil)
        Self.ratio(result, targets: targets, ceilings: ceilings)

        if self.atHalf, self.rate == nil, result.throughput > 0 {
            let half = result.throughput / 2
            print(String(format: "scenario: open loop at half the maximum, %.0f req/s", half))
            let paced = await self.measuringServerCPU(host: host) { await generator.run(duration: duration, requests: nil, rate: half) }
            Self.report(paced, openLoop: true)
        }
        if let memory = await self.serverMemory(host: host) {
            print(String(format: "server resident memory: %.1f MB", Double(memory) / 1_048_576))
        }
    }

    /// Opens `count` authenticated connections, waits for the server to settle, reports its memory.
    private func holdIdle(_ count: Int, credential: CredentialFile, host: String, port: Int) async throws {
        let before = await self.serverMemory(host: host)
        var clients: [CountersignClient] = []
        for _ in 0..<count {
            clients.append(try await CountersignClient.connect(host: host, port: port, credential: credential))
        }
        try await Task.sleep(for: .seconds(1))
        let held = await self.serverMemory(host: host)
        print("scenario: \(count) idle authenticated connections")
        if let before, let held {
            print(
                String(
                    format: "server resident memory: %.1f MB before, %.1f MB with them (%.1f KB per connection)", Double(before) / 1_048_576,
                    Double(held) / 1_048_576, Double(held - before) / 1024 / Double(max(count, 1))))
        }
        for client in clients { await client.close() }
        print("errors: none")
    }

    static func report(_ result: LoadResult, openLoop: Bool = false) {
        print(String(format: "requests: %d answered in %.2f s = %.0f req/s", result.answered, result.seconds, result.throughput))
        let ms = { (value: UInt64) in String(format: "%.2f", Double(value) / 1000) }
        func percentiles(_ name: String, _ histogram: Histogram<UInt64>) {
            print(
                "\(name) ms: p50 \(ms(histogram.valueAtPercentile(50)))  p90 \(ms(histogram.valueAtPercentile(90)))  p99 \(ms(histogram.valueAtPercentile(99)))"
                    + "  p99.9 \(ms(histogram.valueAtPercentile(99.9)))  max \(ms(histogram.max))"
            )
        }
        percentiles("latency", result.latencies)
        // Open loop: latency counts from when a request was due; this leaves out the generator's own lateness.
        if openLoop { percentiles("service", result.serviceTimes) }
        print("errors: " + (result.errors.isEmpty ? "none" : result.errors.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))
    }

    static func ratio(_ result: LoadResult, targets: [TierTarget], ceilings: (software: Double, hsm: Double)?) {
        guard let ceilings else { return }
        let backends = Set(targets.map(\.backend))
        if backends == ["software"], ceilings.software > 0 {
            print(String(format: "ratio to the swift-crypto ceiling: %.0f%%", result.throughput / ceilings.software * 100))
        } else if backends == ["hsm"], ceilings.hsm > 0 {
            print(String(format: "ratio to the C_Sign ceiling: %.0f%%", result.throughput / ceilings.hsm * 100))
        }
    }

    /// The tiers to ask for, with an amount in each: one minor unit above the tier below's bound.
    static func targets(keySet: JWKSet, mix: String?, currency: String) throws -> [TierTarget] {
        var tiers: [(name: String, backend: String, bound: Int64)] = []
        for key in keySet.keys where key.tier != "audit" {
            guard let bound = key.maxAmount[currency], !tiers.contains(where: { $0.name == key.tier }) else { continue }
            tiers.append((key.tier, key.backend, bound))
        }
        tiers.sort { $0.bound < $1.bound }
        guard !tiers.isEmpty else { throw ValidationError("no tier accepts \(currency)") }
        var weights: [String: Int] = [:]
        if let mix {
            for part in mix.split(separator: ",") {
                let pair = part.split(separator: "=")
                guard pair.count == 2, let weight = Int(pair[1]), weight > 0 else { throw ValidationError("--mix is tier=weight,…, not '\(part)'") }
                guard tiers.contains(where: { $0.name == pair[0] }) else {
                    throw ValidationError("no tier '\(pair[0])'; the tiers are \(tiers.map(\.name).joined(separator: ", "))")
                }
                weights[String(pair[0])] = weight
            }
        } else {
            weights[tiers[0].name] = 1
        }
        return tiers.enumerated().compactMap { index, tier in
            weights[tier.name].map { TierTarget(tier: tier.name, backend: tier.backend, amount: index == 0 ? 1 : tiers[index - 1].bound + 1, weight: $0) }
        }
    }

    static func duration(_ text: String) throws -> Duration {
        guard let duration = DurationText.parse(text) else { throw ValidationError("'\(text)' is not a duration such as \(DurationText.examples)") }
        return duration
    }

    /// The server's resident memory from its /metrics.
    private func serverMemory(host: String) async -> Int? {
        await Self.serverMemory(host: host, http: self.http)
    }

    static func serverMemory(host: String, http: String?) async -> Int? {
        await Self.serverMetric("process_resident_memory_bytes", host: host, http: http).map { Int($0) }
    }

    /// A series without labels from the server's /metrics.
    static func serverMetric(_ name: String, host: String, http: String?) async -> Double? {
        await self.serverMetrics([name], host: host, http: http)[name]
    }

    /// Series without labels from one scrape of the server's /metrics.
    static func serverMetrics(_ names: Set<String>, host: String, http: String?) async -> [String: Double] {
        let endpoint = http ?? "\(host.contains(":") ? "[\(host)]" : host):7680"
        guard let url = URL(string: "http://\(endpoint)/metrics"), let (data, _) = try? await URLSession.shared.data(from: url) else { return [:] }
        var values: [String: Double] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: " ")
            if fields.count == 2, names.contains(String(fields[0])), let value = Double(fields[1]) { values[String(fields[0])] = value }
        }
        return values
    }

    /// Runs `body` and prints the server's CPU time per request answered meanwhile, from its own
    /// `process_cpu_seconds_total` before and after (far steadier than throughput on a shared machine), and how many
    /// writes its store's group commits carried each.
    private func measuringServerCPU(host: String, _ body: () async -> LoadResult) async -> LoadResult {
        let names: Set = [
            "process_cpu_seconds_total", "countersign_hsm_signing_cpu_seconds_total", "countersign_store_commits_total",
            "countersign_store_committed_writes_total",
        ]
        let before = await Self.serverMetrics(names, host: host, http: self.http)
        let result = await body()
        let after = await Self.serverMetrics(names, host: host, http: self.http)
        let delta = { (name: String) in after[name].flatMap { end in before[name].map { end - $0 } } }
        if let cpu = delta("process_cpu_seconds_total"), result.answered > 0 {
            print(String(format: "server CPU: %.0f µs per request (%.2f s for %d requests)", cpu / Double(result.answered) * 1e6, cpu, result.answered))
            // Printed where the HSM signed (the audit key's checkpoints alone come to less than a µs per request).
            if let signing = delta("countersign_hsm_signing_cpu_seconds_total"), signing / Double(result.answered) >= 1e-6 {
                // The PKCS#11 module's own work: what a network HSM would do on its own hardware.
                print(String(format: "of which HSM signing: %.0f µs per request (the PKCS#11 module's calls)", signing / Double(result.answered) * 1e6))
            }
        } else {
            print("server CPU: not measured (the server's /metrics did not answer: give --http)")
        }
        if let commits = delta("countersign_store_commits_total"), let writes = delta("countersign_store_committed_writes_total"), commits > 0 {
            print(String(format: "group commit: %.1f writes per transaction (%.0f transactions/s)", writes / commits, commits / result.seconds))
        }
        return result
    }
}

/// The raw signing ceilings of this machine.
enum Baselines {
    /// swift-crypto ECDSA P-256 signatures per second over a JWS-sized message, on `threads` threads.
    static func swiftCrypto(threads: Int, seconds: Int) -> Double {
        let key = P256.Signing.PrivateKey()
        let message = Array(repeating: UInt8(0x61), count: 400)
        let total = Atomic<Int>(0)
        let group = DispatchGroup()
        let deadline = DispatchTime.now() + .seconds(seconds)
        for _ in 0..<threads {
            group.enter()
            Thread.detachNewThread {
                var count = 0
                while DispatchTime.now() < deadline {
                    _ = try? key.signature(for: message)
                    count += 1
                }
                total.add(count, ordering: .relaxed)
                group.leave()
            }
        }
        group.wait()
        return Double(total.load(ordering: .relaxed)) / Double(seconds)
    }

    /// `C_Sign` (CKM_ECDSA, P-256) per second through a session pool of `threads` sessions, with a key pair
    /// that is a session object: the token's storage is not touched.
    static func pkcs11(options: HSMOptions, threads: Int, seconds: Int) async throws -> Double {
        let module = try options.loadModule()
        let token = try options.findToken(on: module)
        let threadPool = NIOThreadPool(numberOfThreads: threads)
        threadPool.start()
        let pool = PKCS11SessionPool(token: token, pin: try options.pin(), configuration: .init(maximumSessions: threads), threadPool: threadPool)
        defer {
            Task {
                await pool.close()
                try? await threadPool.shutdownGracefully()
            }
        }
        let pair = try await pool.withSession { session in
            try session.generateSessionP256SigningKeyPair(label: "countersign-bench", id: Array(UUID().uuidString.utf8.prefix(16)))
        }
        let digest = SHA256.hash(data: Array(repeating: UInt8(0x61), count: 400))
        let deadline = ContinuousClock.now + .seconds(seconds)
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<threads {
                group.addTask {
                    var count = 0
                    while ContinuousClock.now < deadline {
                        _ = try await pool.withSession { session in try session.signECDSA(digest: digest, with: pair.privateKey) }
                        count += 1
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        await pool.close()
        try? await threadPool.shutdownGracefully()
        return Double(counts) / Double(seconds)
    }
}
