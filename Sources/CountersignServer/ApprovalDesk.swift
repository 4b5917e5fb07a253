import Audit
import CanonicalJSON
import Crypto
import Foundation
import Ledger
import Logging
import NIOCore
import Policy
import Signing
import Wire

/// Approvals: the answer an agent gets for an authorization at any stage, the approvers' verdicts, and the
/// signature that the quorum releases.
final class ApprovalDesk: Sendable {
    let store: any Store
    let signer: AuthorizationSigner
    let policy: PolicyEngine
    let audit: AuditDesk
    /// Wakes the agents waiting in FETCH_AUTHORIZATION when their authorization changes.
    let notifier: ApprovalNotifier
    let wallClock: WallClock
    let time: MonotonicTime
    let metrics: ServerMetrics
    let logger: Logger

    init(
        store: any Store, signer: AuthorizationSigner, policy: PolicyEngine, audit: AuditDesk, notifier: ApprovalNotifier, wallClock: WallClock,
        time: MonotonicTime, metrics: ServerMetrics, logger: Logger
    ) {
        self.store = store
        self.signer = signer
        self.policy = policy
        self.audit = audit
        self.notifier = notifier
        self.wallClock = wallClock
        self.time = time
        self.metrics = metrics
        self.logger = logger
    }

    /// The answer for a stored authorization now: its signed authorization, its pending state, or why it
    /// will never be signed. An approved one that is not signed yet (the HSM failed) is signed now.
    func outcome(of record: AuthorizationRecord) async throws -> AuthorizeOutcome {
        let now = self.wallClock.secondsSince1970
        switch record.status(at: now) {
        case .authorized:
            return try WireJSON.decode(AuthorizeOutcome.self, from: ByteBuffer(bytes: record.response))
        case .pendingApproval:
            if record.voidedAt != nil {
                throw WireError(.approvalClosed, "authorization '\(record.id)' was withdrawn before it was approved")
            }
            let verdicts = try await storeRead { try await self.store.approvals(of: record.id) }
            return .pendingApproval(
                PendingAuthorization(
                    authorizationID: record.id, tier: record.tier, approvalsRequired: record.quorum ?? 0,
                    approvers: verdicts.filter { $0.verdict == .approve }.map(\.approver), approvalExpiresAt: record.approvalExpiresAt ?? 0
                )
            )
        case .approved:
            if record.voidedAt != nil {
                throw WireError(.approvalClosed, "authorization '\(record.id)' was withdrawn before it was signed")
            }
            let verdicts = try await storeRead { try await self.store.approvals(of: record.id) }
            return .authorized(try await self.signApproved(record, approvers: verdicts.filter { $0.verdict == .approve }.map(\.approver)))
        case .denied:
            throw WireError(.approvalDenied, "authorization '\(record.id)' was denied by an approver; its budget hold is released")
        case .expired:
            throw WireError(
                .approvalExpired, "authorization '\(record.id)' was not approved before \(record.approvalExpiresAt ?? 0); its budget hold is released")
        }
    }

    /// `FETCH_AUTHORIZATION`: an agent's own authorization, waiting up to `wait_seconds` while it is pending.
    func fetch(_ request: FetchAuthorizationRequest, agent: String) async throws -> AuthorizeOutcome {
        let deadline = self.time.now + .seconds(request.waitSeconds ?? 0)
        while true {
            let generation = self.notifier.generation
            let record = try await self.ownRecord(request.authorizationID, agent: agent)
            // A request is cancelled when its connection is gone (Connection.swift); the wait below ends then, but an
            // approved authorization being signed and recorded here runs to its end, outside that cancellation.
            let outcome = try await Task { try await self.outcome(of: record) }.value
            let left = deadline - self.time.now
            guard case .pendingApproval = outcome, left > .zero else { return outcome }
            // One approval of several is a change too; wait on until the approval is decided.
            let untilExpiry = Duration.seconds(max(0, (record.approvalExpiresAt ?? 0) - self.wallClock.secondsSince1970))
            guard untilExpiry > .zero else { return outcome }
            await self.notifier.wait(for: record.id, since: generation, timeout: min(left, untilExpiry), time: self.time)
            try Task.checkCancellation()
            if self.notifier.isClosed {
                // The approval goes on without this server: the agent asks again, here after a restart or elsewhere.
                throw WireError(.shuttingDown, "the server is stopping; ask again for authorization '\(record.id)' on a new connection", retryable: true)
            }
        }
    }

    /// Tells the console's live pages that `id` now waits for approvers.
    func announce(_ id: String) {
        self.notifier.changed(id)
    }

    /// `VOID`: the agent withdraws its authorization (signed or pending); its holds are released.
    func void(_ id: String, agent: String, at now: Int64) async throws -> AuthorizationRecord {
        // Read first so that a retried VOID is not counted again (a concurrent pair may both count: rare, harmless).
        let before = try? await self.store.authorization(id: id)
        let record = try await self.store.voidAuthorization(id: id, agent: agent, at: now)
        self.notifier.changed(record.id)
        if before?.voidedAt == nil { self.metrics.voided(pending: record.status == .pendingApproval) }
        self.logger.info("authorization voided", metadata: ["agent": "\(agent)", "authorization": "\(record.id)"])
        return record
    }

    private func ownRecord(_ id: String, agent: String) async throws -> AuthorizationRecord {
        let record = try await storeRead { try await self.store.authorization(id: id) }
        guard let record, record.agent == agent else {
            throw WireError(.authorizationNotFound, "no authorization '\(id)' of '\(agent)'")
        }
        return record
    }

    /// `APPROVALS_LIST`: what waits for approvers now.
    func pendingApprovals() async throws -> ApprovalsList {
        let now = self.wallClock.secondsSince1970
        let records = try await storeRead { try await self.store.pendingApprovals(now: now) }
        var summaries: [ApprovalSummary] = []
        for record in records {
            let verdicts = try await storeRead { try await self.store.approvals(of: record.id) }
            summaries.append(self.summary(of: record, verdicts: verdicts, now: now))
        }
        return ApprovalsList(approvals: summaries)
    }

    /// `APPROVALS_SHOW`: the exact request, the decision record and the verdicts.
    func approvalDetail(_ id: String) async throws -> ApprovalDetail {
        let record = try await storeRead { try await self.store.authorization(id: id) }
        guard let record, record.quorum != nil else {
            throw WireError(.authorizationNotFound, "no authorization '\(id)' needing approval")
        }
        return try await self.detail(of: record)
    }

    /// `APPROVALS_APPROVE` / `APPROVALS_DENY`: one approver's verdict. The approval that completes the quorum
    /// signs the authorization (with the approvers in its claims) and wakes the agent waiting for it.
    /// - Parameter evidence: what the audit entry records of how the approver vouched (the console's passkey
    ///   assertion), beside the verdict.
    func decide(_ id: String, approver: String, verdict: ApprovalRecord.Verdict, evidence: [String: String] = [:]) async throws -> ApprovalDetail {
        let now = self.wallClock.secondsSince1970
        let step: ApprovalStep
        do {
            step = try await self.store.decideApproval(id: id, approver: approver, verdict: verdict, at: now)
        } catch let error as LedgerError {
            // A quorum whose signature failed (HSM down) is signed by the next verdict's retry.
            if error.code == .alreadyDecided || error.code == .approvalClosed,
                let record = try? await self.store.authorization(id: id), record.status == .approved
            {
                _ = try await self.outcome(of: record)
                self.notifier.changed(id)
                return try await self.approvalDetail(id)
            }
            throw error.wireError
        }
        self.metrics.verdict(verdict == .approve ? "approve" : "deny")
        // The verdict is in the audit log before anything else happens, even if signing then fails.
        let status: String
        switch step {
        case .approvedBy: status = "pending_approval"
        case .quorumReached: status = "approved"
        case .denied: status = "denied"
        }
        try await self.audit.logAction(
            verdict == .approve ? "approvals.approve" : "approvals.deny", by: approver, subject: id,
            details: evidence.merging(["status": status]) { _, status in status }, kind: "approval"
        )
        switch step {
        case .approvedBy(let record, let approvers):
            self.logger.notice(
                "authorization approved",
                metadata: ["authorization": "\(id)", "approver": "\(approver)", "approvals": "\(approvers.count)/\(record.quorum ?? 0)"])
        case .quorumReached(let record, let approvers):
            self.logger.notice("authorization approved by quorum", metadata: ["authorization": "\(id)", "approvers": "\(approvers)"])
            self.metrics.approvalConcluded("approved", seconds: now - record.createdAt)
            _ = try await self.signApproved(record, approvers: approvers)
        case .denied(let record):
            self.metrics.approvalConcluded("denied", seconds: now - record.createdAt)
            self.logger.notice("authorization denied by approver", metadata: ["authorization": "\(id)", "approver": "\(approver)"])
        }
        self.notifier.changed(id)
        return try await self.approvalDetail(id)
    }

    private func signApproved(_ record: AuthorizationRecord, approvers: [String]) async throws -> Authorization {
        guard let body = record.request, let request = try? WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: body)) else {
            throw WireError(.internalError, "authorization '\(record.id)' has no stored request to sign", retryable: false)
        }
        guard let tier = self.policy.tiers.tiers.first(where: { $0.name == record.tier }) else {
            throw WireError(
                .signingUnavailable, "tier '\(record.tier)' is no longer configured; authorization '\(record.id)' cannot be signed", retryable: false)
        }
        let decision = record.decision.flatMap { try? JSONDecoder().decode(DecisionRecord.self, from: $0) }
        let now = self.wallClock.secondsSince1970
        let auditIndex = try await self.store.reserveAuditIndex()
        var summary = DecisionSummary(
            outcome: "authorized", amount: record.amount, currency: record.currency, merchant: record.merchant, tier: record.tier,
            tierReason: decision?.tierReason, policyVersion: decision?.policyVersion, checks: decision?.checks.auditText,
            intentHash: IntentHash.of(request.intent),
            approvers: approvers, requestSHA256: Base64URL.encode(Array(record.requestHash))
        )
        let authorization: Authorization
        do {
            authorization = try await self.signer.sign(
                request, id: record.id, agent: record.agent, tier: tier, policyVersion: decision?.policyVersion ?? self.policy.version, approvers: approvers,
                auditIndex: auditIndex, at: now
            )
        } catch let error as WireError {
            summary.outcome = "signing_failed"
            summary.code = error.code.rawValue
            try? await self.store.recordAudit(
                AuditEntry(index: auditIndex, time: now, kind: "approval", action: "signing_failed", actor: "server", subject: record.id, decision: summary)
            )
            throw error
        }
        summary.kid = authorization.kid
        summary.jwsSHA256 = Base64URL.encode(Array(SHA256.hash(data: Data(authorization.jws.utf8))))
        let entry = AuditEntry(
            index: auditIndex, time: now, kind: "approval", action: "approved", actor: approvers.last ?? "server", subject: record.id, decision: summary)
        do {
            _ = try await self.store.completeApproval(
                id: record.id, response: Data(WireJSON.encode(authorization).readableBytesView), kid: authorization.kid, expiresAt: authorization.expiresAt,
                audit: entry
            )
        } catch let error as LedgerError where error.code == .approvalClosed {
            // Another verdict's retry signed it first; that one is the answer.
            guard let stored = try await self.store.authorization(id: record.id), stored.status == .authorized else { throw error.wireError }
            return try WireJSON.decode(Authorization.self, from: ByteBuffer(bytes: stored.response))
        } catch {
            self.logger.error("approved authorization not recorded; not sent", metadata: ["authorization": "\(record.id)", "error": "\(error)"])
            throw WireError(.auditUnavailable, "the approved authorization could not be written to the audit log, so it was not issued", retryable: true)
        }
        return authorization
    }

    private func detail(of record: AuthorizationRecord) async throws -> ApprovalDetail {
        let now = self.wallClock.secondsSince1970
        guard let body = record.request, let request = try? WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: body)) else {
            throw WireError(.internalError, "authorization '\(record.id)' has no stored request", retryable: false)
        }
        let verdicts = try await storeRead { try await self.store.approvals(of: record.id) }
        return ApprovalDetail(
            approval: self.summary(of: record, verdicts: verdicts, now: now),
            request: request,
            decision: record.decision.flatMap { try? JSONDecoder().decode(DecisionRecord.self, from: $0) },
            verdicts: verdicts.map { ApprovalVerdict(approver: $0.approver, verdict: $0.verdict.rawValue, decidedAt: $0.decidedAt) }
        )
    }

    static func quoted(_ text: String) -> String {
        var json = CanonicalJSON(reservingCapacity: text.utf8.count + 2)
        json.string(text)
        return String(decoding: json.bytes, as: UTF8.self)
    }

    private func summary(of record: AuthorizationRecord, verdicts: [ApprovalRecord], now: Int64) -> ApprovalSummary {
        let request = record.request.flatMap { try? WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: $0)) }
        let money = Currency(code: record.currency).map { "\(Money(minorUnits: record.amount, currency: $0))" } ?? "\(record.amount) \(record.currency)"
        let status = record.voidedAt != nil && record.status(at: now) == .pendingApproval ? "withdrawn" : record.status(at: now).rawValue
        var summary = "\(record.agent) asks to pay \(money) to \(record.merchant)"
        if let request {
            // The agent's texts are quoted as JSON strings: a quote, a line feed or a tab in them cannot end the
            // quotation or forge another item or row of the list.
            summary += " (MCC \(request.merchantCategoryCode)) for \(Self.quoted(request.intent.description))"
            if let items = request.intent.lineItems {
                summary += "; " + items.map { "\($0.quantity) x \(Self.quoted($0.description))" }.joined(separator: ", ")
            }
        }
        summary += "; tier \(record.tier) needs \(record.quorum ?? 0) approval(s)"
        return ApprovalSummary(
            authorizationID: record.id, agent: record.agent, amount: record.amount, currency: record.currency, merchantID: record.merchant, tier: record.tier,
            approvalsRequired: record.quorum ?? 0, approvers: verdicts.filter { $0.verdict == .approve }.map(\.approver), requestedAt: record.createdAt,
            approvalExpiresAt: record.approvalExpiresAt ?? 0, status: status, summary: summary
        )
    }
}
