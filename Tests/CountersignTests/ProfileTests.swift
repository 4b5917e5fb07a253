import CountersignClient
import CountersignConfiguration
import CountersignServer
import Foundation
import Policy
import Signing
import TestSupport
import Testing
import Wire

@Suite("Agent profiles over the protocol", .timeLimit(.minutes(1)))
struct ProfileTests {
    static let profiles = """
        profiles:
          - name: shopping
            agents: [agent-shopper]
            highest_tier: standard
            max_per_authorization: { USD: 20000 }
            merchants: { block: [m-casino] }
            categories: { block: ["7995"] }

        """

    @Test("each profile rule refuses with its code and a sentence; what the profile allows is authorized")
    func rules() async throws {
        try await withServer(.init(profiles: Self.profiles)) { server in
            let shopper = try await server.connect(try await server.addPrincipal("agent-shopper"))
            var request = TestServer.request(19_000)
            #expect(try await shopper.authorize(request).tier == "standard")

            request = TestServer.request(20_001)
            let overMax = await #expect(throws: WireError.self) { try await shopper.authorize(request) }
            #expect(overMax?.code == .perAuthorizationLimit)
            #expect(overMax?.message == "200.01 USD is above agent-shopper's limit of 200.00 USD per authorization")

            request = TestServer.request(900)
            request.merchantID = "m-casino"
            #expect((await #expect(throws: WireError.self) { try await shopper.authorize(request) })?.code == .merchantNotAllowed)
            request = TestServer.request(900)
            request.merchantCategoryCode = "7995"
            #expect((await #expect(throws: WireError.self) { try await shopper.authorize(request) })?.code == .categoryNotAllowed)

            // An agent without a profile is bound by the tiers alone.
            let free = try await server.connect(try await server.addPrincipal("agent-free"))
            let high = try await free.authorize(TestServer.request(100_000))
            #expect(high.tier == "high")
            let claims = try AuthorizationVerifier(keySet: try await free.keys()).verify(high.jws, now: Int64(Date().timeIntervalSince1970)).claims
            #expect(claims.policyVersion == server.application.configuration.policy.version)
            await shopper.close()
            await free.close()
        }
    }
}
