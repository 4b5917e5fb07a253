import CanonicalJSON
import CountersignCore
import Crypto
import Foundation

/// One evaluation's working state.
struct Evaluation {
    let policy: PolicyEngine
    let request: PolicyRequest
    let facts: PolicyFacts
    var checks: [CheckRecord] = []
    var anomalyScore: Double?
    var tierReason = ""
    /// The tier the request is being judged at, once there is one (escalation may move it).
    var judgedTier: Tier?
    /// Which context set a limit of the profile (`highest_tier`, `max:USD`), so a refusal can say so.
    var limitSetBy: [String: String] = [:]

    init(policy: PolicyEngine, request: PolicyRequest, facts: PolicyFacts) {
        self.policy = policy
        self.request = request
        self.facts = facts
    }

    var amount: Money { self.request.amount }
    var currency: Currency { self.request.amount.currency }

    private func money(_ minorUnits: Int64) -> Money { Money(minorUnits: minorUnits, currency: self.currency) }

    private func decision(_ outcome: Decision.Outcome, budgets: [BudgetCheck] = []) -> Decision {
        var decision = Decision(
            outcome: outcome, checks: self.checks, tierReason: self.tierReason, budgetChecks: budgets, scopes: self.policy.scopes(of: self.request.agent),
            policyVersion: self.policy.version
        )
        decision.judgedTier = self.judgedTier?.name
        decision.anomalyScore = self.anomalyScore
        return decision
    }

    private func deny(_ code: ErrorCode, _ reason: String) -> Decision {
        self.decision(.denied(code: code, reason: reason))
    }

    mutating func run() -> Decision {
        let tiers = self.policy.tiers
        // The tiers that accept this currency, in order: escalation moves along them.
        let accepting = tiers.tiers.filter { $0.maximumAmounts[self.currency.code] != nil }
        guard self.amount.minorUnits > 0 else {
            self.checks.append(CheckRecord(name: "amount", inputs: "\(self.amount.minorUnits)", passed: false))
            return self.deny(.invalidRequest, "the amount must be a positive number of minor units")
        }
        var index: Int
        switch tiers.tier(for: self.amount) {
        case .success(let tier):
            index = accepting.firstIndex(of: tier)!
            self.judgedTier = tier
            self.tierReason = "\(self.amount) is within tier '\(tier.name)' (up to \(self.money(tier.maximumAmounts[self.currency.code]!)))"
            self.checks.append(CheckRecord(name: "tier", inputs: "\(self.amount)", passed: true))
        case .failure(.currencyNotAccepted(let code, let accepted)):
            self.checks.append(CheckRecord(name: "tier", inputs: "\(self.amount)", passed: false))
            return self.deny(.currencyNotAccepted, "\(code) is not accepted; this server authorizes \(accepted.joined(separator: ", "))")
        case .failure(.amountAboveLimit(let money)):
            self.checks.append(CheckRecord(name: "tier", inputs: "\(self.amount)", passed: false))
            return self.deny(.amountAboveLimit, "\(money) is above the highest tier's limit")
        }

        if tiers.checks(at: accepting[index]).contains(.escalation) {
            if let denial = self.escalate(&index, accepting: accepting) { return denial }
        }
        if let model = self.policy.behaviour, let state = self.facts.behaviour {
            if let denial = self.judgeBehaviour(model, state: state, index: &index, accepting: accepting) { return denial }
        }
        let tier = accepting[index]
        let active = tiers.checks(at: tier)
        let profile = self.effectiveProfile()

        if let profile {
            if let denial = self.checkProfile(profile, tier: tier) { return denial }
            if active.contains(.rateLimit), let limit = profile.rateLimit {
                let passed = self.facts.requestsInRateWindow <= limit.requests
                self.checks.append(
                    CheckRecord(
                        name: "rate_limit", inputs: "\(self.facts.requestsInRateWindow) requests in \(limit.perSeconds) s, limit \(limit.requests)",
                        passed: passed)
                )
                if !passed {
                    return self.deny(.rateLimited, "\(self.request.agent) may make \(limit.requests) requests per \(limit.perSeconds) s; wait and retry")
                }
            }
            if active.contains(.merchantRules), let denial = self.checkMerchantRules(profile) { return denial }
        }
        if active.contains(.intent), let denial = self.checkIntent(profile) { return denial }

        let scopes = self.policy.scopes(of: self.request.agent)
        let budgets = self.policy.budgets.checks(scopes: scopes, currency: self.currency.code, now: self.facts.now)
        self.checks.append(
            CheckRecord(
                name: "budget",
                inputs: budgets.isEmpty ? "no budget" : budgets.map { "\($0.scope.key) \($0.window) \(self.money($0.limit))" }.joined(separator: "; "),
                result: budgets.isEmpty ? .pass : .atCommit
            )
        )
        if let approval = tier.approval {
            return self.decision(.pendingApproval(tier, approval), budgets: budgets)
        }
        return self.decision(.authorized(tier), budgets: budgets)
    }

    /// Splitting, then anomalies. Returns a denial when escalation goes past the last tier, unless that tier
    /// needs approvers: then the anomaly is flagged for them.
    private mutating func escalate(_ index: inout Int, accepting: [Tier]) -> Decision? {
        let rules = self.policy.escalation
        let code = self.currency.code
        if let window = rules.splittingWindowSeconds, self.facts.recentSpendAtMerchant > 0 {
            let (sum, overflow) = self.facts.recentSpendAtMerchant.addingReportingOverflow(self.amount.minorUnits)
            let sumIndex = overflow ? nil : accepting.firstIndex { sum <= $0.maximumAmounts[code]! }
            let escalated = sumIndex.map { $0 > index } ?? true
            self.checks.append(
                CheckRecord(
                    name: "splitting",
                    inputs: "\(self.money(self.facts.recentSpendAtMerchant)) to \(self.request.merchant) in the last \(window) s, plus \(self.amount)",
                    result: escalated ? .escalate : .pass
                )
            )
            if escalated {
                guard let sumIndex else {
                    self.tierReason += "; with earlier payments to \(self.request.merchant) within \(window) s the sum is above the highest tier"
                    return self.deny(
                        .amountAboveLimit,
                        "with earlier payments to \(self.request.merchant) in the last \(window) s, the sum is above the highest tier's limit")
                }
                index = sumIndex
                self.judgedTier = accepting[index]
                self.tierReason +=
                    "; judged at tier '\(accepting[index].name)' as part of payments to \(self.request.merchant) within \(window) s that sum to \(self.money(sum))"
            }
        }

        var anomalies: [String] = []
        if let factor = rules.amountFactor, self.facts.historyCount >= rules.minimumHistory, self.facts.historyMeanAmount > 0 {
            let (threshold, overflow) = self.facts.historyMeanAmount.multipliedReportingOverflow(by: factor)
            let anomalous = !overflow && self.amount.minorUnits > threshold
            self.checks.append(
                CheckRecord(
                    name: "amount_anomaly",
                    inputs: "\(self.amount) vs \(factor) x mean \(self.money(self.facts.historyMeanAmount)) of \(self.facts.historyCount) authorizations",
                    result: anomalous ? .escalate : .pass
                )
            )
            if anomalous {
                anomalies.append("\(self.amount) is more than \(factor) times the agent's mean of \(self.money(self.facts.historyMeanAmount))")
            }
        }
        if let above = rules.newMerchantAbove[code] {
            let anomalous = !self.facts.merchantPaidBefore && self.amount.minorUnits > above
            self.checks.append(
                CheckRecord(
                    name: "new_merchant", inputs: "\(self.request.merchant) paid before: \(self.facts.merchantPaidBefore); above \(self.money(above))",
                    result: anomalous ? .escalate : .pass
                )
            )
            if anomalous { anomalies.append("first payment to \(self.request.merchant), above \(self.money(above))") }
        }
        if let burst = rules.burst {
            let anomalous = self.facts.requestsInBurstWindow > burst.requests
            self.checks.append(
                CheckRecord(
                    name: "burst", inputs: "\(self.facts.requestsInBurstWindow) requests in \(burst.perSeconds) s, threshold \(burst.requests)",
                    result: anomalous ? .escalate : .pass
                )
            )
            if anomalous { anomalies.append("\(self.facts.requestsInBurstWindow) requests within \(burst.perSeconds) s") }
        }
        guard !anomalies.isEmpty else { return nil }
        let reasons = anomalies.joined(separator: "; ")
        guard index + 1 < accepting.count else {
            // At the top: people who approve are the strongest check there is; they see the anomaly in the
            // decision record. A top tier without approvers has nowhere to send it.
            if accepting[index].approval != nil {
                self.tierReason += "; anomalous (\(reasons)), flagged for the approvers"
                return nil
            }
            self.tierReason += "; anomaly (\(reasons)) with no tier above '\(accepting[index].name)'"
            return self.deny(.escalationAboveLimit, "the request looks anomalous (\(reasons)) and tier '\(accepting[index].name)' has no tier above it")
        }
        index += 1
        self.judgedTier = accepting[index]
        self.tierReason += "; escalated to tier '\(accepting[index].name)': \(reasons)"
        return nil
    }

    /// The anomaly model's score: recorded with its reasons, then what the rules say the score does at this tier.
    private mutating func judgeBehaviour(_ model: BehaviourModel, state: AgentBehaviour, index: inout Int, accepting: [Tier]) -> Decision? {
        let payment = ObservedPayment(time: self.facts.now, amount: self.amount, merchant: self.request.merchant, category: self.request.merchantCategoryCode)
        let assessment = model.assess(payment, state: state, agent: self.request.agent)
        // Rules are placed by the whole tier order: a rule on a tier that does not take this currency still applies
        // to the tiers above it that do.
        let action =
            assessment.learning ? .none : model.action(for: assessment.score, at: accepting[index].name, tierOrder: self.policy.tiers.tiers.map(\.name))
        if !assessment.learning { self.anomalyScore = assessment.score }
        let reasons = assessment.reasons.prefix(3).joined(separator: "; ")
        let inputs =
            assessment.learning
            ? assessment.findings.first?.reason ?? "learning"
            : "score \(BehaviourModel.one(assessment.score))" + (reasons.isEmpty ? "" : ": \(reasons)")
        self.checks.append(CheckRecord(name: "behaviour", inputs: inputs, result: action == .none ? .pass : action == .refuse ? .fail : .escalate))
        // The agent is told what was unusual in words, never the score or the thresholds.
        let features = assessment.features.prefix(3).joined(separator: ", ")
        switch action {
        case .none:
            return nil
        case .refuse:
            self.tierReason += "; refused by the anomaly model: \(reasons)"
            return self.deny(
                .anomalyRefused, "this payment is unlike \(self.request.agent)'s usual payments (\(features)); it needs a person's review before it can be made"
            )
        case .escalate where index + 1 < accepting.count:
            index += 1
            self.judgedTier = accepting[index]
            self.tierReason += "; escalated to tier '\(accepting[index].name)' by the anomaly model: \(reasons)"
            return nil
        case .escalate, .approval:
            guard let approving = accepting[index...].firstIndex(where: { $0.approval != nil }) else {
                self.tierReason += "; the anomaly model asks for more than tier '\(accepting[index].name)' can give: \(reasons)"
                return self.deny(
                    .anomalyRefused, "this payment is unlike \(self.request.agent)'s usual payments (\(features)) and no tier can send it to approvers")
            }
            if approving != index {
                index = approving
                self.judgedTier = accepting[index]
            }
            self.tierReason += "; sent to the approvers of tier '\(accepting[index].name)' by the anomaly model: \(reasons)"
            return nil
        }
    }

    /// The agent's profile with every context in force applied, in configuration order.
    private mutating func effectiveProfile() -> AgentProfile? {
        let base = self.policy.profile(of: self.request.agent)
        var profile = base
        for context in self.policy.contexts
        where context.applies(to: self.request.agent, profile: base) && context.isInForce(now: self.facts.now, modes: self.facts.activeModes) {
            var changed = profile ?? AgentProfile(name: "(context \(context.name))", agents: [self.request.agent])
            let source: String
            switch context.activation {
            case .mode: source = "mode '\(context.name)', which an admin switched on"
            case .schedule(let schedule): source = "context '\(context.name)', in force \(schedule)"
            }
            if let tier = context.highestTier {
                changed.highestTier = tier
                self.limitSetBy["highest_tier"] = source
            }
            changed.maximumPerAuthorization.merge(context.maximumPerAuthorization) { _, new in new }
            for code in context.maximumPerAuthorization.keys { self.limitSetBy["max:\(code)"] = source }
            profile = changed
            self.checks.append(CheckRecord(name: "context", inputs: "\(context.name) in force", result: .pass))
        }
        return profile
    }

    private mutating func checkProfile(_ profile: AgentProfile, tier: Tier) -> Decision? {
        if let maximum = profile.maximumPerAuthorization[self.currency.code] {
            let passed = self.amount.minorUnits <= maximum
            self.checks.append(CheckRecord(name: "max_per_authorization", inputs: "\(self.amount) <= \(self.money(maximum))", passed: passed))
            if !passed {
                return self.deny(
                    .perAuthorizationLimit,
                    "\(self.amount) is above \(self.request.agent)'s limit of \(self.money(maximum)) per authorization"
                        + (self.limitSetBy["max:\(self.currency.code)"].map { ", set by \($0)" } ?? "")
                )
            }
        }
        if let highest = profile.highestTier {
            let passed = (self.policy.tiers.index(of: tier.name) ?? .max) <= (self.policy.tiers.index(of: highest) ?? -1)
            self.checks.append(CheckRecord(name: "highest_tier", inputs: "\(tier.name) <= \(highest)", passed: passed))
            if !passed {
                return self.deny(
                    .tierNotAllowed,
                    "the request needs tier '\(tier.name)'; \(self.request.agent) may reach tier '\(highest)' at most"
                        + (self.limitSetBy["highest_tier"].map { ", set by \($0)" } ?? "")
                )
            }
        }
        return nil
    }

    private mutating func checkMerchantRules(_ profile: AgentProfile) -> Decision? {
        let merchantAllowed = profile.allowsMerchant(self.request.merchant)
        self.checks.append(CheckRecord(name: "merchant", inputs: self.request.merchant, passed: merchantAllowed))
        if !merchantAllowed {
            return self.deny(.merchantNotAllowed, "\(self.request.agent) may not pay merchant '\(self.request.merchant)'")
        }
        let categoryAllowed = profile.allowsCategory(self.request.merchantCategoryCode)
        self.checks.append(CheckRecord(name: "merchant_category", inputs: self.request.merchantCategoryCode, passed: categoryAllowed))
        if !categoryAllowed {
            return self.deny(.categoryNotAllowed, "\(self.request.agent) may not pay merchants of category \(self.request.merchantCategoryCode)")
        }
        return nil
    }

    private mutating func checkIntent(_ profile: AgentProfile?) -> Decision? {
        guard let items = self.request.lineItems, !items.isEmpty else {
            self.checks.append(CheckRecord(name: "intent_line_items", inputs: "none", passed: false))
            return self.deny(.intentRequired, "this tier needs the intent's line_items, whose sum must equal the amount")
        }
        var sum: Int64 = 0
        var overflow = false
        for item in items {
            let (total, o1) = item.quantity.multipliedReportingOverflow(by: item.unitAmount)
            let (next, o2) = sum.addingReportingOverflow(total)
            overflow = overflow || o1 || o2
            sum = next
        }
        let matches = !overflow && sum == self.amount.minorUnits
        self.checks.append(CheckRecord(name: "intent_sum", inputs: overflow ? "overflow" : "\(self.money(sum)) = \(self.amount)", passed: matches))
        if !matches {
            return self.deny(
                .intentMismatch, overflow ? "the line items' sum overflows" : "the line items sum to \(self.money(sum)), not to the amount \(self.amount)"
            )
        }
        let categories = items.compactMap(\.category)
        if let profile {
            let refused = categories.first { !profile.allowsCategory($0) }
            self.checks.append(CheckRecord(name: "intent_categories", inputs: categories.joined(separator: ","), passed: refused == nil))
            if let refused {
                return self.deny(.categoryNotAllowed, "the intent lists an item of category \(refused), which \(self.request.agent) may not buy")
            }
        }
        return nil
    }
}
