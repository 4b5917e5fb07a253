import Policy

/// The facts a server would give the policy, kept from decisions fed to it in time order: what `countersign policy
/// evaluate` (labelled traces) and `countersign policy replay` (the store's history) decide with.
///
/// It follows the server's rules (docs/anomaly.md, docs/operations.md): request counts per agent in its profile's rate
/// window and the burst window; the escalation history of authorizations standing at the time (authorized, not
/// voided yet); merchants paid before; what is held at a merchant within the splitting window; budget holds at every
/// scope until released (a void, a deny) or, while pending, until the approval deadline; and the anomaly model's
/// state, each request noted as it arrives and each authorization learned once settled, if it stood. Times are
/// whole seconds (the store's resolution); the server counts requests to the nanosecond.
public struct PolicySimulator: Sendable {
    /// What became of a decided request, as far as the facts of later requests go.
    public struct Settlement: Sendable, Hashable {
        /// When it came to count as authorized (its creation, or its approval); `nil` if it never did.
        public var authorizedAt: Int64?
        /// When its holds stopped counting (a void, a deny, or the approval deadline); `nil` while they count.
        public var releasedAt: Int64?
        /// Whether the model learns it once settled (signed and never voided).
        public var learnable: Bool

        public init(authorizedAt: Int64?, releasedAt: Int64?, learnable: Bool) {
            self.authorizedAt = authorizedAt
            self.releasedAt = releasedAt
            self.learnable = learnable
        }
    }

    /// One request being judged: the facts it is judged on, and the model's state before it was noted.
    public struct Judgement: Sendable {
        public var facts: PolicyFacts
        public var payment: ObservedPayment
        public var before: AgentBehaviour?
    }

    private struct Authorization {
        var time: Int64
        var merchant: String
        var amount: Int64
        var currency: String
        var settlement: Settlement

        func standing(at now: Int64) -> Bool {
            (self.settlement.authorizedAt.map { $0 <= now } ?? false) && (self.settlement.releasedAt.map { $0 > now } ?? true)
        }

        func held(at now: Int64) -> Bool { self.settlement.releasedAt.map { $0 > now } ?? true }
    }

    private struct AgentFacts {
        var requests: [Int64] = []
        /// Authorized or pending, oldest first; kept for the longest window the facts look back.
        var authorizations: [Authorization] = []
        var merchantsPaid: Set<String> = []
        var behaviour = AgentBehaviour()
    }

    public let policy: PolicyEngine
    private var agents: [String: AgentFacts] = [:]
    /// Authorizations waiting to be learned, by the time they settle.
    private var maturing: [(time: Int64, agent: String, payment: ObservedPayment, trusted: Bool)] = []
    /// Per scope key and currency.
    private var holds: [String: HoldTimeline] = [:]
    /// How long after its creation an authorization is final (as the server's behaviour book counts it).
    private let settleSeconds: Int64
    /// Authorizations older than this are never looked at again.
    private let lookBackSeconds: Int64
    private let budgetedScopes: Set<String>

    public init(policy: PolicyEngine) {
        self.policy = policy
        self.settleSeconds = policy.behaviour.map { $0.settleSeconds(in: policy.tiers) } ?? 0
        self.lookBackSeconds = max(policy.escalation.historySeconds, policy.escalation.splittingWindowSeconds ?? 0)
        self.budgetedScopes = Set(policy.budgets.budgets.map(\.scope.key))
    }

    /// The facts of a request at `time`, with the request counted and noted by the model, as the server does as it
    /// arrives. Requests must come in time order.
    public mutating func judge(_ request: PolicyRequest, at time: Int64) -> Judgement {
        self.learnSettled(upTo: time)
        var agent = self.agents[request.agent, default: AgentFacts()]
        var facts = PolicyFacts(now: time)
        let windows = self.policy.requestWindows(of: request.agent)
        let rate = windows.rate.map { $0.components.seconds }
        let burst = windows.burst.map { $0.components.seconds }
        agent.requests.append(time)
        let longest = max(rate ?? 0, burst ?? 0)
        agent.requests.removeFirst(agent.requests.prefix { time - $0 >= longest }.count)
        if let rate { facts.requestsInRateWindow = agent.requests.count { time - $0 < rate } }
        if let burst { facts.requestsInBurstWindow = agent.requests.count { time - $0 < burst } }

        // Older than every window the facts look at: only its merchant is still remembered.
        let old = time - self.lookBackSeconds
        let gone = agent.authorizations.prefix { $0.time < old && ($0.settlement.authorizedAt ?? .min) <= time }
        for authorization in gone where authorization.settlement.authorizedAt != nil { agent.merchantsPaid.insert(authorization.merchant) }
        agent.authorizations.removeFirst(gone.count)
        if self.policy.needsHistory(request) {
            let rules = self.policy.escalation
            let currency = request.amount.currency.code
            let history = agent.authorizations.filter { $0.currency == currency && $0.time >= time - rules.historySeconds && $0.standing(at: time) }
            facts.historyCount = history.count
            let total = history.reduce(Int64(0)) { $0 + $1.amount }
            facts.historyMeanAmount = history.isEmpty ? 0 : (total + Int64(history.count) / 2) / Int64(history.count)
            facts.merchantPaidBefore =
                agent.merchantsPaid.contains(request.merchant)
                || agent.authorizations.contains { $0.merchant == request.merchant && ($0.settlement.authorizedAt.map { $0 <= time } ?? false) }
            if let window = rules.splittingWindowSeconds {
                facts.recentSpendAtMerchant = agent.authorizations.filter {
                    $0.merchant == request.merchant && $0.currency == currency && time - $0.time < window && $0.held(at: time)
                }.reduce(0) { $0 + $1.amount }
            }
        }
        let payment = ObservedPayment(time: time, amount: request.amount, merchant: request.merchant, category: request.merchantCategoryCode)
        var before: AgentBehaviour?
        if let model = self.policy.behaviour {
            before = agent.behaviour
            facts.behaviour = agent.behaviour
            model.note(payment, into: &agent.behaviour)
        }
        self.agents[request.agent] = agent
        return Judgement(facts: facts, payment: payment, before: before)
    }

    /// The budget the decision would take past its limit, with what is already counted, or `nil`: the check the store
    /// makes atomically with the holds.
    mutating func overBudget(_ decision: Decision, amount: Money, at time: Int64) -> (check: BudgetCheck, spent: Int64)? {
        for check in decision.budgetChecks {
            let spent = self.holds[Self.key(check.scope, amount.currency.code), default: HoldTimeline()].counted(since: check.windowStart, at: time)
            if spent > check.limit - amount.minorUnits { return (check, spent) }
        }
        return nil
    }

    /// A request judged and decided by the policy, with the budget check the store would make.
    public struct Decided: Sendable {
        public var judgement: Judgement
        /// Refused `BUDGET_EXCEEDED` when it would take a budget past its limit.
        public var decision: Decision
        /// The budget it would have exceeded, with what was counted there already.
        public var overBudget: (check: BudgetCheck, spent: Int64)?
    }

    /// Judges a request and decides it: the policy's decision, then the budgets as the store checks them.
    public mutating func decide(_ request: PolicyRequest, at time: Int64) -> Decided {
        let judgement = self.judge(request, at: time)
        var decision = self.policy.evaluate(request, facts: judgement.facts)
        // As the server: a request given a tier counts in the spending pace, whatever the budgets then say.
        if decision.tier != nil, let model = self.policy.behaviour {
            model.notePace(judgement.payment, into: &self.agents[request.agent, default: AgentFacts()].behaviour)
        }
        var over: (check: BudgetCheck, spent: Int64)?
        if decision.tier != nil, let found = self.overBudget(decision, amount: request.amount, at: time) {
            over = found
            decision.outcome = .denied(
                code: .budgetExceeded, reason: "\(request.amount) would exceed the \(found.check.window) budget of \(found.check.scope)")
        }
        return Decided(judgement: judgement, decision: decision, overBudget: over)
    }

    /// Records what came of a decided request that was authorized or sent to approvers (a refusal leaves nothing
    /// behind but its count): its holds, its place in the agent's history, and, once settled, what the model learns.
    public mutating func record(_ decided: Decided, agent: String, settlement: Settlement) {
        guard let tier = decided.decision.tier else { return }
        let flagged = decided.decision.checks.contains { $0.name == "behaviour" && $0.result != .pass } && tier.approval == nil
        self.record(decided.judgement, agent: agent, scopeKeys: decided.decision.scopes.map(\.key), modelFlagged: flagged, settlement: settlement)
    }

    /// Records an authorization or pending approval: held at the scopes of `scopeKeys` (`agent:…`, `team:…`, `org:…`),
    /// its amount not learned when the model flagged it (and no approver vouched for it).
    public mutating func record(_ judgement: Judgement, agent: String, scopeKeys: [String], modelFlagged: Bool, settlement: Settlement) {
        let payment = judgement.payment
        var facts = self.agents[agent, default: AgentFacts()]
        facts.authorizations.append(
            Authorization(
                time: payment.time, merchant: payment.merchant, amount: payment.amount.minorUnits, currency: payment.amount.currency.code,
                settlement: settlement))
        if let authorizedAt = settlement.authorizedAt, authorizedAt <= payment.time { facts.merchantsPaid.insert(payment.merchant) }
        self.agents[agent] = facts
        // Only scopes with a budget are ever checked.
        for scope in scopeKeys where self.budgetedScopes.contains(scope) {
            self.holds[scope + " " + payment.amount.currency.code, default: HoldTimeline()].add(
                time: payment.time, amount: payment.amount.minorUnits, releasedAt: settlement.releasedAt)
        }
        // Learned once settled if it stood.
        if settlement.learnable, settlement.authorizedAt != nil, self.policy.behaviour != nil {
            let due = payment.time + self.settleSeconds
            let index = self.maturing.lastIndex { $0.time <= due }.map { $0 + 1 } ?? 0
            self.maturing.insert((due, agent, payment, !modelFlagged), at: index)
        }
    }

    /// The learned state of an agent now (tests).
    public func behaviour(of agent: String) -> AgentBehaviour? { self.agents[agent]?.behaviour }

    private mutating func learnSettled(upTo time: Int64) {
        guard let model = self.policy.behaviour, let first = self.maturing.first, first.time <= time else { return }
        let due = self.maturing.prefix { $0.time <= time }
        for item in due {
            model.learn(item.payment, into: &self.agents[item.agent, default: AgentFacts()].behaviour, trusted: item.trusted)
        }
        self.maturing.removeFirst(due.count)
    }

    private static func key(_ scope: BudgetScope, _ currency: String) -> String { scope.key + " " + currency }

    /// Merchants each agent was authorized to pay before the facts begin (the server asks "ever").
    public mutating func knowMerchantsPaid(_ merchants: [String: Set<String>]) {
        for (agent, paid) in merchants { self.agents[agent, default: AgentFacts()].merchantsPaid.formUnion(paid) }
    }
}

/// Sums of a growing array of amounts, each changed in O(log n).
struct FenwickTree: Sendable {
    private var tree: [Int64] = [0]

    /// Adds a position (holding 0) at the end.
    mutating func append() {
        let position = self.tree.count
        // The new node covers (position - lowbit, position]: the sum of the nodes it spans, all zero-extended.
        var sum: Int64 = 0
        var child = position - 1
        let low = position - (position & -position)
        while child > low {
            sum += self.tree[child]
            child -= child & -child
        }
        self.tree.append(sum)
    }

    mutating func add(_ value: Int64, at index: Int) {
        var node = index + 1
        while node < self.tree.count {
            self.tree[node] += value
            node += node & -node
        }
    }

    /// The sum of positions `[0, count)`.
    func sum(upTo count: Int) -> Int64 {
        var node = count
        var sum: Int64 = 0
        while node > 0 {
            sum += self.tree[node]
            node -= node & -node
        }
        return sum
    }
}

/// The holds of one scope in one currency, in the order they were made: what counts in a window is a suffix of
/// them, less those released by then (a Fenwick tree of the released amounts keeps each check logarithmic).
public struct HoldTimeline: Sendable {
    private var times: [Int64] = []
    private var amounts: [Int64] = []
    /// `prefix[i]`: the amounts of the first `i` holds.
    private var prefix: [Int64] = [0]
    /// Amounts released, by position.
    private var released = FenwickTree()
    /// Positions still counting whose release time is known, latest release first.
    private var releases: [(time: Int64, position: Int)] = []

    public init() {}

    /// A hold made at `time` (not before the last one) that stops counting at `releasedAt`, if that is known.
    public mutating func add(time: Int64, amount: Int64, releasedAt: Int64?) {
        self.times.append(time)
        self.amounts.append(amount)
        self.released.append()
        self.prefix.append(self.prefix[self.prefix.count - 1] + amount)
        if let releasedAt {
            let index = self.releases.firstIndex { $0.time < releasedAt } ?? self.releases.endIndex
            self.releases.insert((releasedAt, self.times.count - 1), at: index)
        }
    }

    /// What counts at `now` among the holds made since `windowStart`; `now` never goes back between calls.
    public mutating func counted(since windowStart: Int64, at now: Int64) -> Int64 {
        while let last = self.releases.last, last.time <= now {
            self.released.add(self.amounts[last.position], at: last.position)
            self.releases.removeLast()
        }
        var low = 0
        var high = self.times.count
        while low < high {
            let middle = (low + high) / 2
            if self.times[middle] < windowStart { low = middle + 1 } else { high = middle }
        }
        let held = self.prefix[self.times.count] - self.prefix[low]
        return held - (self.released.sum(upTo: self.times.count) - self.released.sum(upTo: low))
    }
}
