import Audit
import CanonicalJSON
import Crypto
import Foundation
import Ledger
import Logging
import NIOCore
import Policy
import Signing
import Synchronization
import Wire

/// AUTHORIZE, as five steps each on its own: **replay** (a retry gets its original answer), **evaluate** (the
/// policy on the request and the facts it needs), **pre-check** (a cheap early budget refusal), **sign or pend**
/// (the tier's key signs, or the request waits for approvers), and **record** (the authorization, its holds and
/// its audit entry, durably and atomically with the budget checks, before the answer leaves).
final class Authorizer: Sendable {
    let store: any Store
    let policy: PolicyEngine
    let modes: ContextModes
    let signer: AuthorizationSigner
    /// The answer of a stored authorization at any stage (a replay of a pending one asks it).
    let approvals: ApprovalDesk
    /// Told of every appended decision, so that a checkpoint follows every N entries.
    let checkpoints: Checkpointer?
    let wallClock: WallClock
    let time: MonotonicTime
    let random: RandomSource
    let metrics: ServerMetrics
    let logger: Logger
    private let requestLog: Mutex<RequestLog>
    /// The anomaly model's per-agent state, when the policy has one.
    let behaviour: BehaviourBook?

    init(
        store: any Store, policy: PolicyEngine, modes: ContextModes, signer: AuthorizationSigner, approvals: ApprovalDesk, checkpoints: Checkpointer?,
        wallClock: WallClock, time: MonotonicTime, random: RandomSource, metrics: ServerMetrics, logger: Logger
    ) {
        self.store = store
        self.policy = policy
        self.modes = modes
        self.signer = signer
        self.approvals = approvals
        self.checkpoints = checkpoints
        self.wallClock = wallClock
        self.time = time
        self.random = random
        self.metrics = metrics
        self.logger = logger
        self.behaviour = policy.behaviour.map { BehaviourBook(model: $0, policy: policy, store: store) }
        let thresholds = policy.profiles.compactMap(\.rateLimit) + [policy.escalation.burst].compactMap { $0 }
        self.requestLog = Mutex(
            RequestLog(keep: (thresholds.map(\.requests).max() ?? 0) + 1, horizon: .seconds(thresholds.map(\.perSeconds).max() ?? 1))
        )
    }

    /// One AUTHORIZE as it goes through the steps.
    private struct Attempt: Sendable {
        let request: AuthorizeRequest
        let agent: String
        /// The request as the agent sent it, canonically encoded: stored, shown to approvers, and hashed.
        let canonicalRequest: Data
        /// Binds the idempotency key to this request.
        let requestHash: Data

        init(_ request: AuthorizeRequest, agent: String) {
            self.request = request
            self.agent = agent
            self.canonicalRequest = Data(WireJSON.encode(request).readableBytesView)
            self.requestHash = Data(SHA256.hash(data: self.canonicalRequest))
        }
    }

    /// A decision the policy made, at its time.
    private struct Evaluated: Sendable {
        let decision: Decision
        let amount: Money
        let now: Int64
        /// `now` to the millisecond, for the authorization id.
        let nowMilliseconds: Int64
    }

    /// An authorization ready to be recorded: its row, the answer it gives (encoded once: the row's `response` and
    /// the answer's body are the same bytes), and what its audit entry says.
    private struct Prepared: Sendable {
        var record: AuthorizationRecord
        var answer: AuthorizeAnswer
        var summary: DecisionSummary
        let auditIndex: Int64
    }

    func authorize(_ request: AuthorizeRequest, agent: String) async throws -> AuthorizeAnswer {
        let started = self.time.now
        var tierName = "none"
        var replayed = false
        do {
            let answer = try await self.decide(Attempt(request, agent: agent), tierName: &tierName, replayed: &replayed)
            let label = if replayed { "replayed" } else if case .pendingApproval = answer.outcome { "pending_approval" } else { "authorized" }
            self.metrics.authorizationDecided(tier: tierName, outcome: label, duration: self.time.now - started)
            return answer
        } catch let error as WireError {
            self.metrics.authorizationDecided(tier: tierName, outcome: error.code.rawValue, duration: self.time.now - started)
            throw error
        }
    }

    private func decide(_ attempt: Attempt, tierName: inout String, replayed: inout Bool) async throws -> AuthorizeAnswer {
        // 1. Replay: a retry with the same idempotency key and body gets the original answer; nothing is signed again.
        if let earlier = try await storeRead({ try await self.store.authorization(agent: attempt.agent, idempotencyKey: attempt.request.idempotencyKey) }) {
            // Counted as a replay of its tier, not as a new decision.
            tierName = earlier.tier
            replayed = true
            return AuthorizeAnswer(try await self.replay(earlier, for: attempt.requestHash))
        }
        // 2. Evaluate.
        let evaluated = try await self.evaluate(attempt)
        tierName = evaluated.decision.judgedTier ?? "none"
        let tier: Tier
        switch evaluated.decision.outcome {
        case .authorized(let decided), .pendingApproval(let decided, _):
            tier = decided
        case .denied(let code, let reason):
            return AuthorizeAnswer(try await self.refuse(WireError(code, reason), attempt, evaluated))
        }
        tierName = tier.name
        // 3. Pre-check.
        if let refusal = await self.precheckBudgets(evaluated) {
            return AuthorizeAnswer(try await self.refuse(refusal, attempt, evaluated))
        }
        // 4. Sign or pend; 5. record.
        let prepared = try await self.signOrPend(attempt, evaluated, tier: tier)
        return try await self.record(prepared, attempt, evaluated)
    }

    /// Step 2: the policy's decision on the request, with the facts it needs.
    /// - Throws: `CURRENCY_NOT_ACCEPTED` for a code that is no ISO 4217 currency (nothing is recorded).
    private func evaluate(_ attempt: Attempt) async throws -> Evaluated {
        let request = attempt.request
        guard let policyRequest = request.policyRequest(agent: attempt.agent) else {
            throw WireError(.currencyNotAccepted, "'\(request.currency)' is not an ISO 4217 currency")
        }
        let amount = policyRequest.amount
        let nowMilliseconds = self.wallClock.millisecondsSince1970
        let now = WallClock.seconds(of: nowMilliseconds)
        let facts = try await self.facts(for: policyRequest, now: now)
        let decision = self.policy.evaluate(policyRequest, facts: facts)
        self.metrics.decisionChecked(decision)
        if let behaviour = self.behaviour, decision.tier != nil {
            behaviour.authorized(
                ObservedPayment(time: now, amount: amount, merchant: request.merchantID, category: request.merchantCategoryCode), agent: attempt.agent)
        }
        return Evaluated(decision: decision, amount: amount, now: now, nowMilliseconds: nowMilliseconds)
    }

    /// Step 3: a cheap early refusal, so an agent over a budget cannot make the HSM sign for nothing; the atomic
    /// check at the record is the one that counts.
    private func precheckBudgets(_ evaluated: Evaluated) async -> WireError? {
        let amount = evaluated.amount
        for limit in evaluated.decision.budgetChecks {
            let spent = (try? await self.store.spent(scope: limit.scope, currency: amount.currency.code, since: limit.windowStart, now: evaluated.now)) ?? 0
            if spent > limit.limit - amount.minorUnits {
                return Self.budgetExceeded(amount, limit: limit, spent: spent, now: evaluated.now)
            }
        }
        return nil
    }

    /// Step 4: the signed authorization, or the pending approval. A signing failure is recorded at the reserved
    /// audit index (why nothing was issued) and thrown.
    private func signOrPend(_ attempt: Attempt, _ evaluated: Evaluated, tier: Tier) async throws -> Prepared {
        let (request, agent, decision, now) = (attempt.request, attempt.agent, evaluated.decision, evaluated.now)
        let id = Self.authorizationID(at: evaluated.nowMilliseconds, random: self.random)
        var record = AuthorizationRecord(
            id: id, agent: agent, idempotencyKey: request.idempotencyKey, requestHash: attempt.requestHash, response: Data(), amount: request.amount,
            currency: evaluated.amount.currency.code, merchant: request.merchantID, tier: tier.name, kid: "", expiresAt: 0, createdAt: now,
            request: attempt.canonicalRequest
        )
        // The decision's audit index is reserved now, so the signed claims can carry it.
        let auditIndex = try await self.store.reserveAuditIndex()
        var summary = Self.summary(decision, outcome: "authorized", request: request, requestHash: attempt.requestHash)
        if case .pendingApproval(_, let approval) = decision.outcome {
            let deadline = now + approval.ttlSeconds
            let pending = PendingAuthorization(
                authorizationID: id, tier: tier.name, approvalsRequired: approval.quorum, approvers: [], approvalExpiresAt: deadline)
            record.status = .pendingApproval
            record.quorum = approval.quorum
            record.approvalExpiresAt = deadline
            record.expiresAt = deadline
            let answer = AuthorizeAnswer(.pendingApproval(pending))
            record.response = Data(answer.body.readableBytesView)
            record.decision = decision.record(outcome: "pending_approval").json
            summary.outcome = "pending_approval"
            return Prepared(record: record, answer: answer, summary: summary, auditIndex: auditIndex)
        }
        let authorization: Authorization
        do {
            authorization = try await self.signer.sign(
                request, id: id, agent: agent, tier: tier, policyVersion: decision.policyVersion, approvers: nil, auditIndex: auditIndex,
                intentHash: summary.intentHash, at: now
            )
        } catch let error as WireError {
            // The reserved index records why nothing was issued.
            var failed = summary
            failed.outcome = "denied"
            failed.code = error.code.rawValue
            await self.recordRefusal(
                decision.record(outcome: "denied", code: error.code.rawValue), attempt, at: now,
                audit: AuditEntry(index: auditIndex, time: now, kind: "decision", action: "denied", actor: agent, subject: id, decision: failed)
            )
            throw error
        }
        record.kid = authorization.kid
        record.expiresAt = authorization.expiresAt
        let answer = AuthorizeAnswer(.authorized(authorization))
        record.response = Data(answer.body.readableBytesView)
        record.decision = decision.record(outcome: "authorized").json
        summary.kid = authorization.kid
        summary.jwsSHA256 = Base64URL.encode(Array(SHA256.hash(data: Data(authorization.jws.utf8))))
        return Prepared(record: record, answer: answer, summary: summary, auditIndex: auditIndex)
    }

    /// Step 5: durable before the answer leaves: if the record cannot be written, the JWS is never sent. The budget
    /// checks and the holds are one step of one transaction: concurrent requests cannot overspend.
    private func record(_ prepared: Prepared, _ attempt: Attempt, _ evaluated: Evaluated) async throws -> AuthorizeAnswer {
        let (agent, id, now, summary) = (attempt.agent, prepared.record.id, evaluated.now, prepared.summary)
        let entry = AuditEntry(
            index: prepared.auditIndex, time: now, kind: "decision", action: summary.outcome, actor: agent, subject: id, decision: summary)
        var refused = summary
        refused.outcome = "denied"
        refused.kid = nil
        refused.jwsSHA256 = nil
        let refusedSummary = refused
        let alternatives = AuditAlternatives(
            overLimit: { index in
                var refused = refusedSummary
                refused.code = ErrorCode.budgetExceeded.rawValue
                return AuditEntry(index: index, time: now, kind: "decision", action: "denied", actor: agent, subject: id, decision: refused)
            },
            duplicate: { index, recordedID in
                AuditEntry(
                    index: index, time: now, kind: "decision", action: "superseded", actor: agent, subject: id,
                    details: ["reason": "a concurrent retry with the same idempotency key was recorded first", "recorded": recordedID]
                )
            }
        )
        let stored: AuthorizationRecord
        do {
            switch try await self.store.recordAuthorization(
                prepared.record, scopes: evaluated.decision.scopes, limits: evaluated.decision.budgetChecks, audit: entry, alternatives: alternatives)
            {
            case .recorded(let recorded):
                stored = recorded
            case .overLimit(let limit, let spent):
                // The signature is discarded unsent; the audit entry at its index says why.
                throw Self.budgetExceeded(evaluated.amount, limit: limit, spent: spent, now: now)
            case .logged:
                throw WireError(.internalError, "the store answered an authorization with a refusal's outcome", retryable: false)
            }
        } catch let error as WireError {
            throw error
        } catch {
            self.logger.error("decision not recorded in the audit log; nothing sent", metadata: ["agent": "\(agent)", "error": "\(error)"])
            throw WireError(.auditUnavailable, "the decision could not be written to the audit log, so no authorization was issued")
        }
        self.checkpoints?.appended()
        if case .pendingApproval = prepared.answer.outcome, stored.id == id { self.approvals.announce(id) }
        if stored.id != id {
            // A concurrent request with the same key was recorded first; this signature is discarded unsent.
            return AuthorizeAnswer(try await self.replay(stored, for: attempt.requestHash))
        }
        return prepared.answer
    }

    /// What the policy needs beyond the request: modes, request counts, and (only when escalation applies)
    /// the agent's history.
    private func facts(for request: PolicyRequest, now: Int64) async throws -> PolicyFacts {
        var facts = PolicyFacts(now: now, activeModes: self.modes.current)
        let windows = self.policy.requestWindows(of: request.agent)
        if windows.rate != nil || windows.burst != nil {
            let counts = self.requestLog.withLock { log in
                log.record(agent: request.agent, at: self.time.now, windows: [windows.rate ?? .zero, windows.burst ?? .zero])
            }
            facts.requestsInRateWindow = counts[0]
            facts.requestsInBurstWindow = counts[1]
        }
        if self.policy.needsHistory(request) {
            let rules = self.policy.escalation
            let history = try await storeRead {
                try await self.store.spendingFacts(
                    agent: request.agent, currency: request.amount.currency.code, merchant: request.merchant, historySince: now - rules.historySeconds,
                    splittingSince: now - (rules.splittingWindowSeconds ?? 0) + 1, now: now
                )
            }
            facts.historyCount = history.historyCount
            facts.historyMeanAmount = history.historyMeanAmount
            facts.merchantPaidBefore = history.merchantPaidBefore
            facts.recentSpendAtMerchant = rules.splittingWindowSeconds == nil ? 0 : history.recentSpendAtMerchant
        }
        if let behaviour = self.behaviour {
            let payment = ObservedPayment(time: now, amount: request.amount, merchant: request.merchant, category: request.merchantCategoryCode)
            facts.behaviour = behaviour.admit(payment, agent: request.agent)
        }
        return facts
    }

    /// Refuses, unless a concurrent request with the same idempotency key was recorded meanwhile (its hold
    /// may be the very reason for this refusal): then that request's answer is the answer.
    private func refuse(_ error: WireError, _ attempt: Attempt, _ evaluated: Evaluated) async throws -> AuthorizeOutcome {
        let (request, agent, requestHash, decision, now) = (attempt.request, attempt.agent, attempt.requestHash, evaluated.decision, evaluated.now)
        if let earlier = try? await self.store.authorization(agent: agent, idempotencyKey: request.idempotencyKey, certain: true) {
            return try await self.replay(earlier, for: requestHash)
        }
        var summary = Self.summary(decision, outcome: "denied", request: request, requestHash: requestHash)
        summary.code = error.code.rawValue
        let index = try await self.store.reserveAuditIndex()
        await self.recordRefusal(
            decision.record(outcome: "denied", code: error.code.rawValue), attempt, at: now,
            audit: AuditEntry(index: index, time: now, kind: "decision", action: "denied", actor: agent, decision: summary)
        )
        throw error
    }

    private func recordRefusal(_ decision: DecisionRecord, _ attempt: Attempt, at now: Int64, audit: AuditEntry) async {
        let agent = attempt.agent
        self.logger.info("authorization denied", metadata: ["agent": "\(agent)", "code": "\(decision.code ?? "")", "tier_reason": "\(decision.tierReason)"])
        do {
            try await self.store.recordRefusal(
                RefusalRecord(
                    agent: agent, idempotencyKey: attempt.request.idempotencyKey, code: decision.code ?? "", decision: decision.json, createdAt: now,
                    request: attempt.canonicalRequest),
                audit: audit
            )
            self.checkpoints?.appended()
        } catch {
            // Refusing is safe without the record: nothing is issued. The index becomes a `lost` entry.
            self.logger.error("refusal not recorded", metadata: ["agent": "\(agent)", "error": "\(error)"])
        }
    }

    private static func budgetExceeded(_ amount: Money, limit: BudgetCheck, spent: Int64, now: Int64) -> WireError {
        let currency = amount.currency
        let money = { (minorUnits: Int64) in Money(minorUnits: minorUnits, currency: currency) }
        let anew: String
        switch limit.window {
        case .rolling(let seconds): anew = "each payment leaves the window \(HumanText.duration(seconds: seconds)) after it was authorized"
        default: anew = "the window starts anew at \(HumanText.time(limit.window.nextStart(after: now) ?? now))"
        }
        return WireError(
            .budgetExceeded,
            "\(amount) would exceed the \(limit.window) budget of \(limit.scope), \(money(limit.limit)): \(money(spent)) is already counted, "
                + "\(money(max(0, limit.limit - spent))) remains; \(anew)"
        )
    }

    private func replay(_ record: AuthorizationRecord, for requestHash: Data) async throws -> AuthorizeOutcome {
        guard record.requestHash == requestHash else {
            throw WireError(
                .idempotencyConflict,
                "idempotency key '\(record.idempotencyKey)' was used for a different request; use a new key for a new payment"
            )
        }
        return try await self.approvals.outcome(of: record)
    }
}
