import CountersignClient
import CountersignServer
import Foundation
import Ledger
import Policy
import Signing
import TestSupport
import Testing
import Wire

/// Three tiers; the last needs two approvers within 15 minutes.
let approvalTiers = """
    tiers:
      - { name: standard, max_amount: { USD: 50000 }, key: standard, backend: software, lifetime: 5m }
      - { name: high, max_amount: { USD: 5000000 }, key: high, backend: hsm, lifetime: 2m }
      - { name: critical, max_amount: { USD: 50000000 }, key: critical, backend: hsm, lifetime: 1m, approval: { quorum: 2, ttl: 15m } }

    """

@Suite("Human approval of the highest tier", .timeLimit(.minutes(2)))
struct ApprovalTests {
    static let start: Int64 = 1_795_612_455
    static let budget = "budgets:\n  - { agent: agent-big, limit: { USD: 20000000 }, window: day }\n"

    /// The agent, two approvers and a plain admin.
    struct Cast {
        let agent: CountersignClient
        let alice: CountersignClient
        let bob: CountersignClient
        let admin: CountersignClient

        init(_ server: TestServer) async throws {
            self.agent = try await server.connect(try await server.addPrincipal("agent-big"))
            self.alice = try await server.connect(try await server.addPrincipal("alice", role: .approver))
            self.bob = try await server.connect(try await server.addPrincipal("bob", role: .approver))
            self.admin = try await server.connect(server.admin)
        }

        func close() async {
            for client in [self.agent, self.alice, self.bob, self.admin] { await client.close() }
        }
    }

    static func pending(_ outcome: AuthorizeOutcome) throws -> PendingAuthorization {
        guard case .pendingApproval(let pending) = outcome else { throw ClientError.unexpectedResponse("expected a pending approval, got \(outcome)") }
        return pending
    }

    @Test("two distinct approvers release the signature to the waiting agent; the approvers are in the signed claims")
    func quorum() async throws {
        let clock = SettableWallClock(Self.start)
        try await withServer(.init(budgets: Self.budget, tiers: approvalTiers, wallClock: clock.wallClock)) { server in
            let cast = try await Cast(server)
            let request = TestServer.request(12_000_000)
            let pending = try Self.pending(try await cast.agent.submit(request))
            #expect(pending.tier == "critical")
            #expect(pending.approvalsRequired == 2)
            #expect(pending.approvalExpiresAt == Self.start + 900)

            // The budget is held while it waits.
            let held = try await cast.agent.budgets(agent: "agent-big")
            #expect(held.budgets.map(\.spent) == [12_000_000])
            #expect(held.budgets.map(\.pending) == [12_000_000])

            // Approvers see the exact request, a readable summary, and the decision record.
            let list = try await cast.alice.listApprovals()
            #expect(list.map(\.authorizationID) == [pending.authorizationID])
            #expect(
                list.first?.summary
                    == "agent-big asks to pay 120000.00 USD to m-42 (MCC 5734) for \"USB-C cables\"; 2 x \"USB-C cable\"; tier critical needs 2 approval(s)")
            let detail = try await cast.admin.showApproval(id: pending.authorizationID)
            #expect(detail.request == request)
            #expect(detail.decision?.outcome == "pending_approval")
            #expect(detail.decision?.tier == "critical")

            // The agent waits on its connection for the decision.
            let agent = cast.agent
            let waiting = Task { try await agent.fetchAuthorization(id: pending.authorizationID, waitSeconds: 60) }

            let afterAlice = try await cast.alice.approve(id: pending.authorizationID)
            #expect(afterAlice.approval.approvers == ["alice"])
            #expect(afterAlice.approval.status == "pending_approval")
            let twice = await #expect(throws: WireError.self) { try await cast.alice.approve(id: pending.authorizationID) }
            #expect(twice?.code == .alreadyDecided, "one approver counts once")
            let selfApproval = await #expect(throws: WireError.self) { try await cast.agent.approve(id: pending.authorizationID) }
            #expect(selfApproval?.code == .forbidden, "the requesting agent can never approve")
            let plainAdmin = await #expect(throws: WireError.self) { try await cast.admin.approve(id: pending.authorizationID) }
            #expect(plainAdmin?.code == .forbidden, "an admin without the approver role cannot approve")

            clock.advance(by: 30)
            let afterBob = try await cast.bob.approve(id: pending.authorizationID)
            #expect(afterBob.approval.status == "authorized")
            #expect(afterBob.verdicts.map(\.approver) == ["alice", "bob"])

            guard case .authorized(let authorization) = try await waiting.value else {
                Issue.record("the waiting agent did not get the signature")
                return
            }
            #expect(authorization.authorizationID == pending.authorizationID)
            #expect(authorization.approvers == ["alice", "bob"])
            #expect(authorization.keyBackend == "hsm")
            let (_, claims) = try AuthorizationVerifier(keySet: try await cast.agent.keys()).verify(authorization.jws, now: Self.start + 31)
            #expect(claims.approvers == ["alice", "bob"])
            #expect(claims.iat == Self.start + 30)
            #expect(claims.amount == 12_000_000)
            #expect(claims.intentHash == IntentHash.of(request.intent))

            // Fetching later, or retrying the same request, returns the same signature; the hold is now spent.
            #expect(try await cast.agent.fetchAuthorization(id: pending.authorizationID) == .authorized(authorization))
            #expect(try await cast.agent.submit(request) == .authorized(authorization))
            let spent = try await cast.agent.budgets(agent: "agent-big")
            #expect(spent.budgets.map(\.spent) == [12_000_000])
            #expect(spent.budgets.map(\.pending) == [0])
            #expect(try await cast.alice.listApprovals().isEmpty)

            // The audit log has the pending decision, each verdict, and the approved decision with its approvers.
            let entries = try await cast.admin.auditEntries(from: 0, limit: 1000).entries.map(\.entry).filter { $0.contains(pending.authorizationID) }
            #expect(entries.contains { $0.contains(#""action":"pending_approval""#) })
            #expect(entries.contains { $0.contains(#""action":"approvals.approve""#) && $0.contains(#""actor":"alice""#) })
            #expect(entries.contains { $0.contains(#""action":"approvals.approve""#) && $0.contains(#""actor":"bob""#) })
            #expect(entries.contains { $0.contains(#""action":"approved""#) && $0.contains(#""approvers":["alice","bob"]"#) })
            #expect(
                entries.contains { $0.contains(#""action":"approved""#) && $0.contains(#""checks":"[{"#) }, "the quorum's entry carries the decision's checks")
            // The id was given when the request arrived and begins with that time; iat is the quorum's time.
            let idTime = try #require(Base64URL.decode(authorization.authorizationID)).prefix(4).reduce(Int64(0)) { $0 << 8 | Int64($1) }
            #expect(idTime == Self.start)
            await cast.close()
        }
    }

    @Test("the agent's texts are quoted in the list's summary: a quote, line feed or tab cannot forge an item or a row")
    func summaryQuotesTexts() async throws {
        let clock = SettableWallClock(Self.start)
        try await withServer(.init(budgets: Self.budget, tiers: approvalTiers, wallClock: clock.wallClock)) { server in
            let cast = try await Cast(server)
            let forged = "cables\"; 1 x \"nothing\n\tagent-other\t1.00 USD"
            let request = AuthorizeRequest(
                idempotencyKey: "forge-1", amount: 12_000_000, currency: "USD", merchantID: "m-42", merchantCategoryCode: "5734",
                intent: Intent(description: forged, lineItems: [LineItem(description: "a\tb", quantity: 1, unitAmount: 12_000_000)])
            )
            _ = try Self.pending(try await cast.agent.submit(request))
            let summary = try #require(try await cast.alice.listApprovals().first?.summary)
            #expect(!summary.contains("\n") && !summary.contains("\t"), "\(summary)")
            #expect(summary.contains(#"for "cables\"; 1 x \"nothing\n\tagent-other\t1.00 USD"; 1 x "a\tb""#), "\(summary)")
            await cast.close()
        }
    }

    @Test("a stop answers a held FETCH_AUTHORIZATION at once with the retryable SHUTTING_DOWN, not after its wait")
    func stopAnswersWaitingFetch() async throws {
        let clock = SettableWallClock(Self.start)
        // On a manual clock the 60 s wait never ends by itself: only the stop can answer it.
        let server = try await TestServer.start(.init(clock: ManualClock(), budgets: Self.budget, tiers: approvalTiers, wallClock: clock.wallClock))
        let agent = try await server.connect(try await server.addPrincipal("agent-big"))
        let pending = try Self.pending(try await agent.submit(TestServer.request(12_000_000)))
        let waiting = Task { try await agent.fetchAuthorization(id: pending.authorizationID, waitSeconds: 60) }
        try await server.stop()
        let error = await #expect(throws: WireError.self) { try await waiting.value }
        #expect(error?.code == .shuttingDown && error?.retryable == true, "\(String(describing: error))")
        await agent.close()
    }

    @Test("a FETCH_AUTHORIZATION waiting for approvers ends when its client resets the connection, not after its wait")
    func resetEndsWaitingFetch() async throws {
        let clock = SettableWallClock(Self.start)
        // On a manual clock the 60 s wait never ends by itself: only the connection's end can end it.
        try await withServer(.init(clock: ManualClock(), budgets: Self.budget, tiers: approvalTiers, wallClock: clock.wallClock)) { server in
            let credential = try await server.addPrincipal("agent-big")
            let agent = try await server.connect(credential)
            let pending = try Self.pending(try await agent.submit(TestServer.request(12_000_000)))
            let raw = try SlowClient(port: server.port)
            try raw.handshake(principal: credential.principal, key: try credential.key())
            let fetch = FetchAuthorizationRequest(authorizationID: pending.authorizationID, waitSeconds: 60)
            raw.send(Frame(type: .fetchAuthorization, requestID: 3, body: WireJSON.encode(fetch)))
            // Answered in order of arrival or not, the PING's answer shows the server has read the FETCH before it.
            raw.send(Frame(type: .ping, requestID: 4, body: WireJSON.encode(Empty())))
            #expect(raw.receive()?.requestID == 4)
            raw.reset()
            let cancelled = #"countersign_requests_total{outcome="cancelled",type="FETCH_AUTHORIZATION"}"#
            try await eventually("the waiting FETCH_AUTHORIZATION is cancelled with its connection") {
                let metrics = try? await InteropTests.get(server, "/metrics")
                return metrics.flatMap { MetricsTests.value(cancelled, in: $0.0) } == 1
            }
            // The approval goes on: the agent's own connection fetches it.
            #expect(try Self.pending(try await agent.fetchAuthorization(id: pending.authorizationID)).authorizationID == pending.authorizationID)
            await agent.close()
        }
    }

    @Test("one deny refuses the request and releases its hold")
    func deny() async throws {
        let clock = SettableWallClock(Self.start)
        try await withServer(.init(budgets: Self.budget, tiers: approvalTiers, wallClock: clock.wallClock)) { server in
            let cast = try await Cast(server)
            let pending = try Self.pending(try await cast.agent.submit(TestServer.request(12_000_000)))
            _ = try await cast.alice.approve(id: pending.authorizationID)
            let denied = try await cast.bob.deny(id: pending.authorizationID)
            #expect(denied.approval.status == "denied")
            let fetched = await #expect(throws: WireError.self) { try await cast.agent.fetchAuthorization(id: pending.authorizationID) }
            #expect(fetched?.code == .approvalDenied)
            let late = await #expect(throws: WireError.self) { try await cast.bob.approve(id: pending.authorizationID) }
            #expect(late?.code == .approvalClosed)
            #expect(try await cast.agent.budgets(agent: "agent-big").budgets.map(\.spent) == [0])
            await cast.close()
        }
    }

    @Test("when the approval deadline passes, the request is refused and its hold released")
    func expiry() async throws {
        let clock = SettableWallClock(Self.start)
        let budget = "budgets:\n  - { agent: agent-big, limit: { USD: 15000000 }, window: day }\n"
        try await withServer(.init(budgets: budget, tiers: approvalTiers, wallClock: clock.wallClock)) { server in
            let cast = try await Cast(server)
            let pending = try Self.pending(try await cast.agent.submit(TestServer.request(12_000_000)))
            let over = await #expect(throws: WireError.self) { try await cast.agent.submit(TestServer.request(4_000_000)) }
            #expect(over?.code == .budgetExceeded, "the pending request holds its amount")

            clock.advance(by: 899)
            #expect(try await cast.alice.listApprovals().count == 1)
            clock.advance(by: 1)
            #expect(try await cast.alice.listApprovals().isEmpty)
            let fetched = await #expect(throws: WireError.self) { try await cast.agent.fetchAuthorization(id: pending.authorizationID) }
            #expect(fetched?.code == .approvalExpired)
            let approve = await #expect(throws: WireError.self) { try await cast.alice.approve(id: pending.authorizationID) }
            #expect(approve?.code == .approvalExpired)
            #expect(try await cast.agent.budgets(agent: "agent-big").budgets.map(\.spent) == [0])
            #expect(try await cast.agent.authorize(TestServer.request(4_000_000)).tier == "high", "the released hold is spendable again")
            await cast.close()
        }
    }

    @Test("20 concurrent retries of a request that needs approval hold its budget once")
    func idempotentPending() async throws {
        let clock = SettableWallClock(Self.start)
        try await withServer(.init(budgets: Self.budget, tiers: approvalTiers, wallClock: clock.wallClock)) { server in
            let cast = try await Cast(server)
            let request = TestServer.request(12_000_000)
            let agent = cast.agent
            let outcomes = try await withThrowingTaskGroup(of: AuthorizeOutcome.self) { group in
                for _ in 0..<20 { group.addTask { try await agent.submit(request) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(outcomes.map(\.authorizationID)).count == 1)
            #expect(try await cast.agent.budgets(agent: "agent-big").budgets.map(\.pending) == [12_000_000])
            await cast.close()
        }
    }

    @Test("only approvers decide, only agents fetch their own, and unknown ids are refused")
    func roles() async throws {
        try await withServer(.init(tiers: approvalTiers)) { server in
            let cast = try await Cast(server)
            let pending = try Self.pending(try await cast.agent.submit(TestServer.request(12_000_000)))
            let other = try await server.connect(try await server.addPrincipal("agent-other"))
            let notYours = await #expect(throws: WireError.self) { try await other.fetchAuthorization(id: pending.authorizationID) }
            #expect(notYours?.code == .authorizationNotFound)
            let agentList = await #expect(throws: WireError.self) { try await cast.agent.listApprovals() }
            #expect(agentList?.code == .forbidden)
            let unknown = await #expect(throws: WireError.self) { try await cast.alice.approve(id: "no-such-id") }
            #expect(unknown?.code == .authorizationNotFound)
            let othersBudget = await #expect(throws: WireError.self) { try await other.budgets(agent: "agent-big") }
            #expect(othersBudget?.code == .forbidden)
            let authorizer = await #expect(throws: ClientError.self) { try await cast.agent.authorize(TestServer.request(12_000_001)) }
            if case .pendingApproval(let second)? = authorizer {
                #expect(second.approvalsRequired == 2)
            } else {
                Issue.record("authorize() must say the request is pending")
            }
            await other.close()
            await cast.close()
        }
    }
}
