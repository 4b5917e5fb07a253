import CanonicalJSON
import CountersignCore
import Foundation

/// A request as the policy sees it.
public struct PolicyRequest: Sendable, Hashable {
    public struct LineItem: Sendable, Hashable {
        public var quantity: Int64
        public var unitAmount: Int64
        public var category: String?

        public init(quantity: Int64, unitAmount: Int64, category: String?) {
            self.quantity = quantity
            self.unitAmount = unitAmount
            self.category = category
        }
    }

    public var agent: String
    public var amount: Money
    public var merchant: String
    public var merchantCategoryCode: String
    /// The stated intent's line items, if any.
    public var lineItems: [LineItem]?

    public init(agent: String, amount: Money, merchant: String, merchantCategoryCode: String, lineItems: [LineItem]? = nil) {
        self.agent = agent
        self.amount = amount
        self.merchant = merchant
        self.merchantCategoryCode = merchantCategoryCode
        self.lineItems = lineItems
    }
}

/// What the policy needs to know beyond the request, gathered by the caller (the store, the request log, the
/// admins' modes) so that the policy itself stays pure.
public struct PolicyFacts: Sendable, Hashable {
    /// Seconds since 1970, for schedules and budget windows.
    public var now: Int64
    /// Modes admins have switched on.
    public var activeModes: Set<String>
    /// The agent's requests, this one included, in its profile's rate-limit window.
    public var requestsInRateWindow: Int
    /// The agent's requests, this one included, in the burst window.
    public var requestsInBurstWindow: Int
    /// The agent's authorizations in this currency over the escalation history window.
    public var historyCount: Int
    public var historyMeanAmount: Int64
    /// Whether the agent was ever authorized to pay this merchant.
    public var merchantPaidBefore: Bool
    /// What the agent holds for this merchant in this currency within the splitting window.
    public var recentSpendAtMerchant: Int64
    /// The agent's learned habits, when the policy has an anomaly model (``PolicyEngine/behaviour``).
    public var behaviour: AgentBehaviour?

    public init(
        now: Int64, activeModes: Set<String> = [], requestsInRateWindow: Int = 1, requestsInBurstWindow: Int = 1, historyCount: Int = 0,
        historyMeanAmount: Int64 = 0, merchantPaidBefore: Bool = true, recentSpendAtMerchant: Int64 = 0
    ) {
        self.now = now
        self.activeModes = activeModes
        self.requestsInRateWindow = requestsInRateWindow
        self.requestsInBurstWindow = requestsInBurstWindow
        self.historyCount = historyCount
        self.historyMeanAmount = historyMeanAmount
        self.merchantPaidBefore = merchantPaidBefore
        self.recentSpendAtMerchant = recentSpendAtMerchant
    }
}

/// One check the policy evaluated: its name, what it looked at, and its result.
public struct CheckRecord: Sendable, Hashable, Codable {
    public enum Result: String, Sendable, Hashable, Codable {
        case pass
        case fail
        /// The request moved up a tier.
        case escalate
        /// Decided by the store, atomically with the hold (budgets).
        case atCommit = "at_commit"
    }

    public var name: String
    public var inputs: String
    public var result: Result

    public init(name: String, inputs: String, result: Result) {
        self.name = name
        self.inputs = inputs
        self.result = result
    }

    public init(name: String, inputs: String, passed: Bool) {
        self.init(name: name, inputs: inputs, result: passed ? .pass : .fail)
    }
}

/// The outcome and its explanation: every check evaluated, the tier and why, and the policy version.
public struct Decision: Sendable, Hashable {
    public enum Outcome: Sendable, Hashable {
        case authorized(Tier)
        /// The tier needs people to approve; the budget is held meanwhile.
        case pendingApproval(Tier, ApprovalRequirement)
        /// `code` is stable (`MERCHANT_NOT_ALLOWED`, …); `reason` is a sentence for people.
        case denied(code: ErrorCode, reason: String)
    }

    public var outcome: Outcome
    public var checks: [CheckRecord]
    /// Why this tier: the amount's tier, and any escalation.
    public var tierReason: String
    /// The budget checks the store must make atomically with the hold; empty when denied.
    public var budgetChecks: [BudgetCheck]
    /// Every scope the spend counts at (agent, team, organization), budgeted or not.
    public var scopes: [BudgetScope]
    public var policyVersion: String
    /// The tier the request was judged at: the signing tier when it is signed, and also set when it is
    /// refused after a tier was chosen. `nil` only when no tier fits (currency, amount above every tier).
    public var judgedTier: String?
    /// The anomaly model's score, when it judged the request (not while it was still learning the agent).
    public var anomalyScore: Double?

    public var tier: Tier? {
        switch self.outcome {
        case .authorized(let tier), .pendingApproval(let tier, _): tier
        case .denied: nil
        }
    }

    /// The decision as stored and audited.
    public func record(outcome: String, code: String? = nil) -> DecisionRecord {
        DecisionRecord(
            outcome: outcome, code: code, tier: self.judgedTier, tierReason: self.tierReason, checks: self.checks, policyVersion: self.policyVersion
        )
    }
}

/// A decision as stored: `outcome` is `authorized`, `denied` or `pending_approval`.
public struct DecisionRecord: Sendable, Hashable, Codable {
    public var outcome: String
    public var code: String?
    public var tier: String?
    public var tierReason: String
    public var checks: [CheckRecord]
    public var policyVersion: String

    enum CodingKeys: String, CodingKey {
        case outcome, code, tier
        case tierReason = "tier_reason"
        case checks
        case policyVersion = "policy_version"
    }

    public init(outcome: String, code: String?, tier: String?, tierReason: String, checks: [CheckRecord], policyVersion: String) {
        self.outcome = outcome
        self.code = code
        self.tier = tier
        self.tierReason = tierReason
        self.checks = checks
        self.policyVersion = policyVersion
    }

    /// Whether the anomaly model escalated, sent to approvers or refused it.
    public var flaggedByModel: Bool {
        self.checks.contains { $0.name == "behaviour" && $0.result != .pass }
    }

    /// Canonical JSON (sorted keys).
    public var json: Data {
        Data(self.canonicalJSONBytes)
    }
}

extension [CheckRecord] {
    /// The checks as the audit log records them: their canonical JSON array, as text.
    public var auditText: String {
        var json = CanonicalJSON(reservingCapacity: 256)
        json.array(self) { json, check in check.write(to: &json) }
        return String(decoding: json.bytes, as: UTF8.self)
    }
}
