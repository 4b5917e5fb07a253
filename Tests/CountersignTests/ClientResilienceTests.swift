import Audit
import CountersignClient
import Crypto
import Foundation
import Ledger
import NIOCore
import NIOPosix
import Synchronization
import TestSupport
import Testing
import Wire

/// The client library's retry, failover and breaker rules (docs/protocol.md "Client behaviour"), against a real
/// server that is killed and restarted, and against a listener that accepts and hangs up.
@Suite struct ClientResilienceTests {
    let daemon = DaemonTests()

    /// What one request ended as.
    final class Outcomes: Sendable {
        let list = Mutex<[(request: AuthorizeRequest, result: Result<String, any Error>)]>([])
        var count: Int { self.list.withLock { $0.count } }
    }

    @Test("a server killed with -9 under load and restarted: every request authorized once or refused with a code, no client hangs")
    func killAndRestart() async throws {
        let port = try DaemonTests.freePort()
        let (directory, environment, admin) = try await self.daemon.initialized("resilience", port: port)
        let (first, _) = try await self.daemon.serve(environment: environment, log: directory.appendingPathComponent("first.log"))
        let adminClient = try await CountersignClient.connect(host: "127.0.0.1", port: port, credential: admin)
        let key = CredentialPrivateKey.generate(.es256)
        _ = try await adminClient.addAgent(id: "agent-resilient", publicKey: key.publicKey)
        let jwks = directory.appendingPathComponent("jwks.json")
        try JSONEncoder().encode(try await adminClient.keys()).write(to: jwks)
        await adminClient.close()

        var policy = ClusterClient.RetryPolicy()
        policy.breakerCooldown = .milliseconds(300)
        let client = try ClusterClient(endpoints: [.init(host: "127.0.0.1", port: port)], principal: "agent-resilient", key: key, policy: policy)
        let outcomes = Outcomes()
        let total = 600
        let workers = (0..<8).map { worker in
            Task {
                for round in 0..<(total / 8) {
                    let request = TestServer.request((round + worker) % 3 == 0 ? 100_000 : 1_000)
                    let result = await Self.pay(request, with: client)
                    outcomes.list.withLock { $0.append((request, result)) }
                }
            }
        }
        try await eventually("the clients are authorizing") { outcomes.count >= 150 }
        kill(first.processIdentifier, SIGKILL)
        await first.exited()
        let (second, _) = try await self.daemon.serve(environment: environment, log: directory.appendingPathComponent("second.log"))
        // No client hangs: every request ends (the policy's patience is a minute; this is far more).
        try await withDeadline(.seconds(180), time: .continuous) {
            for worker in workers { await worker.value }
        }
        await client.close()

        let results = outcomes.list.withLock { $0 }
        #expect(results.count == total)
        for (_, result) in results {
            if case .failure(let error) = result { #expect(Self.isOutage(error), "\(error)") }
        }
        let failures = results.compactMap { if case .failure(let error) = $0.result { "\(error)".prefix(40) } else { nil } }
        #expect(
            results.count - failures.count >= total / 2,
            "most requests rode out the restart; refused: \(Dictionary(grouping: failures, by: { $0 }).mapValues(\.count))")

        // Every request again, with its idempotency key: one that got a JWS gets the same one; one that did not may have
        // been recorded with its answer lost (then it is answered now), never authorized a second time.
        let reconciler = try ClusterClient(endpoints: [.init(host: "127.0.0.1", port: port)], principal: "agent-resilient", key: key)
        var authorizedIDs: Set<String> = []
        for (request, result) in results {
            let again = try? await reconciler.authorize(request)
            if case .success(let jws) = result {
                #expect(again?.jws == jws, "the same request answered a different authorization")
            }
            if let again { authorizedIDs.insert(again.authorizationID) }
        }
        await reconciler.close()
        kill(second.processIdentifier, SIGTERM)
        await second.exited()

        var authorizedEntries: [String] = []
        try AuditLogFile(path: directory.appendingPathComponent("data/countersign.sqlite").path).forEachEntry { _, entry, _ in
            if let decoded = try? JSONDecoder().decode(AuditEntry.self, from: entry), decoded.action == "authorized", let subject = decoded.subject {
                authorizedEntries.append(subject)
            }
        }
        #expect(Set(authorizedEntries) == authorizedIDs, "the log's authorizations are exactly the ones the requests reconcile to")
        #expect(authorizedEntries.count == authorizedIDs.count, "no payment was authorized twice")
    }

    /// One payment as an agent makes it: an open breaker makes it wait as long as it is told and ask again with the
    /// same request (the same idempotency key: the payment is still to be made, and may even have been recorded).
    static func pay(_ request: AuthorizeRequest, with client: ClusterClient) async -> Result<String, any Error> {
        for _ in 0..<100 {
            do {
                return .success(try await client.authorize(request).jws)
            } catch ClientError.circuitOpen(let retryAfter) {
                try? await Task.sleep(for: retryAfter)
            } catch {
                return .failure(error)
            }
        }
        return .failure(ClientError.circuitOpen(retryAfter: .zero))
    }

    /// What an outage may answer: a connection failure, a stuck connection, an open breaker, a server going away.
    static func isOutage(_ error: any Error) -> Bool {
        switch error {
        case let error as WireError: error.code == .shuttingDown
        case let error as ClientError: error.isConnectionFailure || error == .closedDuringHandshake(server: "") || "\(error)".hasPrefix("CIRCUIT_OPEN")
        default: false
        }
    }

    @Test("a frozen server (SIGSTOP): attempts time out, its breaker opens, nothing hangs; thawed, it serves again and nothing was authorized twice")
    func frozenServer() async throws {
        let port = try DaemonTests.freePort()
        let (directory, environment, admin) = try await self.daemon.initialized("frozen", port: port)
        let (server, _) = try await self.daemon.serve(environment: environment, log: directory.appendingPathComponent("server.log"))
        defer { kill(server.processIdentifier, SIGCONT) }
        let adminClient = try await CountersignClient.connect(host: "127.0.0.1", port: port, credential: admin)
        let key = CredentialPrivateKey.generate(.es256)
        _ = try await adminClient.addAgent(id: "agent-frozen", publicKey: key.publicKey)
        await adminClient.close()

        var policy = ClusterClient.RetryPolicy()
        policy.attemptTimeout = .seconds(1)
        policy.patience = .seconds(4)
        policy.breakerCooldown = .milliseconds(500)
        let client = try ClusterClient(endpoints: [.init(host: "127.0.0.1", port: port)], principal: "agent-frozen", key: key, policy: policy)
        let outcomes = Outcomes()
        let workers = (0..<4).map { _ in
            Task {
                for _ in 0..<40 {
                    let request = TestServer.request(1_000)
                    let result = await Self.pay(request, with: client)
                    outcomes.list.withLock { $0.append((request, result)) }
                }
            }
        }
        try await eventually("the clients are authorizing") { outcomes.count >= 20 }
        kill(server.processIdentifier, SIGSTOP)
        try await Task.sleep(for: .seconds(3))  // the outage itself: a frozen process knows no other time
        kill(server.processIdentifier, SIGCONT)
        try await withDeadline(.seconds(120), time: .continuous) {
            for worker in workers { await worker.value }
        }
        let after = try await client.authorize(TestServer.request(1_000))
        #expect(!after.jws.isEmpty, "after the thaw the server is used again")
        #expect(client.breakerStates == [.closed])
        await client.close()

        let results = outcomes.list.withLock { $0 }
        #expect(results.count == 160)
        for (_, result) in results {
            if case .failure(let error) = result { #expect(Self.isOutage(error), "\(error)") }
        }
        // Every request again: an answer lost to the freeze is answered now; none is authorized a second time.
        let reconciler = try ClusterClient(endpoints: [.init(host: "127.0.0.1", port: port)], principal: "agent-frozen", key: key)
        var ids: Set<String> = []
        for (request, result) in results {
            let again = try await reconciler.authorize(request)
            if case .success(let jws) = result { #expect(again.jws == jws) }
            ids.insert(again.authorizationID)
        }
        await reconciler.close()
        kill(server.processIdentifier, SIGTERM)
        await server.exited()
        var authorized = 0
        try AuditLogFile(path: directory.appendingPathComponent("data/countersign.sqlite").path).forEachEntry { _, entry, _ in
            if let decoded = try? JSONDecoder().decode(AuditEntry.self, from: entry), decoded.action == "authorized" { authorized += 1 }
        }
        #expect(ids.count == 160)
        #expect(authorized == 161, "one authorization per payment (160, and the one after the thaw)")
    }

    @Test("a request the server refuses by closing the connection (FRAME_TOO_LARGE) leaves the client usable: the next call connects again")
    func refusalThatClosesReconnects() async throws {
        try await withServer { server in
            let credential = try await server.addPrincipal("agent-large")
            var policy = ClusterClient.RetryPolicy()
            policy.maximumAttempts = 1
            let client = try ClusterClient(
                endpoints: [.init(host: "127.0.0.1", port: server.port)], principal: credential.principal, key: try credential.key(), policy: policy)
            _ = try await client.authorize(TestServer.request(1_000))
            // Above the server's 64 KiB frames: refused with FRAME_TOO_LARGE (or, should the close's reset overtake it,
            // a lost connection), and the connection closed.
            var large = TestServer.request(1_000)
            large.intent.description = String(repeating: "x", count: 70_000)
            await #expect(throws: (any Error).self) { try await client.authorize(large) }
            let next = try await client.authorize(TestServer.request(1_000))
            #expect(next.tier == "standard")
            await client.close()
        }
    }

    @Test("connecting is bounded by the call's patience: servers that accept and never answer end the call when its patience is spent")
    func connectingWithinPatience() async throws {
        // Three servers that accept connections and never answer the handshake (frozen, or not servers at all).
        let listeners = try await (0..<3).asyncMap { _ in
            try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { $0.eventLoop.makeSucceededVoidFuture() }
                .bind(host: "127.0.0.1", port: 0).get()
        }
        var policy = ClusterClient.RetryPolicy()
        // Each server would get 10 s for its handshake, three of them 30 s, far past the call's patience.
        policy.attemptTimeout = .seconds(10)
        policy.patience = .milliseconds(300)
        let client = try ClusterClient(
            endpoints: listeners.map { .init(host: "127.0.0.1", port: $0.localAddress!.port!) }, principal: "agent-x", key: .generate(.ed25519),
            policy: policy)
        let error = await #expect(throws: ClientError.self) { try await client.keys() }
        guard case .timedOut = error else {
            Issue.record("expected the patience to end the call, got \(String(describing: error))")
            return
        }
        await client.close()
        for listener in listeners { try await listener.close() }
    }

    @Test("after three failed connections the breaker opens: calls fail at once, without connecting, until one probe after the cool-down")
    func breakerFailsFast() async throws {
        let accepted = Atomic<Int>(0)
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                accepted.add(1, ordering: .relaxed)
                return channel.close()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let clock = ManualClock()
        var policy = ClusterClient.RetryPolicy()
        policy.time = MonotonicTime(clock)
        policy.jitter = { $0 }
        policy.breakerThreshold = 3
        policy.breakerCooldown = .seconds(30)
        let client = try ClusterClient(
            endpoints: [.init(host: "127.0.0.1", port: listener.localAddress!.port!)], principal: "agent-x", key: .generate(.ed25519), policy: policy)

        let call = Task { try await client.keys() }
        for (pause, sleeper) in [(Duration.milliseconds(100), 1), (.milliseconds(200), 1)] {
            await clock.waitForSleepers(sleeper)
            #expect(clock.deadlines == [clock.now.offset + pause], "full jitter's bound doubles from 100 ms")
            clock.advance(by: pause)
        }
        await clock.waitForSleepers(1)
        clock.advance(by: .milliseconds(400))
        await #expect(throws: ClientError.circuitOpen(retryAfter: .seconds(30) - .milliseconds(400))) { try await call.value }
        #expect(accepted.load(ordering: .relaxed) == 3)
        #expect(client.breakerStates == [.open])

        for _ in 0..<50 {
            await #expect(throws: ClientError.self) { try await client.keys() }
        }
        #expect(accepted.load(ordering: .relaxed) == 3, "an open breaker sends nothing: callers fail fast instead of piling up")

        clock.advance(by: .seconds(30))
        #expect(client.breakerStates == [.halfOpen])
        let probe = Task { try await client.keys() }
        await clock.waitForSleepers(1)  // the probe failed; its pause
        #expect(accepted.load(ordering: .relaxed) == 4)
        #expect(client.breakerStates == [.open], "a failed probe opens the breaker for another cool-down")
        clock.advance(by: .milliseconds(100))
        await #expect(throws: ClientError.self) { try await probe.value }
        await client.close()
        try await listener.close()
    }
}
