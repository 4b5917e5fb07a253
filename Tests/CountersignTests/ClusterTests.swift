import Audit
import CountersignClient
import Crypto
import Foundation
import Logging
import PostgresLedger
import Signing
import Synchronization
import TestSupport
import Testing
import Wire

/// Three `countersignd` processes on loopback ports, one PostgreSQL database, one SoftHSM token (the same keys for
/// all three: a network HSM is shared the same way).
@Suite("Several countersignd on one PostgreSQL", .serialized, .timeLimit(.minutes(5)))
struct ClusterTests {
    let countersignd = ProcessResult.builtProduct("countersignd")
    let countersign = ProcessResult.builtProduct("countersign")

    struct Server {
        var process: Process
        var port: Int
        var log: URL
        var configuration: URL
    }

    final class Cluster: Sendable {
        let directory: URL
        let environment: [String: String]
        let admin: CredentialFile
        let database: String
        let servers: Mutex<[Server]>

        init(directory: URL, environment: [String: String], admin: CredentialFile, database: String, servers: [Server]) {
            self.directory = directory
            self.environment = environment
            self.admin = admin
            self.database = database
            self.servers = Mutex(servers)
        }

        func server(_ index: Int) -> Server { self.servers.withLock { $0[index] } }

        func stop() async {
            for server in self.servers.withLock({ $0 }) where server.process.isRunning {
                kill(server.process.processIdentifier, SIGTERM)
                await server.process.exited()
            }
        }
    }

    static let policy = """
        profiles:
          - { name: ops-agents, team: ops, agents: [ops-1, ops-2, ops-3, ops-4], budgets: [{ limit: { USD: 25000 }, window: day }] }
        teams:
          - { name: ops, organization: acme, budgets: [{ limit: { USD: 80000 }, window: day }] }
        organizations:
          - { name: acme, budgets: [{ limit: { USD: 60000 }, window: month }] }

        """

    func configuration(in directory: URL, index: Int, postgres: PostgresStoreConfiguration, timeout: String) throws -> URL {
        let fixture = try SoftHSMFixture.shared()
        let yaml = """
            issuer: countersign.cluster-test
            listen: { address: 127.0.0.1, port: 0 }
            http: { address: 127.0.0.1, port: 0 }
            data_dir: \(directory.appendingPathComponent("data-\(index)").path)
            hsm: { module: \(fixture.modulePath), token_label: \(SoftHSMFixture.daemonTokenLabel) }
            store:
              kind: postgres
              host: \(postgres.host)
              port: \(postgres.port)
              database: \(postgres.database)
              user: \(postgres.user)
              password_file: \(postgres.passwordFile ?? "")
              tls: disable
              lost_after: 3s
              timeout: \(timeout)
            audit: { checkpoint_interval: 2s }
            tiers:
              - { name: standard, max_amount: { USD: 50000 }, key: standard, backend: software }
              - { name: high, max_amount: { USD: 5000000 }, key: high, backend: hsm }
              - { name: critical, max_amount: { USD: 50000000 }, key: critical, backend: hsm, approval: { quorum: 2, ttl: 15m } }
            \(Self.policy)
            """
        let url = directory.appendingPathComponent("countersign-\(index).yaml")
        try Data(yaml.utf8).write(to: url)
        return url
    }

    /// Runs `body` with a started cluster and stops every server after, also when `body` throws (a test that
    /// fails leaves no process behind). Without PostgreSQL (and none required) `body` is not run.
    func withCluster(
        _ name: String, count: Int = 3, on postgresServer: PostgresTestServer? = nil, timeout: String = "5s", _ body: (Cluster) async throws -> Void
    ) async throws {
        guard let cluster = try await self.cluster(name, count: count, on: postgresServer, timeout: timeout) else { return }
        do {
            try await body(cluster)
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    /// A token and a database of the test's own, `countersignd init` once, then `count` servers.
    func cluster(_ name: String, count: Int = 3, on postgresServer: PostgresTestServer? = nil, timeout: String = "5s") async throws -> Cluster? {
        guard let postgresServer = try postgresServer ?? PostgresTestServer.available() else { return nil }
        let postgres = try await postgresServer.freshDatabase()
        let fixture = try SoftHSMFixture.shared()
        let directory = fixture.directory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let hsm = directory.appendingPathComponent("hsm")
        try await SoftHSMFixture.initializeToken(
            in: hsm, label: SoftHSMFixture.daemonTokenLabel, soPIN: "so-\(UUID().uuidString.prefix(8))", userPIN: fixture.userPIN, module: fixture.modulePath
        )
        var environment = fixture.environment()
        environment["SOFTHSM2_CONF"] = hsm.appendingPathComponent("softhsm2.conf").path
        environment["COUNTERSIGN_TOKEN_LABEL"] = SoftHSMFixture.daemonTokenLabel
        let configurations = try (0..<count).map { try self.configuration(in: directory, index: $0, postgres: postgres, timeout: timeout) }
        var first = environment
        first["COUNTERSIGN_CONFIG"] = configurations[0].path
        let initialized = try await ProcessResult.run(executable: self.countersignd, arguments: ["init"], environment: first)
        #expect(initialized.status == 0, "\(initialized.standardError)")
        let admin = try CredentialFile.read(path: directory.appendingPathComponent("data-0/admin.credential").path)
        var servers: [Server] = []
        for (index, configuration) in configurations.enumerated() {
            servers.append(try await self.serve(configuration, environment: environment, log: directory.appendingPathComponent("server-\(index).log")))
        }
        return Cluster(directory: directory, environment: environment, admin: admin, database: postgres.database, servers: servers)
    }

    func serve(_ configuration: URL, environment: [String: String], log: URL) async throws -> Server {
        var environment = environment
        environment["COUNTERSIGN_CONFIG"] = configuration.path
        let (process, port) = try await DaemonTests().serve(environment: environment, log: log, arguments: ["--log-level", "info"])
        return Server(process: process, port: port, log: log, configuration: configuration)
    }

    func connect(_ cluster: Cluster, _ server: Int, _ credential: CredentialFile) async throws -> CountersignClient {
        try await CountersignClient.connect(host: "127.0.0.1", port: cluster.server(server).port, credential: credential)
    }

    func agent(_ id: String, role: Role = .agent, through admin: CountersignClient) async throws -> CredentialFile {
        let key = CredentialPrivateKey.generate(.es256)
        _ = try await admin.addAgent(id: id, publicKey: key.publicKey, role: role)
        return CredentialFile(principal: id, key: key, server: nil)
    }

    /// What the clients of a race were given and refused, across their tasks.
    final class Tally: Sendable {
        let authorized = Mutex<[String: Int64]>([:])
        let refusals = Mutex<[ErrorCode: Int]>([:])
    }

    static func request(_ amount: Int64, key: String = UUID().uuidString) -> AuthorizeRequest {
        TestServer.request(amount, key: key)
    }

    @Test("2,000 requests over three servers: no budget passed, every server reports the same spending; one key to three servers is one authorization")
    func budgetsAndIdempotency() async throws {
        try await self.withCluster("cluster-budgets") { cluster in
            let admin = try await self.connect(cluster, 0, cluster.admin)
            var created: [CredentialFile] = []
            for index in 1...4 { created.append(try await self.agent("ops-\(index)", through: admin)) }
            let agents = created

            // 12 clients (4 agents × 3 servers), 2,000 requests in all, amounts from 1.00 to 9.99.
            let tally = Tally()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<12 {
                    group.addTask {
                        let agent = agents[client % 4]
                        let connection = try await self.connect(cluster, client % 3, agent)
                        var generator = SplitMix64(state: UInt64(client))
                        for _ in 0..<(2_000 / 12 + (client < 2_000 % 12 ? 1 : 0)) {
                            let amount = Int64(100 + generator.next() % 900)
                            do {
                                _ = try await connection.authorize(Self.request(amount))
                                tally.authorized.withLock { $0[agent.principal, default: 0] += amount }
                            } catch let error as WireError {
                                tally.refusals.withLock { $0[error.code, default: 0] += 1 }
                            }
                        }
                        await connection.close()
                    }
                }
                try await group.waitForAll()
            }
            let spent = tally.authorized.withLock { $0 }
            let total = spent.values.reduce(0, +)
            #expect(tally.refusals.withLock { $0.keys.sorted { $0.rawValue < $1.rawValue } } == [.budgetExceeded])
            #expect(total <= 60_000, "the organization's budget is 600.00")
            #expect(total > 60_000 - 999, "refused only when the next amount did not fit")
            for (agent, amount) in spent { #expect(amount <= 25_000, "\(agent)") }
            // Every server reports the same spending, equal to what the clients were given.
            for server in 0..<3 {
                let client = try await self.connect(cluster, server, cluster.admin)
                for agent in agents {
                    let report = try await client.budgets(agent: agent.principal)
                    let lines = Dictionary(uniqueKeysWithValues: report.budgets.map { ($0.scope, $0.spent) })
                    #expect(lines["agent:\(agent.principal)"] == spent[agent.principal, default: 0], "server \(server), \(agent.principal)")
                    #expect(lines["team:ops"] == total, "server \(server)")
                    #expect(lines["org:acme"] == total, "server \(server)")
                }
                await client.close()
            }

            // The same key and body to the three servers at once: one authorization, the same JWS from each.
            let fresh = try await self.agent("ops-idem", through: admin)
            let request = Self.request(150, key: "one-key-\(UUID().uuidString)")
            let jwses = try await withThrowingTaskGroup(of: String.self) { group in
                for server in 0..<3 {
                    group.addTask {
                        let connection = try await self.connect(cluster, server, fresh)
                        defer { Task { await connection.close() } }
                        return try await connection.authorize(request).jws
                    }
                }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
            #expect(jwses.count == 1)

            // Proofs from any server, of entries any server wrote, against checkpoints signed by the audit key.
            let auditKeys = AuditLogTests.auditKeys(try await admin.keys())
            var sizes: [Int] = []
            for server in 0..<3 {
                let client = try await self.connect(cluster, server, cluster.admin)
                let proof = try await client.auditProof(index: Int64(100 + server))
                let leaf = Array(SHA256.hash(data: [0x00] + Array(proof.entry.utf8)))
                let signed = try Checkpoint.parse(proof.checkpoint)
                #expect(auditKeys.contains(where: signed.isSigned(by:)), "server \(server)")
                let path = proof.auditPath.compactMap { Data(base64Encoded: $0).map(Array.init) }
                #expect(
                    Merkle.verifyInclusion(leafHash: leaf, index: Int(proof.index), treeSize: proof.treeSize, proof: path, root: signed.checkpoint.rootHash))
                sizes.append(proof.treeSize)
                await client.close()
            }
            let last = try await self.connect(cluster, 2, cluster.admin)
            let consistency = try await last.auditConsistency(oldSize: sizes.min()!)
            let old = try Checkpoint.parse(consistency.oldCheckpoint)
            let new = try Checkpoint.parse(consistency.newCheckpoint)
            #expect(
                Merkle.verifyConsistency(
                    oldSize: old.checkpoint.size, newSize: new.checkpoint.size, oldRoot: old.checkpoint.rootHash, newRoot: new.checkpoint.rootHash,
                    proof: consistency.proof.compactMap { Data(base64Encoded: $0).map(Array.init) }))
            await last.close()
            await admin.close()

            // One log: every server's start is in it, and it verifies from the database against the signed checkpoints.
            await cluster.stop()
            let jwks = cluster.directory.appendingPathComponent("jwks.json")
            let keys = try await self.keySet(cluster)
            try JSONEncoder().encode(keys).write(to: jwks)
            let verified = try await ProcessResult.run(
                executable: self.countersign, arguments: ["audit", "verify", "--config", cluster.server(0).configuration.path, "--jwks", jwks.path],
                environment: [:])
            #expect(verified.status == 0, "\(verified.standardError)")
            #expect(verified.standardOutput.hasPrefix("audit log OK: "), "\(verified.standardOutput)")
        }
    }

    /// The key set, from a server started for the purpose (the cluster is stopped).
    func keySet(_ cluster: Cluster) async throws -> JWKSet {
        let server = try await self.serve(
            cluster.server(0).configuration, environment: cluster.environment, log: cluster.directory.appendingPathComponent("keys.log"))
        defer {
            kill(server.process.processIdentifier, SIGTERM)
        }
        let client = try await CountersignClient.connect(host: "127.0.0.1", port: server.port, credential: cluster.admin)
        let keys = try await client.keys()
        await client.close()
        return keys
    }

    @Test("approved through two other servers, the agent waiting on the first is woken; a revocation on one server refuses the agent on another")
    func approvalsAndRevocationAcrossServers() async throws {
        try await self.withCluster("cluster-approvals") { cluster in
            let admin = try await self.connect(cluster, 0, cluster.admin)
            let agent = try await self.agent("buyer-1", through: admin)
            let alice = try await self.agent("alice", role: .approver, through: admin)
            let bob = try await self.agent("bob", role: .approver, through: admin)
            await admin.close()

            let onA = try await self.connect(cluster, 0, agent)
            guard case .pendingApproval(let pending) = try await onA.submit(Self.request(10_000_000)) else {
                throw FixtureError(reason: "a critical amount waits for approval")
            }
            let waiting = Task { try await onA.fetchAuthorization(id: pending.authorizationID, waitSeconds: 60) }
            let approverB = try await self.connect(cluster, 1, alice)
            let approverC = try await self.connect(cluster, 2, bob)
            _ = try await approverB.approve(id: pending.authorizationID)
            _ = try await approverC.approve(id: pending.authorizationID)
            guard case .authorized(let authorization) = try await waiting.value else {
                throw FixtureError(reason: "the quorum was reached on other servers")
            }
            // Woken by the change made on the other servers: without it the wait would end after 60 s still pending.
            #expect(!authorization.jws.isEmpty)
            await approverB.close()
            await approverC.close()

            // Revoked through server C: the agent's next request on server A is refused, without a restart.
            let adminC = try await self.connect(cluster, 2, cluster.admin)
            _ = try await adminC.revokeAgent(id: "buyer-1")
            await adminC.close()
            try await eventually("the revocation reaches server A", limit: .seconds(10)) {
                do {
                    _ = try await onA.authorize(Self.request(100))
                    return false
                } catch let error as WireError {
                    return error.code == .principalRevoked
                } catch {
                    return false
                }
            }
            await onA.close()
        }
    }

    /// The JWSes each server answered, and whether the clients should stop.
    final class Answers: Sendable {
        let byServer = Mutex<[Int: [String]]>([:])
        let stop = Atomic<Bool>(false)

        var count: Int { self.byServer.withLock { $0.values.map(\.count).reduce(0, +) } }
    }

    /// Every entry of the log, read from a server.
    func entries(through client: CountersignClient) async throws -> [AuditEntry] {
        var entries: [AuditEntry] = []
        var from: Int64 = 0
        while true {
            let page = try await client.auditEntries(from: from, limit: 500)
            for item in page.entries { entries.append(try JSONDecoder().decode(AuditEntry.self, from: Data(item.entry.utf8))) }
            guard let last = page.entries.last else { return entries }
            from = last.index + 1
        }
    }

    @Test(
        "the checkpoint signer killed with -9 under load: another takes the lease, the indexes it reserved are filled, every answer it gave is in the log, once"
    )
    func leaderKilled() async throws {
        try await self.withCluster("cluster-crash") { cluster in
            let admin = try await self.connect(cluster, 0, cluster.admin)
            let buyer = try await self.agent("buyer-crash", through: admin)
            await admin.close()
            var leader = -1
            try await eventually("a server takes the checkpoint lease") {
                leader =
                    (0..<3).first {
                        ((try? String(contentsOf: cluster.server($0).log, encoding: .utf8)) ?? "").contains("this server signs the cluster's checkpoints now")
                    } ?? -1
                return leader >= 0
            }
            let answers = Answers()
            let clients = (0..<6).map { index in
                Task {
                    let server = index % 3
                    guard let connection = try? await self.connect(cluster, server, buyer) else { return }
                    while !answers.stop.load(ordering: .relaxed),
                        let authorization = try? await connection.authorize(Self.request(index % 2 == 0 ? 1_000 : 100_000))
                    {
                        answers.byServer.withLock { $0[server, default: []].append(authorization.jws) }
                    }
                    await connection.close()
                }
            }
            // An agent with the three addresses, the doomed server first: it must not see a single failed payment.
            let failover = try ClusterClient(
                endpoints: ([leader] + (0..<3).filter { $0 != leader }).map { ClusterClient.Endpoint(host: "127.0.0.1", port: cluster.server($0).port) },
                principal: buyer.principal, key: try buyer.key())
            let failoverAnswers = Answers()
            let failoverRun = Task {
                while !answers.stop.load(ordering: .relaxed) {
                    do {
                        let authorization = try await failover.authorize(Self.request(1_000))
                        failoverAnswers.byServer.withLock { $0[0, default: []].append(authorization.jws) }
                    } catch {
                        failoverAnswers.byServer.withLock { $0[-1, default: []].append("\(error)") }
                    }
                }
            }
            let failedOver = { failoverAnswers.byServer.withLock { $0[0]?.count ?? 0 } }
            try await eventually("clients are authorizing on every server, the failover client on the doomed one") {
                answers.byServer.withLock { $0.count == 3 && $0.values.allSatisfy { $0.count >= 50 } } && failedOver() >= 20
            }
            kill(cluster.server(leader).process.processIdentifier, SIGKILL)
            await cluster.server(leader).process.exited()
            let atKill = answers.count
            let failoverAtKill = failedOver()
            try await eventually("the survivors go on, and the failover client with them") {
                answers.count >= atKill + 200 && failedOver() >= failoverAtKill + 20
            }
            answers.stop.store(true, ordering: .relaxed)
            for client in clients { await client.value }
            await failoverRun.value
            await failover.close()
            let failures = failoverAnswers.byServer.withLock { $0[-1] ?? [] }
            #expect(failures.isEmpty, "\(failures.prefix(3))")

            // Every index handed out (the dead server's too) is in a survivor's checkpoint: its holes were filled.
            let reserved = try #require(try await PostgresTestServer.shared?.integers("SELECT last_value FROM auditIndex", database: cluster.database).first)
            let survivor = (0..<3).first { $0 != leader }!
            let client = try await self.connect(cluster, survivor, cluster.admin)
            try await eventually("a checkpoint covers every reserved index", limit: .seconds(60)) {
                ((try? await client.auditCheckpoint())?.size ?? 0) > Int(reserved)
            }
            let entries = try await self.entries(through: client)
            await client.close()
            #expect(entries.map(\.index) == Array(0..<Int64(entries.count)), "one sequence, no gap")
            var logged: [String: Int] = [:]
            for entry in entries { if let hash = entry.decision?.jwsSHA256 { logged[hash, default: 0] += 1 } }
            let dead = answers.byServer.withLock { $0[leader] ?? [] }
            #expect(dead.count >= 50)
            for jws in answers.byServer.withLock({ $0.values.flatMap { $0 } }) + failoverAnswers.byServer.withLock({ $0[0] ?? [] }) {
                #expect(logged[Base64URL.encode(Array(SHA256.hash(data: Data(jws.utf8))))] == 1, "every answer has exactly one entry")
            }
            let lease = (0..<3).filter {
                $0 != leader
                    && ((try? String(contentsOf: cluster.server($0).log, encoding: .utf8)) ?? "").contains("this server signs the cluster's checkpoints now")
            }
            #expect(lease.count == 1, "one survivor took the checkpoint lease")

            await cluster.stop()
            let jwks = cluster.directory.appendingPathComponent("jwks.json")
            try JSONEncoder().encode(try await self.keySet(cluster)).write(to: jwks)
            let verified = try await ProcessResult.run(
                executable: self.countersign, arguments: ["audit", "verify", "--config", cluster.server(0).configuration.path, "--jwks", jwks.path],
                environment: [:])
            #expect(verified.status == 0, "\(verified.standardError)")
        }
    }

    /// The repository's `hsm-config/postgres.sh`.
    static let postgresScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("hsm-config/postgres.sh")

    @Test(
        "PostgreSQL stopped under load: retryable refusals within the store's timeout, nothing signed without its record, not ready; back: it serves again by itself"
    )
    func databaseOutage() async throws {
        guard try PostgresTestServer.available() != nil else { return }
        // A PostgreSQL of the test's own, so that stopping it harms no other test.
        let directory = URL(fileURLWithPath: "/tmp/countersign-outage-\(UUID().uuidString.prefix(8))")
        let started = try await ProcessResult.run(
            executable: URL(fileURLWithPath: "/bin/bash"), arguments: [Self.postgresScript.path, "start", directory.path], environment: [:])
        #expect(started.status == 0, "\(started.standardError)")
        let port = try #require(
            Int(try String(contentsOf: directory.appendingPathComponent("port"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        let own = PostgresTestServer(
            host: "127.0.0.1", port: port, database: "countersign", user: "countersign", passwordFile: directory.appendingPathComponent("password").path)
        let stopPostgres = {
            _ = try? await ProcessResult.run(
                executable: URL(fileURLWithPath: "/bin/bash"), arguments: [Self.postgresScript.path, "stop", directory.path], environment: [:])
        }
        do {
            try await self.withCluster("outage", count: 1, on: own, timeout: "2s") { cluster in
                let admin = try await self.connect(cluster, 0, cluster.admin)
                let buyer = try await self.agent("buyer-outage", through: admin)
                await admin.close()
                let agent = try await self.connect(cluster, 0, buyer)
                var answered: [String] = []
                answered.append(try await agent.authorize(Self.request(1_000)).jws)
                let http = try DaemonTests.httpPort(in: cluster.server(0).log)
                #expect(await DaemonTests.httpStatus(port: http, path: "/readyz") == 200)

                let paused = try await ProcessResult.run(
                    executable: URL(fileURLWithPath: "/bin/bash"), arguments: [Self.postgresScript.path, "pause", directory.path], environment: [:])
                #expect(paused.status == 0, "\(paused.standardError)")
                var codes: Set<ErrorCode> = []
                for _ in 0..<5 {
                    let asked = ContinuousClock.now
                    do {
                        answered.append(try await agent.authorize(Self.request(1_000)).jws)
                        Issue.record("an authorization was answered while the database was down")
                    } catch let error as WireError {
                        codes.insert(error.code)
                        #expect(error.retryable, "\(error)")
                    }
                    // Bounded by the store's timeout (2 s) and the request's own steps, not by the pool's minute-long patience.
                    #expect(ContinuousClock.now - asked < .seconds(15))
                }
                #expect(codes.isSubset(of: [.storeUnavailable, .auditUnavailable]), "\(codes)")
                try await eventually("not ready") { await DaemonTests.httpStatus(port: http, path: "/readyz") == 503 }

                let resumed = try await ProcessResult.run(
                    executable: URL(fileURLWithPath: "/bin/bash"), arguments: [Self.postgresScript.path, "resume", directory.path], environment: [:])
                #expect(resumed.status == 0, "\(resumed.standardError)")
                try await eventually("authorizations again, without a restart", limit: .seconds(90)) {
                    guard let jws = try? await agent.authorize(Self.request(1_000)).jws else { return false }
                    answered.append(jws)
                    return true
                }
                try await eventually("ready again") { await DaemonTests.httpStatus(port: http, path: "/readyz") == 200 }

                // Every answer the agent got has its entry.
                let auditor = try await self.connect(cluster, 0, cluster.admin)
                var logged: Set<String> = []
                for entry in try await self.entries(through: auditor) { if let hash = entry.decision?.jwsSHA256 { logged.insert(hash) } }
                await auditor.close()
                for jws in answered { #expect(logged.contains(Base64URL.encode(Array(SHA256.hash(data: Data(jws.utf8)))))) }
                await agent.close()
            }
        } catch {
            await stopPostgres()
            throw error
        }
        await stopPostgres()
    }
}
