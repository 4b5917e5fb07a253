import CountersignClient
import CountersignServer
import Foundation
import HSMSigning
import NIOPosix
import PKCS11
import TestSupport
import Testing
import Wire

/// Faults are injected process-wide (see `FaultInjection`), so these tests run one at a time.
@Suite("When the HSM fails", .serialized, .timeLimit(.minutes(1)))
struct HSMFaultTests {
    @Test("a failing token answers HSM_UNAVAILABLE, the breaker stops sending it work, software tiers keep working, and a probe restores it")
    func failingToken() async throws {
        let clock = ManualClock()
        Self.resetFaults()
        try await withServer(.init(breakerCooldown: "5s", faultyHSM: true, clock: clock)) { server in
            let client = try await server.connect(try await server.addPrincipal("agent-hsm-fails"))
            #expect(try await client.authorize(TestServer.request(100_000)).keyBackend == "hsm")

            FaultInjection.set(.fail(.deviceError))
            for _ in 0..<3 {
                let error = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
                #expect(error?.code == .hsmUnavailable)
                #expect(error?.retryable == true)
                #expect(error?.message.contains("CKR_DEVICE_ERROR") == true)
                // The software tier is untouched.
                #expect(try await client.authorize(TestServer.request(100)).keyBackend == "software")
            }
            #expect(server.application.hsm.signer.breaker.currentState.description == "open")
            let (metrics, _) = try await InteropTests.get(server, "/metrics")
            #expect(MetricsTests.value("countersign_hsm_breaker_open", in: metrics) == 1)
            #expect((MetricsTests.value("countersign_hsm_failures_total", in: metrics) ?? 0) >= 3, "\(metrics)")
            #expect(MetricsTests.value("countersign_hsm_breaker_trips_total", in: metrics) == 1)
            let callsWhenOpened = FaultInjection.signCalls
            let refused = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
            #expect(refused?.code == .hsmUnavailable)
            #expect(refused?.message.contains("paused") == true)
            #expect(FaultInjection.signCalls == callsWhenOpened, "an open breaker sends the token no work")

            // Three consecutive device errors also made the runtime re-initialize the module (through the
            // wrapper: the real module is shared); that does not cure a failing C_Sign, which the probe finds out.
            try await eventually("the module was re-initialized") { server.application.hsm.sessions.recoveries == 1 }
            #expect(server.application.hsm.sessions.health == .serving)

            // The token recovers; after the cooldown one request probes it and closes the breaker.
            FaultInjection.set(.none)
            let stillOpen = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
            #expect(stillOpen?.code == .hsmUnavailable)
            clock.advance(by: .seconds(5))
            let probe = try await client.authorize(TestServer.request(100_000))
            #expect(probe.keyBackend == "hsm")
            #expect(server.application.hsm.signer.breaker.currentState.description == "closed")
            #expect(try await client.authorize(TestServer.request(2_000_000)).tier == "high")
            await client.close()
        }
    }

    /// Every fault off, as a test expects to find the module.
    static func resetFaults() {
        FaultInjection.set(.none)
        FaultInjection.restoreToken()
        FaultInjection.failLogin(with: nil)
    }

    @Test(
        "a lost token (its objects gone until the module is re-initialized): the runtime refuses HSM work at once, re-initializes with backoff, finds the keys by CKA_ID again, /readyz follows, and HSM tiers sign again without a restart"
    )
    func lostTokenIsRecovered() async throws {
        let clock = ManualClock()
        Self.resetFaults()
        // The breaker opens only after 10 failures: what refuses requests below is the recovery, not the breaker.
        try await withServer(.init(breakerFailures: 10, faultyHSM: true, clock: clock)) { server in
            let hsm = server.application.hsm
            let client = try await server.connect(try await server.addPrincipal("agent-token-lost"))
            #expect(try await client.authorize(TestServer.request(100_000)).keyBackend == "hsm")
            #expect(try await InteropTests.get(server, "/readyz").1 == 200)
            let finalized = FaultInjection.finalizeCalls
            let epoch = hsm.module.epoch

            // As SoftHSM when its token directory goes away and comes back: the keys are not found any more,
            // and come back only after C_Finalize + C_Initialize. The first C_Initialize fails (still away).
            FaultInjection.loseToken(failingInitializations: 1)
            for _ in 0..<3 {
                let error = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
                #expect(error?.code == .hsmUnavailable)
                #expect(try await client.authorize(TestServer.request(100)).keyBackend == "software", "software tiers are untouched")
            }
            // The third failure started a recovery; its first attempt failed and waits out the backoff.
            try await eventually("the first attempt failed") {
                FaultInjection.finalizeCalls == finalized + 1 && clock.deadlines.contains(clock.now.offset + .milliseconds(250))
            }
            guard case .recovering(_, let attempt) = hsm.sessions.health else {
                Issue.record("not recovering: \(hsm.sessions.health)")
                return
            }
            #expect(attempt == 1)
            #expect(hsm.signer.breaker.currentState.description == "closed")
            let (body, status) = try await InteropTests.get(server, "/readyz")
            #expect(status == 503)
            #expect(body.contains("recovering"), "\(body)")
            #expect(!body.contains("KEY_NOT_FOUND"), "the details stay in the log")
            let (metrics, _) = try await InteropTests.get(server, "/metrics")
            #expect(MetricsTests.value("countersign_hsm_recovering", in: metrics) == 1)
            let calls = FaultInjection.signCalls
            let during = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
            #expect(during?.code == .hsmUnavailable)
            #expect(during?.message.contains("re-initialized") == true, "\(String(describing: during))")
            #expect(FaultInjection.signCalls == calls, "nothing is sent to a token being recovered")
            #expect(try await client.authorize(TestServer.request(100)).keyBackend == "software")

            // The backoff passes: the second attempt re-initializes, finds the token by label and serial number,
            // logs in and finds every key by its CKA_ID.
            clock.advance(by: .milliseconds(250))
            try await eventually("the token is recovered") { hsm.sessions.health == .serving }
            #expect(FaultInjection.finalizeCalls == finalized + 2)
            #expect(!FaultInjection.isTokenLost)
            #expect(hsm.module.epoch == epoch + 2)
            #expect(hsm.sessions.recoveries == 1)
            #expect(try await InteropTests.get(server, "/readyz").1 == 200)
            #expect(try await client.authorize(TestServer.request(100_000)).keyBackend == "hsm")
            let (after, _) = try await InteropTests.get(server, "/metrics")
            #expect(MetricsTests.value("countersign_hsm_recovering", in: after) == 0)
            #expect(MetricsTests.value("countersign_hsm_recoveries_total", in: after) == 1)
            await client.close()
        }
    }

    @Test("a breaker probe that meets a recovery is not counted: the next request probes again, and after the recovery one closes the breaker")
    func probeDuringRecovery() async throws {
        let clock = ManualClock()
        Self.resetFaults()
        try await withServer(.init(breakerCooldown: "5s", faultyHSM: true, clock: clock)) { server in
            let hsm = server.application.hsm
            let client = try await server.connect(try await server.addPrincipal("agent-probe-recovery"))
            // Three failures open the breaker and start a recovery whose attempts fail until the token is back.
            FaultInjection.loseToken(failingInitializations: 1_000)
            for _ in 0..<3 {
                _ = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
            }
            #expect(hsm.signer.breaker.currentState.description == "open")
            try await eventually("recovering") { if case .recovering = hsm.sessions.health { true } else { false } }
            clock.advance(by: .seconds(5))
            for _ in 0..<2 {
                let refused = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
                #expect(refused?.message.contains("re-initialized") == true, "a probe, not 'paused': \(String(describing: refused))")
                #expect(hsm.signer.breaker.currentState.description == "open")
            }
            FaultInjection.restoreToken()
            // The manual clock moves once, to wake the recovery's backoff (at most 5 s), never on towards the
            // checkpointer's 60 s: a checkpoint signed with the HSM audit key would become the breaker's probe, and a
            // request meeting that probe in flight is refused ("paused"). Advancing in a loop did that on a busy machine.
            try await eventually("the recovery waits out its backoff, or is done") {
                hsm.sessions.health == .serving || clock.deadlines.contains { $0 > clock.now.offset && $0 <= clock.now.offset + .seconds(5) }
            }
            clock.advance(by: .seconds(5))
            try await eventually("recovered") { hsm.sessions.health == .serving }
            #expect(try await client.authorize(TestServer.request(100_000)).keyBackend == "hsm")
            #expect(hsm.signer.breaker.currentState.description == "closed")
            await client.close()
        }
    }

    @Test("a removed token (CKR_DEVICE_REMOVED) is recovered at once, and readiness itself notices keys that vanished")
    func removedTokenIsRecoveredAtOnce() async throws {
        let clock = ManualClock()
        Self.resetFaults()
        try await withServer(.init(faultyHSM: true, clock: clock)) { server in
            let hsm = server.application.hsm
            let client = try await server.connect(try await server.addPrincipal("agent-token-removed"))
            let finalized = FaultInjection.finalizeCalls
            FaultInjection.set(.fail(.deviceRemoved))
            let error = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
            #expect(error?.code == .hsmUnavailable)
            FaultInjection.set(.none)
            try await eventually("one failure was enough") { hsm.sessions.recoveries == 1 && hsm.sessions.health == .serving }
            #expect(FaultInjection.finalizeCalls == finalized + 1)
            #expect(try await client.authorize(TestServer.request(100_000)).keyBackend == "hsm")

            // No request at all: /readyz looks for every key, so three probes by the load balancer find the loss.
            FaultInjection.loseToken()
            for _ in 0..<3 {
                #expect(try await InteropTests.get(server, "/readyz").1 == 503)
            }
            try await eventually("readiness started a recovery") { hsm.sessions.recoveries == 2 && hsm.sessions.health == .serving }
            #expect(try await InteropTests.get(server, "/readyz").1 == 200)
            #expect(try await client.authorize(TestServer.request(100_000)).keyBackend == "hsm")
            await client.close()
        }
    }

    @Test("a PIN the token no longer takes stops the HSM sessions rather than trying it again and again (which would lock the token)")
    func wrongPINStopsRecovery() async throws {
        Self.resetFaults()
        try await withServer(.init(faultyHSM: true, clock: ManualClock())) { server in
            let hsm = server.application.hsm
            let client = try await server.connect(try await server.addPrincipal("agent-pin-changed"))
            FaultInjection.failLogin(with: .pinIncorrect)
            FaultInjection.set(.fail(.deviceRemoved))
            _ = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
            FaultInjection.set(.none)
            try await eventually("the recovery stopped") { if case .failed = hsm.sessions.health { true } else { false } }
            let logins = FaultInjection.loginCalls
            for _ in 0..<3 {
                let error = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
                #expect(error?.code == .hsmUnavailable)
                #expect(error?.message.contains("cannot be recovered without the operator") == true, "\(String(describing: error))")
            }
            #expect(FaultInjection.loginCalls == logins, "no further C_Login with a PIN the token refused")
            let (body, status) = try await InteropTests.get(server, "/readyz")
            #expect(status == 503 && body.contains("cannot be recovered"), "\(body)")
            let (metrics, _) = try await InteropTests.get(server, "/metrics")
            #expect(MetricsTests.value("countersign_hsm_recovering", in: metrics) == 2)
            #expect(try await client.authorize(TestServer.request(100)).keyBackend == "software")
            FaultInjection.failLogin(with: nil)
            await client.close()
        }
    }

    @Test("a stop during a recovery ends it without waiting out the backoff")
    func stopDuringRecovery() async throws {
        Self.resetFaults()
        let clock = ManualClock()
        let server = try await TestServer.start(.init(faultyHSM: true, clock: clock))
        let client = try await server.connect(try await server.addPrincipal("agent-stop-recovering"))
        FaultInjection.loseToken(failingInitializations: 1_000)
        for _ in 0..<3 {
            _ = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
        }
        try await eventually("the recovery waits out its backoff") { clock.deadlines.contains(clock.now.offset + .milliseconds(250)) }
        await client.close()
        try await server.stop()
        #expect(server.application.hsm.sessions.health == .closed)
        Self.resetFaults()
    }

    @Test("a key handle cached before a re-initialization is never used after it: the key is found again by its CKA_ID")
    func handlesBelongToOneInitialization() async throws {
        let fixture = try SoftHSMFixture.shared()
        let module = FaultInjection.module(wrapping: fixture.module)
        let token = try module.token(label: SoftHSMFixture.tokenLabel)
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let pool = PKCS11SessionPool(token: token, pin: PIN(fixture.userPIN), configuration: .init(maximumSessions: 1), threadPool: threadPool)
        let id = Array(UUID().uuidString.utf8.prefix(16))
        let (reference, privateKey, publicKey) = try await pool.withSession { session in
            let pair = try session.generateSessionP256SigningKeyPair(label: "epoch-test", id: id)
            // A cached handle that names another object: what a handle from before a re-initialization may do.
            return (TokenKeyReference(id: id, handle: pair.publicKey, foundIn: session), pair.privateKey, pair.publicKey)
        }
        #expect(try await pool.withSession { try reference.handle(in: $0) } == publicKey, "within one initialization the cache is used")
        try module.reinitialize()
        #expect(try await pool.withSession { try reference.handle(in: $0) } == privateKey, "after it, the key is looked up by its CKA_ID")
        await pool.close()
        try await threadPool.shutdownGracefully()
    }

    @Test("a token that stops answering costs a request the HSM timeout, measured on the injected clock, and never a software signature")
    func hangingToken() async throws {
        let clock = ManualClock()
        let gate = Gate()
        FaultInjection.set(.none)
        try await withServer(.init(hsmTimeout: "2s", faultyHSM: true, clock: clock)) { server in
            let client = try await server.connect(try await server.addPrincipal("agent-hsm-hangs"))
            let callsBefore = FaultInjection.signCalls
            FaultInjection.set(.hang(gate))
            let pending = Task { try await client.authorize(TestServer.request(100_000)) }
            try await eventually("C_Sign is entered and hangs") { FaultInjection.signCalls > callsBefore }
            // The connection's handshake timer and the signing deadline sleep on the clock.
            await clock.waitForSleepers(2)
            #expect(try await client.authorize(TestServer.request(100)).keyBackend == "software", "software signing goes on meanwhile")
            clock.advance(by: .seconds(2))
            let error = await #expect(throws: WireError.self) { try await pending.value }
            #expect(error?.code == .hsmUnavailable)
            #expect(error?.message == "the HSM did not answer within 2.0 seconds")
            FaultInjection.set(.none)
            gate.open()
            await client.close()
        }
    }

    @Test("an agent over its budget cannot make the HSM sign: the refusal comes before the signature")
    func budgetBeforeSigning() async throws {
        FaultInjection.set(.none)
        let budgets = "budgets:\n  - { agent: agent-hsm-budget, limit: { USD: 150000 }, window: day }\n"
        try await withServer(.init(faultyHSM: true, budgets: budgets)) { server in
            let client = try await server.connect(try await server.addPrincipal("agent-hsm-budget"))
            #expect(try await client.authorize(TestServer.request(100_000)).keyBackend == "hsm")
            let calls = FaultInjection.signCalls
            for _ in 0..<5 {
                let error = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100_000)) }
                #expect(error?.code == .budgetExceeded)
            }
            #expect(FaultInjection.signCalls == calls, "no HSM signature was spent on a refusal")
            await client.close()
        }
    }

    @Test("graceful shutdown: a request in flight is answered; new requests get SHUTTING_DOWN; then the listener closes")
    func gracefulShutdown() async throws {
        let gate = Gate()
        FaultInjection.set(.none)
        let server = try await TestServer.start(.init(hsmTimeout: "60s", faultyHSM: true))
        let credential = try await server.addPrincipal("agent-shutdown")
        let inFlight = try await server.connect(credential)
        let other = try await server.connect(credential)
        let callsBefore = FaultInjection.signCalls
        FaultInjection.set(.hang(gate))
        let pending = Task { try await inFlight.authorize(TestServer.request(100_000)) }
        try await eventually("the request is inside C_Sign") { FaultInjection.signCalls > callsBefore }

        let stopping = Task { try await server.stop() }
        // The connection with a request in flight refuses new ones once the drain begins.
        var refused: WireError?
        while refused == nil {
            do {
                _ = try await inFlight.authorize(TestServer.request(100))
                await Task.yield()
            } catch let error as WireError {
                refused = error
            }
        }
        #expect(refused?.code == .shuttingDown)
        #expect(refused?.retryable == true)
        #expect(!Self.canConnect(port: server.port), "the listener stopped accepting")
        // An idle connection is closed at once.
        do {
            _ = try await other.authorize(TestServer.request(100))
            Issue.record("an idle connection was still served during shutdown")
        } catch let error as ClientError {
            #expect(error == .connectionClosed)
        } catch let error as WireError {
            #expect(error.code == .shuttingDown, "the request raced the close")
        }

        FaultInjection.set(.none)
        gate.open()
        let answer = try await pending.value
        #expect(answer.tier == "high" && answer.keyBackend == "hsm")
        try await stopping.value
        #expect(server.application.hsm.sessions.statistics.open == 0, "HSM sessions are closed after the listeners")
    }

    static func canConnect(port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
