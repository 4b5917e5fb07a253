import Audit
import CountersignCore
import Crypto
import Foundation
import GRDB
import Ledger
import Logging
import Policy
import PostgresLedger
import TestSupport
import Testing

/// One suite, two stores: every behaviour the server relies on, run against SQLite and against PostgreSQL, so
/// neither can drift from the other.
@Suite("The store's protocols: SQLite and PostgreSQL alike")
struct StoreConformanceTests {
    static func record(
        _ id: String, agent: String = "agent-a", key: String? = nil, amount: Int64 = 100, currency: String = "USD", createdAt: Int64 = 1_000,
        status: AuthorizationRecord.Status = .authorized, quorum: Int? = nil, approvalExpiresAt: Int64? = nil, kid: String = "standard/v1"
    ) -> AuthorizationRecord {
        AuthorizationRecord(
            id: id, agent: agent, idempotencyKey: key ?? "key-\(id)", requestHash: Data(id.utf8), response: Data("{\"id\":\"\(id)\"}".utf8), amount: amount,
            currency: currency, merchant: "m-1", tier: "standard", kid: kid, expiresAt: createdAt + 300, createdAt: createdAt, status: status,
            decision: Data("{}".utf8), request: Data("{\"r\":1}".utf8), quorum: quorum, approvalExpiresAt: approvalExpiresAt
        )
    }

    static func recorded(_ outcome: RecordingOutcome) throws -> AuthorizationRecord {
        guard case .recorded(let record) = outcome else { throw FixtureError(reason: "expected a recorded authorization, got \(outcome)") }
        return record
    }

    @Test(
        "an authorization reads back with every column; its idempotency key finds it; a second record of the key returns the first",
        arguments: StoreKind.allCases)
    func authorizations(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        var pending = Self.record("jti-1", status: .pendingApproval, quorum: 2, approvalExpiresAt: 1_200)
        pending.voidedAt = nil
        let stored = try Self.recorded(try await store.recordAuthorization(pending, scopes: [.agent("agent-a"), .team("t")]))
        #expect(stored.auditIndex != nil)
        var expected = pending
        expected.auditIndex = stored.auditIndex
        #expect(try await store.authorization(id: "jti-1") == expected)
        #expect(try await store.authorization(agent: "agent-a", idempotencyKey: "key-jti-1", certain: true) == expected)
        #expect(try await store.authorization(agent: "agent-b", idempotencyKey: "key-jti-1", certain: true) == nil)
        let twin = try Self.recorded(try await store.recordAuthorization(Self.record("jti-2", key: "key-jti-1")))
        #expect(twin.id == "jti-1", "the first record of the key is the answer")
        #expect(try await store.authorizationCount() == 1)
        #expect(try await store.spending(scope: .team("t"), currency: "USD", since: 0, now: 1_100) == ScopeSpending(counted: 100, pending: 100))
        #expect(try await store.spent(scope: .team("t"), currency: "USD", since: 0, now: 1_200) == 0, "a pending hold stops counting at its deadline")
    }

    @Test("a budget is exact to the unit under 300 concurrent recordings, and a refusal names the limit it would pass", arguments: StoreKind.allCases)
    func budgetRace(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        let limit = BudgetCheck(scope: .organization("o"), windowStart: 0, limit: 10_000, window: .day)
        let outcomes = try await withThrowingTaskGroup(of: RecordingOutcome.self) { group in
            for index in 0..<300 {
                group.addTask {
                    let record = Self.record("jti-\(index)", agent: "agent-\(index % 7)", amount: 77)
                    return try await store.recordAuthorization(record, scopes: [.agent(record.agent), .organization("o")], limits: [limit])
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let recorded = outcomes.filter { if case .recorded = $0 { true } else { false } }.count
        #expect(recorded == 10_000 / 77, "129 × 77 = 9,933 fits; one more would not")
        for outcome in outcomes {
            if case .overLimit(let check, let spent) = outcome {
                #expect(check == limit)
                #expect(spent > 10_000 - 77)
            }
        }
        #expect(try await store.spent(scope: .organization("o"), currency: "USD", since: 0, now: 1_100) == Int64(recorded) * 77)
        #expect(try await store.authorizationCount() == recorded)
    }

    @Test("20 concurrent recordings of one key (the same group or not): one record, one hold, one answer for all", arguments: StoreKind.allCases)
    func concurrentTwins(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        let limit = BudgetCheck(scope: .agent("agent-a"), windowStart: 0, limit: 150, window: .day)
        let answers = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<20 {
                group.addTask {
                    try Self.recorded(try await store.recordAuthorization(Self.record("jti-\(index)", key: "one-key", amount: 100), limits: [limit])).id
                }
            }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(answers.count == 1, "every twin is answered with the one record")
        #expect(try await store.authorizationCount() == 1)
        #expect(try await store.spent(agent: "agent-a", currency: "USD", since: 0) == 100, "held once: a second hold would pass the limit of 150")
        let entries = try await store.auditEntries(from: 0, limit: 100)
        #expect(entries.count == 20, "each recording has its entry")
    }

    @Test(
        "reads at the same moment each get their own answer: 60 idempotency lookups (found, missing, repeated), 100 audit indexes all distinct",
        arguments: StoreKind.allCases)
    func concurrentReads(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        for n in 0..<10 {
            _ = try Self.recorded(try await store.recordAuthorization(Self.record("jti-\(n)", key: "key-\(n)", amount: 1)))
        }
        // PostgreSQL sends the lookups (and the reservations) that wait together as one statement: each must still
        // get its own row, or none.
        let found = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
            for n in 0..<60 {
                group.addTask { (n, try await store.authorization(agent: n < 50 ? "agent-a" : "agent-b", idempotencyKey: "key-\(n % 20)", certain: true)?.id) }
            }
            return try await group.reduce(into: [Int: String?]()) { $0[$1.0] = $1.1 }
        }
        for n in 0..<60 {
            let expected = n < 50 && n % 20 < 10 ? "jti-\(n % 20)" : nil
            #expect(found[n] == .some(expected), "lookup \(n)")
        }
        let indexes = try await withThrowingTaskGroup(of: Int64.self) { group in
            for _ in 0..<100 { group.addTask { try await store.reserveAuditIndex() } }
            return try await group.reduce(into: [Int64]()) { $0.append($1) }
        }
        #expect(Set(indexes).count == 100)
        #expect((indexes.max() ?? 0) - (indexes.min() ?? 0) == 99, "none skipped")
    }

    @Test("a void releases the holds, once; another agent's id is unknown in the same words", arguments: StoreKind.allCases)
    func voids(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        _ = try await store.recordAuthorization(Self.record("jti-1"))
        let error = await #expect(throws: LedgerError.self) { try await store.voidAuthorization(id: "jti-1", agent: "agent-b", at: 1_010) }
        #expect(error?.code == .authorizationNotFound)
        #expect(error?.reason == "no authorization 'jti-1'")
        let voided = try await store.voidAuthorization(id: "jti-1", agent: "agent-a", at: 1_010)
        #expect(voided.voidedAt == 1_010)
        #expect(try await store.voidAuthorization(id: "jti-1", agent: "agent-a", at: 1_020).voidedAt == 1_010)
        #expect(try await store.spent(agent: "agent-a", currency: "USD", since: 0) == 0)
        _ = try await store.recordAuthorization(Self.record("jti-2"))
        let expired = await #expect(throws: LedgerError.self) { try await store.voidAuthorization(id: "jti-2", agent: "agent-a", at: 5_000) }
        #expect(expired?.code == .authorizationExpired)
    }

    @Test("refusals are kept with their audit entry", arguments: StoreKind.allCases)
    func refusals(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        try await store.recordRefusal(RefusalRecord(agent: "agent-a", idempotencyKey: "k", code: "BUDGET_EXCEEDED", decision: Data("{}".utf8), createdAt: 5))
        let refusals = try await store.refusals(agent: "agent-a")
        #expect(refusals.map(\.code) == ["BUDGET_EXCEEDED"])
        #expect(refusals.first?.auditIndex != nil)
        let entries = try await store.auditEntries(from: 0, limit: 10)
        #expect(entries.count == 1)
    }

    @Test("the agent's history for escalation: count, mean rounded half up, merchants paid, recent spend", arguments: StoreKind.allCases)
    func spendingFacts(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        for (index, amount) in [100, 101, 250].enumerated() {
            _ = try await store.recordAuthorization(Self.record("jti-\(index)", amount: Int64(amount), createdAt: 1_000 + Int64(index)))
        }
        let facts = try await store.spendingFacts(agent: "agent-a", currency: "USD", merchant: "m-1", historySince: 0, splittingSince: 1_001, now: 1_010)
        #expect(facts == SpendingFacts(historyCount: 3, historyMeanAmount: 150, merchantPaidBefore: true, recentSpendAtMerchant: 351))
        let none = try await store.spendingFacts(agent: "agent-a", currency: "USD", merchant: "m-2", historySince: 0, splittingSince: 0, now: 1_010)
        #expect(!none.merchantPaidBefore && none.recentSpendAtMerchant == 0)
    }

    @Test("an agent's authorizations in (after, upTo], oldest first and by id within a second, in both stores the same", arguments: StoreKind.allCases)
    func agentHistory(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        // Ids that sort differently by bytes and by a locale's collation ("B" < "a" < "b" only by bytes).
        for (id, createdAt) in [("b-2", 1_002), ("B-2", 1_002), ("a-2", 1_002), ("x-1", 1_001), ("y-3", 1_003), ("z-4", 1_004)] {
            _ = try await store.recordAuthorization(Self.record(id, createdAt: Int64(createdAt)))
        }
        _ = try await store.recordAuthorization(Self.record("other", agent: "agent-b", createdAt: 1_002))
        let page = try await store.authorizations(agent: "agent-a", createdAfter: 1_001, upTo: 1_003)
        #expect(page.map(\.id) == ["B-2", "a-2", "b-2", "y-3"], "after is excluded, upTo included, ties by the id's bytes")
        #expect(try await store.authorizations(agent: "agent-a", createdAfter: 1_004, upTo: 2_000).isEmpty)
    }

    @Test(
        "the history a replay and a report read: decisions in a window in order, requests kept, verdicts, holds of a wider range", arguments: StoreKind.allCases
    )
    func history(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        _ = try await store.recordAuthorization(Self.record("early", createdAt: 900), scopes: [.agent("agent-a")])
        _ = try await store.recordAuthorization(Self.record("b-1", createdAt: 1_001), scopes: [.agent("agent-a")])
        _ = try await store.recordAuthorization(
            Self.record("p-1", createdAt: 1_002, status: .pendingApproval, quorum: 1, approvalExpiresAt: 1_900), scopes: [.agent("agent-a")])
        _ = try await store.decideApproval(id: "p-1", approver: "alice", verdict: .deny, at: 1_030)
        try await store.recordRefusal(
            RefusalRecord(
                agent: "agent-b", idempotencyKey: "k", code: "BUDGET_EXCEEDED", decision: Data("{}".utf8), createdAt: 1_003, request: Data("{\"r\":2}".utf8)))
        _ = try await store.recordAuthorization(Self.record("late", createdAt: 2_000), scopes: [.agent("agent-a")])
        await store.close()

        let range = StoreHistory.Range(from: 1_000, to: 2_000, holdsFrom: 800)
        let history: StoreHistory
        if let path = fixture.path {
            history = try StoreHistoryFile(path: path).read(range)
        } else {
            history = try await PostgresHistoryReader.read(range, from: fixture.postgres!, logger: Logger(label: "test"))
        }
        #expect(history.authorizations.map(\.id) == ["b-1", "p-1"], "from included, to excluded")
        #expect(history.authorizations.first?.request == Data("{\"r\":1}".utf8))
        #expect(history.authorizations.last?.status == .denied)
        #expect(history.refusals.map(\.code) == ["BUDGET_EXCEEDED"])
        #expect(history.refusals.first?.request == Data("{\"r\":2}".utf8), "the refused request is kept")
        #expect(history.approvals == [ApprovalRecord(authorizationID: "p-1", approver: "alice", verdict: .deny, decidedAt: 1_030)])
        #expect(history.holds.map(\.authorizationID) == ["early", "b-1", "p-1"], "holds from holdsFrom")
        #expect(history.holds.last?.counts(at: 1_029) == true)
        #expect(history.holds.last?.counts(at: 1_030) == false, "released by the deny")
    }

    @Test("passkeys: an enrollment link registers one passkey, once, before it expires; the counter only moves forward", arguments: StoreKind.allCases)
    func passkeys(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        let (hash, other) = (Data(repeating: 1, count: 32), Data(repeating: 2, count: 32))
        try await store.insertEnrollment(EnrollmentRecord(tokenHash: hash, principal: "alice", createdBy: "admin", createdAt: 100, expiresAt: 1_000))
        try await store.insertEnrollment(EnrollmentRecord(tokenHash: other, principal: "bob", createdBy: "admin", createdAt: 100, expiresAt: 1_000))
        #expect(try await store.enrollment(tokenHash: hash)?.isOpen(at: 999) == true)
        let key = PasskeyRecord(credentialID: Data([9, 9]), principal: "alice", publicKey: Data([0xA0]), algorithm: "ES256", signCount: 0, createdAt: 200)
        let wrongPrincipal = await #expect(throws: LedgerError.self) { try await store.completeEnrollment(tokenHash: other, passkey: key, at: 200) }
        #expect(wrongPrincipal?.code == .enrollmentInvalid, "bob's link cannot register alice's key")
        try await store.completeEnrollment(tokenHash: hash, passkey: key, at: 200)
        let twice = await #expect(throws: LedgerError.self) { try await store.completeEnrollment(tokenHash: hash, passkey: key, at: 201) }
        #expect(twice?.code == .enrollmentInvalid)
        var bobs = key
        bobs.principal = "bob"
        bobs.credentialID = Data([7])
        let late = await #expect(throws: LedgerError.self) { try await store.completeEnrollment(tokenHash: other, passkey: bobs, at: 1_000) }
        #expect(late?.code == .enrollmentInvalid, "expired")
        #expect(try await store.passkeys(principal: "alice").map(\.credentialID) == [Data([9, 9])])
        #expect(try await store.passkey(credentialID: Data([9, 9]))?.principal == "alice")
        #expect(try await store.passkey(credentialID: Data([7])) == nil)
        #expect(try await store.advanceSignCount(credentialID: Data([9, 9]), to: 0, at: 300), "an authenticator without a counter")
        #expect(try await store.advanceSignCount(credentialID: Data([9, 9]), to: 5, at: 301))
        #expect(try await !store.advanceSignCount(credentialID: Data([9, 9]), to: 5, at: 302), "the same counter again")
        #expect(try await !store.advanceSignCount(credentialID: Data([9, 9]), to: 3, at: 303))
        #expect(try await !store.advanceSignCount(credentialID: Data([9, 9]), to: 0, at: 304))
        #expect(try await store.passkey(credentialID: Data([9, 9]))?.signCount == 5)
    }

    @Test("approvals: a quorum of distinct approvers, one caller completes it; deny releases; the rules refuse the rest", arguments: StoreKind.allCases)
    func approvals(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        _ = try await store.recordAuthorization(Self.record("jti-1", status: .pendingApproval, quorum: 2, approvalExpiresAt: 2_000))
        _ = try await store.recordAuthorization(Self.record("jti-2", status: .pendingApproval, quorum: 1, approvalExpiresAt: 2_000))
        _ = try await store.recordAuthorization(Self.record("jti-3", status: .pendingApproval, quorum: 1, approvalExpiresAt: 1_050))
        #expect(try await store.pendingApprovals(now: 1_010).map(\.id) == ["jti-1", "jti-2", "jti-3"])
        let own = await #expect(throws: LedgerError.self) { try await store.decideApproval(id: "jti-1", approver: "agent-a", verdict: .approve, at: 1_010) }
        #expect(own?.code == .forbidden)
        guard case .approvedBy(_, let first) = try await store.decideApproval(id: "jti-1", approver: "alice", verdict: .approve, at: 1_010) else {
            throw FixtureError(reason: "one approval of two")
        }
        #expect(first == ["alice"])
        let again = await #expect(throws: LedgerError.self) { try await store.decideApproval(id: "jti-1", approver: "alice", verdict: .approve, at: 1_011) }
        #expect(again?.code == .alreadyDecided)
        // Two approvers at once: exactly one completes the quorum.
        async let bob = store.decideApproval(id: "jti-1", approver: "bob", verdict: .approve, at: 1_012)
        async let carol = store.decideApproval(id: "jti-1", approver: "carol", verdict: .approve, at: 1_012)
        let steps = await [try? bob, try? carol]
        let completed = steps.filter { if case .quorumReached = $0 { true } else { false } }.count
        #expect(completed == 1)
        let closedOrCompleted = steps.compactMap { $0 }.count
        #expect(closedOrCompleted >= 1)
        let audit = AuditEntry(
            index: try await store.reserveAuditIndex(), time: 1_013, kind: "decision", action: "authorized", actor: "agent-a", subject: "jti-1")
        let completedRecord = try await store.completeApproval(id: "jti-1", response: Data("jws".utf8), kid: "high/v1", expiresAt: 1_400, audit: audit)
        #expect(completedRecord.status == .authorized)
        #expect(try await store.authorization(id: "jti-1")?.response == Data("jws".utf8))
        #expect(try await store.approvals(of: "jti-1").count >= 2)
        guard case .denied = try await store.decideApproval(id: "jti-2", approver: "alice", verdict: .deny, at: 1_020) else {
            throw FixtureError(reason: "a deny")
        }
        #expect(try await store.spending(scope: .agent("agent-a"), currency: "USD", since: 0, now: 1_021).pending == 100, "only jti-3 still held")
        let expired = try await store.expirePendingApprovals(at: 1_100) { index, record in
            AuditEntry(index: index, time: 1_100, kind: "decision", action: "expired", actor: "server", subject: record.id)
        }
        #expect(expired.map(\.id) == ["jti-3"])
        #expect(try await store.expirePendingApprovals(at: 1_100) { index, _ in AuditEntry(index: index, time: 1, kind: "k", action: "a", actor: "s") }.isEmpty)
        #expect(try await store.pendingApprovals(now: 1_100).isEmpty)
    }

    @Test(
        "the quorum makes the holds count for good: past the approval deadline, before the signature is stored, the budget still counts them",
        arguments: StoreKind.allCases)
    func approvedHoldsOutliveTheDeadline(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        _ = try await store.recordAuthorization(
            Self.record("jti-q", status: .pendingApproval, quorum: 1, approvalExpiresAt: 1_050), scopes: [.agent("agent-a"), .team("t")])
        guard case .quorumReached = try await store.decideApproval(id: "jti-q", approver: "alice", verdict: .approve, at: 1_049) else {
            throw FixtureError(reason: "the one approval needed")
        }
        // The signature is not stored yet (a slow or failing HSM) and the deadline passes meanwhile.
        for scope in [BudgetScope.agent("agent-a"), .team("t")] {
            #expect(try await store.spent(scope: scope, currency: "USD", since: 0, now: 1_100) == 100, "\(scope)")
        }
        #expect(try await store.expirePendingApprovals(at: 1_100) { index, _ in AuditEntry(index: index, time: 1, kind: "k", action: "a", actor: "s") }.isEmpty)
        // Never signed (the tier was removed, say): its agent withdraws it, past the deadline, and its holds are released.
        let withdrawn = try await store.voidAuthorization(id: "jti-q", agent: "agent-a", at: 1_200)
        #expect(withdrawn.voidedAt == 1_200)
        for scope in [BudgetScope.agent("agent-a"), .team("t")] {
            #expect(try await store.spent(scope: scope, currency: "USD", since: 0, now: 1_200) == 0, "\(scope)")
        }
        let audit = AuditEntry(
            index: try await store.reserveAuditIndex(), time: 1_201, kind: "decision", action: "authorized", actor: "agent-a", subject: "jti-q")
        let late = await #expect(throws: LedgerError.self) {
            try await store.completeApproval(id: "jti-q", response: Data("jws".utf8), kid: "high/v1", expiresAt: 1_500, audit: audit)
        }
        #expect(late?.code == .approvalClosed, "a withdrawn authorization is never signed afterwards")
    }

    @Test("principals: unique ids for ever, a rotation keeps the old key for its grace, a revocation sticks", arguments: StoreKind.allCases)
    func principals(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        let alice = PrincipalRecord(id: "alice", role: "approver", algorithm: "Ed25519", publicKey: Data([1, 2]), createdAt: 10)
        try await store.insertPrincipal(alice)
        let taken = await #expect(throws: LedgerError.self) { try await store.insertPrincipal(alice) }
        #expect(taken?.code == .principalExists)
        let rotated = try await store.rotatePrincipalKey(id: "alice", algorithm: "ES256", publicKey: Data([3]), graceUntil: 99)
        #expect(rotated.previousPublicKey == Data([1, 2]) && rotated.publicKey == Data([3]) && rotated.previousKeyExpiresAt == 99)
        #expect(try await store.principal(id: "alice") == rotated)
        _ = try await store.revokePrincipal(id: "alice", at: 50)
        #expect(try await store.revokePrincipal(id: "alice", at: 60).revokedAt == 50)
        let gone = await #expect(throws: LedgerError.self) {
            try await store.rotatePrincipalKey(id: "alice", algorithm: "ES256", publicKey: Data(), graceUntil: 1)
        }
        #expect(gone?.code == .principalNotFound)
        #expect(try await store.principals().map(\.id) == ["alice"])
    }

    @Test("key versions: never reused, one active, retired only when unused (or forced), destroyed by two admins", arguments: StoreKind.allCases)
    func keyVersions(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        func key(_ version: Int, _ state: KeyVersionRecord.State) -> KeyVersionRecord {
            KeyVersionRecord(
                name: "standard", version: version, backend: "software", state: state, publicKey: Data([UInt8(version)]), sealedPrivateKey: Data([9]),
                hsmLabel: nil, hsmID: nil, createdAt: 1
            )
        }
        try await store.insertKeyVersion(key(1, .active))
        let reused = await #expect(throws: LedgerError.self) { try await store.insertKeyVersion(key(1, .pending)) }
        #expect(reused?.code == .keyVersionExists)
        #expect(try await store.nextKeyVersion(name: "standard") == 2)
        try await store.insertKeyVersion(key(2, .pending))
        let changed = try await store.activateKeyVersion(name: "standard", version: 2, at: 5)
        #expect(changed.map(\.kid) == ["standard/v2", "standard/v1"])
        #expect(changed.map(\.state) == [.active, .verifyOnly])
        _ = try await store.recordAuthorization(Self.record("jti-1", createdAt: 1_000, kid: "standard/v1"))
        let inUse = await #expect(throws: LedgerError.self) { try await store.retireKeyVersion(name: "standard", version: 1, force: false, at: 1_010) }
        #expect(inUse?.code == .keyInUse)
        #expect(try await store.retireKeyVersion(name: "standard", version: 1, force: false, at: 2_000).state == .retired)
        guard case .awaitingConfirmation = try await store.requestDestruction(name: "standard", version: 1, by: "ann", at: 2_000, confirmWithin: 60) else {
            throw FixtureError(reason: "the first admin waits for a second")
        }
        let same = await #expect(throws: LedgerError.self) {
            try await store.requestDestruction(name: "standard", version: 1, by: "ann", at: 2_001, confirmWithin: 60)
        }
        #expect(same?.code == .dualControl)
        guard case .confirmed(_, let requestedBy) = try await store.requestDestruction(name: "standard", version: 1, by: "ben", at: 2_002, confirmWithin: 60)
        else {
            throw FixtureError(reason: "a second admin confirms")
        }
        #expect(requestedBy == "ann")
        let destroyed = try await store.markDestroyed(name: "standard", version: 1, at: 2_003)
        #expect(destroyed.sealedPrivateKey == nil && destroyed.state == .destroyed)
        #expect(try await store.keyVersion(name: "standard", version: 1) == destroyed)
        #expect(try await store.keyVersions().map(\.version) == [1, 2])
        #expect(try await store.signatureCounts() == ["standard/v1": 1])
    }

    @Test("settings: the first value stored wins a race; a set replaces it", arguments: StoreKind.allCases)
    func settings(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        let values = try await withThrowingTaskGroup(of: Data.self) { group in
            for index in 0..<20 { group.addTask { try await store.setting("modes", storingIfAbsent: Data([UInt8(index)])) } }
            return try await group.reduce(into: Set<Data>()) { $0.insert($1) }
        }
        #expect(values.count == 1)
        try await store.setSetting("modes", to: Data("x".utf8))
        #expect(try await store.setting("modes") == Data("x".utf8))
        #expect(try await store.setting("absent") == nil)
    }

    @Test("the audit log: entries committed out of order, a tree over the prefix, a failed index filled as lost, checkpoints", arguments: StoreKind.allCases)
    func auditLog(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        let first = try await store.reserveAuditIndex()
        let second = try await store.reserveAuditIndex()
        #expect(second == first + 1)
        try await store.recordAudit(AuditEntry(index: second, time: 1, kind: "server", action: "b", actor: "server"))
        #expect(store.auditSize == 0, "index \(first) is not written yet: the prefix stops before it")
        try await store.recordAudit(AuditEntry(index: first, time: 1, kind: "server", action: "a", actor: "server"))
        #expect(store.auditSize == 2)
        let appended = try await store.appendAudit { AuditEntry(index: $0, time: 2, kind: "server", action: "c", actor: "server") }
        #expect(appended == 2)
        let entries = try await store.auditEntries(from: 0, limit: 10)
        #expect(entries.map(\.index) == [0, 1, 2])
        let leaves = try await store.auditLeafHashes(size: 3)
        #expect(leaves == entries.map { Merkle.leafHash($0.entry) })
        #expect(store.auditHead.root == Merkle.root(leaves[...]))
        // A checkpoint, signed as the server signs one, and the store opened again checks the log against it.
        let key = P256.Signing.PrivateKey()
        let head = store.auditHead
        let checkpoint = Checkpoint(origin: "test/audit", size: head.size, rootHash: head.root, time: 3)
        let signature = try key.signature(for: Data(checkpoint.body.utf8))
        let note = checkpoint.note(keyName: "test/audit", publicKey: key.publicKey, signature: signature)
        try await store.storeCheckpoint(CheckpointRecord(size: head.size, rootHash: Data(head.root), time: 3, note: note, kid: "audit/v1"))
        #expect(try await store.latestCheckpoint()?.size == 3)
        #expect(try await store.checkpoint(size: 3)?.note == note)
        #expect(try await store.checkpoint(size: 2) == nil)
        #expect(try await store.checkpointCount() == 1)
        #expect(try await store.signatureCounts()["audit/v1"] == 1)
        await store.close()
        let reopened = try await fixture.open()
        #expect(reopened.auditSize == 3)
        #expect(reopened.auditHead.root == head.root)
        await reopened.close()
    }

    @Test("a write that fails leaves its index as a hole, and the next commit fills it with a lost entry", arguments: StoreKind.allCases)
    func lostIndex(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        defer { Task { await store.close() } }
        _ = try await store.recordAuthorization(Self.record("jti-1", status: .pendingApproval, quorum: 1, approvalExpiresAt: 2_000))
        // completeApproval of a record that is not approved: refused, and its reserved index is given up.
        let index = try await store.reserveAuditIndex()
        let refused = await #expect(throws: LedgerError.self) {
            try await store.completeApproval(
                id: "jti-1", response: Data(), kid: "k", expiresAt: 1,
                audit: AuditEntry(index: index, time: 1, kind: "decision", action: "authorized", actor: "a"))
        }
        #expect(refused?.code == .approvalClosed)
        try await store.appendAudit { AuditEntry(index: $0, time: 2, kind: "server", action: "after", actor: "server") }
        let entries = try await store.auditEntries(from: 0, limit: 10)
        #expect(entries.map(\.index) == [0, 1, 2])
        let filler = try #require(entries.first { $0.index == index })
        #expect(String(decoding: filler.entry, as: UTF8.self).contains("\"action\":\"lost\""))
        #expect(store.auditSize == 3)
    }

    @Test("a changed entry is found when the store opens, at its index", arguments: StoreKind.allCases)
    func tamperedEntry(_ kind: StoreKind) async throws {
        guard let fixture = try await StoreFixture.make(kind) else { return }
        let store = try await fixture.open()
        for action in ["a", "b", "c"] {
            try await store.appendAudit { AuditEntry(index: $0, time: 1, kind: "server", action: action, actor: "server") }
        }
        await store.close()
        switch kind {
        case .sqlite:
            try await AuditLogTests.openForTampering(fixture.path!).write { db in
                try db.execute(sql: "UPDATE auditEntry SET entry = CAST('{}' AS BLOB) WHERE idx = 1")
            }
        case .postgres:
            try await PostgresTestServer.shared!.execute("UPDATE auditEntry SET entry = '\\x7b7d' WHERE idx = 1", database: fixture.postgres!.database)
        }
        let error = await #expect(throws: LedgerError.self) { _ = try await fixture.open() }
        #expect(error?.code == .auditLogMismatch)
        #expect(error?.reason.contains("entry 1 was changed") == true)
    }
}
