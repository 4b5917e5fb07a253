import Configuration
import CountersignClient
import Foundation
import Ledger
import Policy
import TestSupport
import Testing
import Wire

@testable import CountersignServer

@Suite("The anomaly model in the server: learned from the store's history, judged in the decision record", .timeLimit(.minutes(1)))
struct AnomalyServerTests {
    static let tiers = """
        tiers:
          - { name: standard, max_amount: { USD: 50000 }, key: standard, backend: software, checks: [escalation] }
          - { name: high, max_amount: { USD: 5000000 }, key: high, backend: hsm, lifetime: 2m }

        """
    static let anomaly = """
        anomaly:
          half_life: 14d
          min_history: 12
          actions:
            - { tier: standard, score: 6, action: escalate }

        """

    /// A usual payment: about 4 USD at one of three shops of category 5734.
    static func usual(_ index: Int) -> AuthorizeRequest {
        var request = TestServer.request(Int64(380 + (index % 5) * 10))
        request.merchantID = "m-\(index % 3)"
        request.intent.lineItems = [LineItem(description: "USB-C cable", quantity: 1, unitAmount: request.amount)]
        return request
    }

    @Test("after a day the habits are learned from the store: a usual payment passes, a new category at a new merchant is escalated, with reasons")
    func judged() async throws {
        // Monday 2026-01-05 10:00 UTC.
        let clock = SettableWallClock(1_767_571_200 + 10 * 3600)
        try await withServer(.init(policy: Self.anomaly, tiers: Self.tiers, wallClock: clock.wallClock)) { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-habits"))
            for index in 0..<120 {
                let authorization = try await agent.authorize(Self.usual(index))
                #expect(authorization.tier == "standard")
                // A voided authorization is never learned.
                if index == 7 { _ = try await agent.void(authorizationID: authorization.authorizationID) }
                clock.advance(by: 300)
            }
            // Learned only once a day old: until then the model is still learning the agent.
            var bookshop = Self.usual(120)
            bookshop.merchantID = "m-books"
            bookshop.merchantCategoryCode = "5942"
            let early = try await agent.authorize(bookshop)
            let earlyRecord = try await EscalationTests.decision(server, early.authorizationID)
            #expect(earlyRecord?.checks.first { $0.name == "behaviour" }?.inputs == "agent-habits has 0 of 12 payments the model needs")
            #expect(early.tier == "standard")

            clock.advance(by: 86_400)
            let usual = try await agent.authorize(Self.usual(121))
            #expect(usual.tier == "standard")
            let usualCheck = try await EscalationTests.decision(server, usual.authorizationID)?.checks.first { $0.name == "behaviour" }
            #expect(usualCheck?.result == .pass && usualCheck?.inputs.hasPrefix("score ") == true, "\(String(describing: usualCheck))")

            clock.advance(by: 300)
            let casino = try await agent.authorize(Self.casino())
            #expect(casino.tier == "high", "escalated one tier, signed by the HSM tier's key")
            let record = try await EscalationTests.decision(server, casino.authorizationID)
            let check = try #require(record?.checks.first { $0.name == "behaviour" })
            #expect(check.result == .escalate, "\(check.inputs)")
            #expect(check.inputs.contains("category 7995 is new for agent-habits (usually 5734"), "\(check.inputs)")
            #expect(record?.tierReason.contains("escalated to tier 'high' by the anomaly model") == true)

            // The state is a function of the store: two fresh books agree, and learned every signed, unvoided
            // authorization a day old or older (119 of the 120 usual ones, the voided one not, and the bookshop).
            let model = try #require(server.application.configuration.policy.behaviour)
            let now = clock.wallClock.secondsSince1970
            let one = try await BehaviourBook(model: model, store: server.application.store).state(of: "agent-habits", now: now)
            let two = try await BehaviourBook(model: model, store: server.application.store).state(of: "agent-habits", now: now)
            #expect(one == two)
            #expect(one.learned == 120)
            await agent.close()
        }
    }

    static func casino() -> AuthorizeRequest {
        var request = Self.usual(0)
        request.merchantID = "m-casino"
        request.merchantCategoryCode = "7995"
        return request
    }
}
