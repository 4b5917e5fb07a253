import CountersignClient
import CountersignServer
import Foundation
import Ledger
import Policy
import TestSupport
import Testing
import Wire

@Suite("Escalation, rate limits, contexts and intent over the protocol", .timeLimit(.minutes(1)))
struct EscalationTests {
    static let tiers = """
        tiers:
          - { name: standard, max_amount: { USD: 50000 }, key: standard, backend: software, checks: [rate_limit, merchant_rules, escalation] }
          - { name: high, max_amount: { USD: 5000000 }, key: high, backend: hsm, lifetime: 2m, checks: [intent] }

        """
    static let escalation = """
        escalation:
          new_merchant_above: { USD: 10000 }
          splitting_window: 10m

        """

    static func decision(_ server: TestServer, _ id: String) async throws -> DecisionRecord? {
        try await server.application.store.authorization(id: id)?.decision.map { try JSONDecoder().decode(DecisionRecord.self, from: $0) }
    }

    @Test("a first payment to a merchant above the threshold is signed by the next tier's key, and the stored decision says why")
    func newMerchant() async throws {
        try await withServer(.init(policy: Self.escalation, tiers: Self.tiers)) { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-escalate"))
            var request = TestServer.request(20_000)
            request.merchantID = "m-new"
            let first = try await agent.authorize(request)
            #expect(first.tier == "high")
            #expect(first.keyBackend == "hsm")
            let record = try await Self.decision(server, first.authorizationID)
            #expect(
                record?.tierReason
                    == "200.00 USD is within tier 'standard' (up to 500.00 USD); escalated to tier 'high': first payment to m-new, above 100.00 USD")
            #expect(record?.checks.first { $0.name == "new_merchant" }?.result == .escalate)

            // Paid before now, and 200.00 + 200.00 within the splitting window is still the standard tier's.
            request.idempotencyKey = UUID().uuidString
            let second = try await agent.authorize(request)
            #expect(second.tier == "standard")
            #expect(try await Self.decision(server, second.authorizationID)?.tierReason == "200.00 USD is within tier 'standard' (up to 500.00 USD)")
            await agent.close()
        }
    }

    @Test("split payments to one merchant are judged at the tier of their sum")
    func splitting() async throws {
        try await withServer(.init(policy: Self.escalation, tiers: Self.tiers)) { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-split"))
            var request = TestServer.request(10_000)
            request.merchantID = "m-split"
            #expect(try await agent.authorize(request).tier == "standard")
            for _ in 0..<3 {
                request.idempotencyKey = UUID().uuidString
                #expect(try await agent.authorize(request).tier == "standard")
            }
            request.idempotencyKey = UUID().uuidString
            let fifth = try await agent.authorize(request)
            #expect(fifth.tier == "standard", "400.00 earlier + 100.00 = 500.00 is still the standard tier's bound")
            request.idempotencyKey = UUID().uuidString
            let sixth = try await agent.authorize(request)
            #expect(sixth.tier == "high")
            #expect(try await Self.decision(server, sixth.authorizationID)?.tierReason.contains("sum to 600.00 USD") == true)
            await agent.close()
        }
    }

    @Test("a profile's rate limit refuses with RATE_LIMITED (retryable) until its window has passed (injected clock)")
    func rateLimit() async throws {
        let clock = ManualClock()
        let profiles = "profiles:\n  - { name: slow, agents: [agent-slow], rate_limit: { requests: 3, per: 1m } }\n"
        try await withServer(.init(clock: clock, profiles: profiles, tiers: Self.tiers)) { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-slow"))
            for _ in 0..<3 { _ = try await agent.authorize(TestServer.request(100)) }
            let limited = await #expect(throws: WireError.self) { try await agent.authorize(TestServer.request(100)) }
            #expect(limited?.code == .rateLimited)
            #expect(limited?.retryable == true)
            clock.advance(by: .seconds(61))
            _ = try await agent.authorize(TestServer.request(100))
            await agent.close()
        }
    }

    @Test("an admin's mode lowers an agent's limits at once and survives a restart; agents cannot set modes")
    func modes() async throws {
        let profiles = "profiles:\n  - { name: buyers, agents: [agent-buyer] }\n"
        let contexts = "contexts:\n  - { name: incident, mode: true, profiles: [buyers], highest_tier: standard }\n"
        let directory = try SoftHSMFixture.shared().directory.appendingPathComponent("server-modes-\(UUID().uuidString.prefix(8))")
        let credential = CredentialFile(principal: "agent-buyer", key: .generate(.es256), server: "")
        try await withServer(.init(dataDirectory: directory, profiles: profiles, policy: contexts, tiers: Self.tiers)) { server in
            let admin = try await server.connect(server.admin)
            _ = try await admin.addAgent(id: "agent-buyer", publicKey: try credential.key().publicKey)
            let agent = try await server.connect(credential)
            #expect(try await agent.authorize(TestServer.request(100_000)).tier == "high")
            let on = try await admin.setContext("incident", active: true)
            #expect(on.inForce)
            #expect(on.summary == "highest tier standard for profile buyers, while switched on")
            let refused = await #expect(throws: WireError.self) { try await agent.authorize(TestServer.request(100_000)) }
            #expect(refused?.code == .tierNotAllowed)
            let byAgent = await #expect(throws: WireError.self) { try await agent.setContext("incident", active: false) }
            #expect(byAgent?.code == .forbidden)
            let unknown = await #expect(throws: WireError.self) { try await admin.setContext("holiday", active: true) }
            #expect(unknown?.code == .contextNotFound)
            await agent.close()
            await admin.close()
        }
        try await withServer(.init(dataDirectory: directory, profiles: profiles, policy: contexts, tiers: Self.tiers)) { server in
            let admin = try await server.connect(server.admin)
            #expect(try await admin.contexts().map(\.inForce) == [true], "the mode is still on after a restart")
            let agent = try await server.connect(credential)
            #expect((await #expect(throws: WireError.self) { try await agent.authorize(TestServer.request(100_000)) })?.code == .tierNotAllowed)
            _ = try await admin.setContext("incident", active: false)
            #expect(try await agent.authorize(TestServer.request(100_000)).tier == "high")
            await agent.close()
            await admin.close()
        }
    }

    @Test("a tier that checks intent needs line items summing to the amount; the intent's hash is in the claims")
    func intent() async throws {
        try await withServer(.init(tiers: Self.tiers)) { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-intent"))
            var request = TestServer.request(100_000)
            request.intent.lineItems = [LineItem(description: "GPU hour", quantity: 3, unitAmount: 33_333)]
            let mismatch = await #expect(throws: WireError.self) { try await agent.authorize(request) }
            #expect(mismatch?.code == .intentMismatch)
            #expect(mismatch?.message == "the line items sum to 999.99 USD, not to the amount 1000.00 USD")
            request.intent.lineItems = nil
            request.intent.orderHash = "sha256:abc"
            #expect((await #expect(throws: WireError.self) { try await agent.authorize(request) })?.code == .intentRequired)
            request.intent.lineItems = [LineItem(description: "GPU hour", quantity: 4, unitAmount: 25_000)]
            #expect(try await agent.authorize(request).tier == "high")
            await agent.close()
        }
    }
}
