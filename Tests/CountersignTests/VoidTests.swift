import CountersignClient
import Foundation
import Policy
import Synchronization
import TestSupport
import Testing
import Wire

/// Wall-clock seconds a test sets by hand.
final class SettableWallClock: Sendable {
    private let seconds: Mutex<Int64>

    init(_ seconds: Int64) {
        self.seconds = Mutex(seconds)
    }

    func advance(by seconds: Int64) {
        self.seconds.withLock { $0 += seconds }
    }

    var wallClock: WallClock {
        WallClock { self.seconds.withLock { $0 } }
    }
}

@Suite("Voiding an authorization", .timeLimit(.minutes(1)))
struct VoidTests {
    @Test("voiding gives the amount back to the budget; a second void answers the same; others' and unknown ids are refused")
    func voidReleasesBudget() async throws {
        let clock = SettableWallClock(1_795_612_455)
        let budgets = "budgets:\n  - { agent: agent-void, limit: { USD: 1000 }, window: day }\n"
        try await withServer(.init(budgets: budgets, wallClock: clock.wallClock)) { server in
            let client = try await server.connect(try await server.addPrincipal("agent-void"))
            let first = try await client.authorize(TestServer.request(800))
            let over = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(800)) }
            #expect(over?.code == .budgetExceeded)

            clock.advance(by: 5)
            let voided = try await client.void(authorizationID: first.authorizationID)
            #expect(voided == Voided(authorizationID: first.authorizationID, voidedAt: 1_795_612_460))
            clock.advance(by: 5)
            #expect(try await client.void(authorizationID: first.authorizationID) == voided, "voiding twice is the same void")
            #expect(try await client.authorize(TestServer.request(800)).tier == "standard", "the budget is free again")

            let other = try await server.connect(try await server.addPrincipal("agent-void-other"))
            let notYours = await #expect(throws: WireError.self) { try await other.void(authorizationID: first.authorizationID) }
            #expect(notYours?.code == .authorizationNotFound, "another agent's id is answered as an unknown one")
            #expect(notYours?.message == "no authorization '\(first.authorizationID)'", "in the same words: no oracle for other agents' ids")
            let unknown = await #expect(throws: WireError.self) { try await other.void(authorizationID: "no-such-id") }
            #expect(unknown?.code == .authorizationNotFound)
            let admin = try await server.connect(server.admin)
            let adminVoid = await #expect(throws: WireError.self) { try await admin.void(authorizationID: first.authorizationID) }
            #expect(adminVoid?.code == .forbidden)
            let denied = try await admin.auditEntries(from: 0, limit: 1000).entries.map(\.entry).filter { $0.contains(#""code":"BUDGET_EXCEEDED""#) }
            #expect(
                !denied.isEmpty && denied.allSatisfy { $0.contains(#""tier":"standard""#) && $0.contains(#""checks":"#) },
                "a refusal names the tier it was judged at: \(denied)")
            await client.close()
            await other.close()
            await admin.close()
        }
    }

    @Test("an expired authorization cannot be voided")
    func expired() async throws {
        let clock = SettableWallClock(1_795_612_455)
        try await withServer(.init(wallClock: clock.wallClock)) { server in
            let client = try await server.connect(try await server.addPrincipal("agent-late"))
            let authorization = try await client.authorize(TestServer.request(100))
            #expect(authorization.expiresAt == 1_795_612_455 + 300)
            clock.advance(by: 300)
            let error = await #expect(throws: WireError.self) { try await client.void(authorizationID: authorization.authorizationID) }
            #expect(error?.code == .authorizationExpired)
            await client.close()
        }
    }
}
