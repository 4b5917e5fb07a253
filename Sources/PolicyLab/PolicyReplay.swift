import Foundation
import Policy

/// A request as the store recorded it, and what became of it.
public struct RecordedRequest: Sendable {
    public enum Outcome: Sendable, Hashable {
        case authorized
        case pendingApproval
        case refused(code: String)
    }

    /// Seconds since 1970, when it was decided.
    public var time: Int64
    public var request: PolicyRequest
    public var outcome: Outcome
    /// The tier it was judged at, if any.
    public var tier: String?
    /// For an authorization (or pending approval): when it came to count as authorized, when its holds stopped
    /// counting, and whether it stood; `nil` for a refusal.
    public var settlement: PolicySimulator.Settlement?
    /// Whether the anomaly model flagged it when it was decided, with no approver vouching for it.
    public var modelFlagged: Bool
    /// The agent's key for the payment: a later request with the same key is a retry, answered from the record.
    public var idempotencyKey: String
    /// The scopes (`agent:…`, `team:…`, `org:…`) the store held it at, when known.
    public var heldScopes: [String]?

    public init(
        time: Int64, request: PolicyRequest, outcome: Outcome, tier: String?, settlement: PolicySimulator.Settlement?, modelFlagged: Bool = false,
        idempotencyKey: String = "", heldScopes: [String]? = nil
    ) {
        self.time = time
        self.request = request
        self.outcome = outcome
        self.tier = tier
        self.settlement = settlement
        self.modelFlagged = modelFlagged
        self.idempotencyKey = idempotencyKey
        self.heldScopes = heldScopes
    }
}

/// Replays recorded requests through a candidate policy and reports what would have changed: `countersign policy
/// replay`.
///
/// The requests before `from` are the look-back: they are judged (so request counts and the model's state are what
/// they were) but their recorded outcome stands, so the candidate starts from the store as it was at `from` (holds,
/// history, learned habits). From `from` on, the candidate's own decisions make the facts of later requests: a
/// payment it refuses holds no budget, one it signs does. What the agents would have done differently after a
/// different answer (a retry, a smaller amount) is not known, and not guessed.
public struct PolicyReplay: Sendable {
    /// How a request came out under the candidate, against the record.
    public enum Change: String, Sendable, Hashable, Codable, CaseIterable {
        case unchanged
        /// Was signed or sent to approvers; now refused.
        case newlyRefused = "newly_refused"
        /// Was refused; now signed or sent to approvers.
        case newlyAllowed = "newly_allowed"
        /// Refused either way, with another code.
        case refusedOtherwise = "refused_otherwise"
        /// A higher tier, or approvers where it was signed at once.
        case newlyEscalated = "newly_escalated"
        /// A lower tier, or signed at once where it went to approvers.
        case deescalated
    }

    /// One replayed request in the window.
    public struct Replayed: Sendable {
        public var recorded: RecordedRequest
        /// `authorized`, `pending_approval`, or the code.
        public var candidateOutcome: String
        public var candidateTier: String?
        public var change: Change
        /// The candidate's reason, for a refusal; its tier reason otherwise.
        public var reason: String
    }

    /// What a budget would have refused.
    public struct BudgetFigures: Sendable, Hashable, Codable {
        enum CodingKeys: String, CodingKey {
            case scope, window, currency, limit, refused
            case amount = "refused_amount"
        }

        public var scope: String
        public var window: String
        public var currency: String
        public var limit: Int64
        public var refused = 0
        /// Minor units refused.
        public var amount: Int64 = 0
    }

    /// Per agent or per code: how many of each change.
    public struct Counts: Sendable, Hashable, Codable {
        public var requests = 0
        public var changes: [String: Int] = [:]
    }

    public struct Report: Sendable {
        public var policyVersion: String
        public var from: Int64
        public var to: Int64
        public var replayed: [Replayed] = []
        /// Per change kind.
        public var changes: [Change: Int] = [:]
        public var perAgent: [String: Counts] = [:]
        /// Refusals per code: recorded, and under the candidate.
        public var refusalsRecorded: [String: Int] = [:]
        public var refusalsCandidate: [String: Int] = [:]
        /// Budgets that would have refused, by scope, window and currency.
        public var budgets: [String: BudgetFigures] = [:]
        /// Requests of the window the store holds no request body for (recorded before requests were kept).
        public var skipped = 0
        /// Requests refused by the service rather than the policy (the token, the store, the signer): not compared.
        public var operational: [String: Int] = [:]
        /// Requests that repeat the key of a payment the candidate already signed or sent to approvers: answered from
        /// the record, not decided again.
        public var retries = 0
    }

    /// Refusals that say the service could not decide or sign, not what the policy decided.
    public static let operationalCodes: Set<String> = [
        "HSM_UNAVAILABLE", "SIGNING_UNAVAILABLE", "AUDIT_UNAVAILABLE", "STORE_UNAVAILABLE", "INTERNAL_ERROR", "SHUTTING_DOWN",
    ]

    public let policy: PolicyEngine

    public init(policy: PolicyEngine) {
        self.policy = policy
    }

    /// Replays `requests` (in decision order) and reports on those at or after `from`.
    ///
    /// - Parameter merchantsPaid: per agent, the merchants it was authorized to pay before the first request.
    public func run(_ requests: [RecordedRequest], from: Int64, to: Int64, skipped: Int = 0, merchantsPaid: [String: Set<String>] = [:]) -> Report {
        var simulator = PolicySimulator(policy: self.policy)
        simulator.knowMerchantsPaid(merchantsPaid)
        var report = Report(policyVersion: self.policy.version, from: from, to: to, skipped: skipped)
        let order = Dictionary(uniqueKeysWithValues: self.policy.tiers.tiers.enumerated().map { ($1.name, $0) })
        // The payments (agent and key) that have a record: a request repeating one is a retry.
        var recordedKeys: Set<String> = []
        for recorded in requests {
            let agent = recorded.request.agent
            let key = agent + "\u{0}" + recorded.idempotencyKey
            if !recorded.idempotencyKey.isEmpty, recordedKeys.contains(key) {
                if recorded.time >= from { report.retries += 1 }
                continue
            }
            let decided = simulator.decide(recorded.request, at: recorded.time)
            guard recorded.time >= from else {
                // The look-back: what was recorded stands, held where the store held it.
                if let settlement = recorded.settlement {
                    recordedKeys.insert(key)
                    simulator.record(
                        decided.judgement, agent: agent, scopeKeys: recorded.heldScopes ?? self.policy.scopes(of: agent).map(\.key),
                        modelFlagged: recorded.modelFlagged, settlement: settlement)
                }
                continue
            }
            if case .refused(let code) = recorded.outcome, Self.operationalCodes.contains(code) {
                report.operational[code, default: 0] += 1
                continue
            }
            let decision = decided.decision
            if decision.tier != nil, decided.overBudget == nil { recordedKeys.insert(key) }
            let candidate: String
            var reason = decision.tierReason
            switch decision.outcome {
            case .authorized:
                candidate = "authorized"
                simulator.record(decided, agent: agent, settlement: self.settlement(recorded, approvalTTL: nil))
            case .pendingApproval(_, let approval):
                candidate = "pending_approval"
                simulator.record(decided, agent: agent, settlement: self.settlement(recorded, approvalTTL: approval.ttlSeconds))
            case .denied(let code, let why):
                candidate = code.rawValue
                reason = why
                if let over = decided.overBudget {
                    let key = "\(over.check.scope.key) \(over.check.window.versionKey) \(recorded.request.amount.currency.code)"
                    var figures =
                        report.budgets[key]
                        ?? BudgetFigures(
                            scope: over.check.scope.key, window: over.check.window.description, currency: recorded.request.amount.currency.code,
                            limit: over.check.limit)
                    figures.refused += 1
                    figures.amount += recorded.request.amount.minorUnits
                    report.budgets[key] = figures
                }
            }
            let change = Self.change(from: recorded, to: candidate, tier: decision.tier?.name ?? decision.judgedTier, order: order)
            report.replayed.append(
                Replayed(
                    recorded: recorded, candidateOutcome: candidate, candidateTier: decision.tier?.name ?? decision.judgedTier, change: change, reason: reason))
            report.changes[change, default: 0] += 1
            report.perAgent[agent, default: Counts()].requests += 1
            if change != .unchanged { report.perAgent[agent, default: Counts()].changes[change.rawValue, default: 0] += 1 }
            if case .refused(let code) = recorded.outcome { report.refusalsRecorded[code, default: 0] += 1 }
            if case .denied(let code, _) = decision.outcome { report.refusalsCandidate[code.rawValue, default: 0] += 1 }
        }
        return report
    }

    /// What the candidate's own decision leaves behind, from what became of the recorded one: a void stands (the
    /// agent would have voided it again), an approvers' verdict stands where both sent it to them; a payment only
    /// the candidate sends to approvers has no verdict and is held until its deadline.
    private func settlement(_ recorded: RecordedRequest, approvalTTL: Int64?) -> PolicySimulator.Settlement {
        let time = recorded.time
        switch (recorded.outcome, approvalTTL) {
        case (.authorized, nil):
            return recorded.settlement ?? .init(authorizedAt: time, releasedAt: nil, learnable: true)
        case (.pendingApproval, nil):
            // Signed at once now: a void stands; a deny or an expiry was the approvers' and does not.
            let releasedAt = recorded.settlement?.authorizedAt != nil ? recorded.settlement?.releasedAt : nil
            return .init(authorizedAt: time, releasedAt: releasedAt, learnable: releasedAt == nil)
        case (.refused, nil):
            return .init(authorizedAt: time, releasedAt: nil, learnable: true)
        case (.pendingApproval, let ttl?):
            return recorded.settlement ?? .init(authorizedAt: nil, releasedAt: time + ttl, learnable: false)
        case (.authorized, let ttl?), (.refused, let ttl?):
            return .init(authorizedAt: nil, releasedAt: time + ttl, learnable: false)
        }
    }

    static func change(from recorded: RecordedRequest, to candidate: String, tier: String?, order: [String: Int]) -> Change {
        let wasRefused: Bool
        if case .refused = recorded.outcome { wasRefused = true } else { wasRefused = false }
        let isRefused = candidate != "authorized" && candidate != "pending_approval"
        switch (wasRefused, isRefused) {
        case (false, true): return .newlyRefused
        case (true, false): return .newlyAllowed
        case (true, true):
            if case .refused(let code) = recorded.outcome, code == candidate { return .unchanged }
            return .refusedOtherwise
        case (false, false):
            let before = recorded.tier.flatMap { order[$0] } ?? -1
            let after = tier.flatMap { order[$0] } ?? -1
            let wasPending = recorded.outcome == .pendingApproval
            let isPending = candidate == "pending_approval"
            if after > before || (after == before && isPending && !wasPending) { return .newlyEscalated }
            if after < before || (after == before && wasPending && !isPending) { return .deescalated }
            return .unchanged
        }
    }
}

extension PolicyEngine {
    /// How far back a replay must read for the facts at its start to be whole: the escalation history, the splitting,
    /// rate and burst windows, the longest budget window, and the anomaly model's memory (ten half-lives, as the
    /// server's).
    public var lookBackSeconds: Int64 {
        var seconds = max(self.escalation.historySeconds, self.escalation.splittingWindowSeconds ?? 0, self.escalation.burst?.perSeconds ?? 0)
        seconds = max(seconds, self.profiles.compactMap { $0.rateLimit?.perSeconds }.max() ?? 0)
        for budget in self.budgets.budgets {
            switch budget.window {
            case .rolling(let window): seconds = max(seconds, window)
            case .day: seconds = max(seconds, 86_400)
            case .week: seconds = max(seconds, 7 * 86_400)
            case .month: seconds = max(seconds, 31 * 86_400)
            }
        }
        if let model = self.behaviour { seconds = max(seconds, 10 * model.halfLifeSeconds) }
        return seconds
    }
}

extension PolicyReplay.Report {
    /// The text `countersign policy replay` prints.
    public func text(verbose: Bool) -> String {
        var lines: [String] = []
        let total = self.replayed.count
        lines.append("candidate policy \(self.policyVersion): \(total) recorded request(s) replayed")
        if self.retries > 0 { lines.append("\(self.retries) retry(ies) of a payment already decided were answered from the record, not decided again") }
        if !self.operational.isEmpty {
            lines.append(
                "not compared (refused by the service, not the policy): "
                    + self.operational.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if self.skipped > 0 {
            lines.append("\(self.skipped) request(s) of the window were not replayed: their request was not kept (refused before this version)")
        }
        for change in PolicyReplay.Change.allCases {
            let count = self.changes[change] ?? 0
            lines.append("  " + change.rawValue.replacingOccurrences(of: "_", with: " ").padding(toLength: 20, withPad: " ", startingAt: 0) + "\(count)")
        }
        let codes = Set(self.refusalsRecorded.keys).union(self.refusalsCandidate.keys).sorted()
        if !codes.isEmpty {
            lines.append("refusals by code            recorded  candidate")
            for code in codes {
                lines.append(
                    "  " + code.padding(toLength: 26, withPad: " ", startingAt: 0)
                        + "\(self.refusalsRecorded[code] ?? 0)".padding(toLength: 10, withPad: " ", startingAt: 0) + "\(self.refusalsCandidate[code] ?? 0)")
            }
        }
        if !self.budgets.isEmpty {
            lines.append("budgets that would refuse")
            for (_, budget) in self.budgets.sorted(by: { $0.key < $1.key }) {
                let money = { (minorUnits: Int64) in Money.text(minorUnits: minorUnits, code: budget.currency) }
                lines.append("  \(budget.scope) \(budget.window) \(money(budget.limit)): \(budget.refused) request(s) refused, \(money(budget.amount))")
            }
        }
        let changed = self.perAgent.filter { !$0.value.changes.isEmpty }.sorted { $0.key < $1.key }
        if !changed.isEmpty {
            lines.append("agents with changes")
            for (agent, counts) in changed {
                let parts = PolicyReplay.Change.allCases.compactMap { change in
                    counts.changes[change.rawValue].map { "\(change.rawValue.replacingOccurrences(of: "_", with: " ")) \($0)" }
                }
                lines.append("  \(agent) (\(counts.requests) requests): " + parts.joined(separator: ", "))
            }
        }
        if verbose {
            for replayed in self.replayed where replayed.change != .unchanged {
                let recorded = replayed.recorded
                let before = recorded.outcome.name
                lines.append(
                    "\(HumanText.time(recorded.time))\t\(recorded.request.agent)\t\(recorded.request.amount)\t\(recorded.request.merchant)\t"
                        + "\(before) (\(recorded.tier ?? "-")) -> \(replayed.candidateOutcome) (\(replayed.candidateTier ?? "-")): \(replayed.reason)")
            }
        }
        return lines.joined(separator: "\n")
    }
}

extension PolicyReplay.Report: Encodable {
    private enum Keys: String, CodingKey {
        case policyVersion = "policy_version"
        case from, to, replayed, skipped, changes, refusals, budgets, agents, changed, operational, retries
    }

    private struct Changed: Encodable {
        var time: Int64
        var agent: String
        var amount: Int64
        var currency: String
        var merchant: String
        var recorded: String
        var recordedTier: String?
        var candidate: String
        var candidateTier: String?
        var change: String
        var reason: String

        enum CodingKeys: String, CodingKey {
            case time, agent, amount, currency, merchant, recorded, candidate, change, reason
            case recordedTier = "recorded_tier"
            case candidateTier = "candidate_tier"
        }
    }

    /// `countersign policy replay --json`: the figures, and every request whose outcome changed.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(self.policyVersion, forKey: .policyVersion)
        try container.encode(self.from, forKey: .from)
        try container.encode(self.to, forKey: .to)
        try container.encode(self.replayed.count, forKey: .replayed)
        try container.encode(self.skipped, forKey: .skipped)
        try container.encode(self.operational, forKey: .operational)
        try container.encode(self.retries, forKey: .retries)
        try container.encode(
            Dictionary(uniqueKeysWithValues: PolicyReplay.Change.allCases.map { ($0.rawValue, self.changes[$0] ?? 0) }), forKey: .changes)
        try container.encode(["recorded": self.refusalsRecorded, "candidate": self.refusalsCandidate], forKey: .refusals)
        try container.encode(self.budgets.sorted { $0.key < $1.key }.map(\.value), forKey: .budgets)
        try container.encode(self.perAgent, forKey: .agents)
        let changed = self.replayed.filter { $0.change != .unchanged }.map { replayed in
            let recorded = replayed.recorded
            return Changed(
                time: recorded.time, agent: recorded.request.agent, amount: recorded.request.amount.minorUnits,
                currency: recorded.request.amount.currency.code, merchant: recorded.request.merchant, recorded: recorded.outcome.name,
                recordedTier: recorded.tier, candidate: replayed.candidateOutcome, candidateTier: replayed.candidateTier, change: replayed.change.rawValue,
                reason: replayed.reason)
        }
        try container.encode(changed, forKey: .changed)
    }
}

extension RecordedRequest.Outcome {
    /// `authorized`, `pending_approval`, or the refusal's code.
    public var name: String {
        switch self {
        case .authorized: "authorized"
        case .pendingApproval: "pending_approval"
        case .refused(let code): code
        }
    }
}
