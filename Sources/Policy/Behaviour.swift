import Foundation

/// How an agent usually pays, learned online from its authorizations: a few numbers per feature, updated with each
/// authorization that stood (not voided, not refused), fading with a half-life so the model follows legitimate change.
///
/// Every feature is a robust, explainable statistic, never a black box: the amount's exponentially weighted median and
/// median absolute deviation (of the logarithm, so 4.00 → 8.00 and 400 → 800 are the same step), the merchants and
/// categories the agent pays with their decayed frequencies (a bounded "space-saving" list: the least-weighted entry
/// makes room), its activity per hour of the week, the median gap between payments, and its recent spending pace
/// against its usual one. Given the same observations in the same order, the state is the same: it is rebuilt
/// deterministically from the history. The floating-point values here are statistics of the agent's habits; money
/// itself stays integer minor units.
public struct AgentBehaviour: Codable, Sendable, Hashable {
    /// One robust location and scale, learned by stochastic approximation of the median and of the median absolute
    /// deviation (each step a fraction of the scale, so a single outlier moves it little).
    public struct RobustScale: Codable, Sendable, Hashable {
        public var median: Double
        public var deviation: Double

        mutating func learn(_ value: Double, rate: Double) {
            let scale = max(self.deviation, RobustScale.floor)
            self.median += rate * 1.5 * scale * (value > self.median ? 1 : value < self.median ? -1 : 0)
            // Never beyond what an amount can be (1 … 10^15 minor units, ln 34.5): a step may overshoot.
            self.median = min(max(self.median, 0), 35)
            let distance = abs(value - self.median)
            // Multiplicative, so the deviation stays positive and converges to the median distance.
            self.deviation *= exp(rate * 1.5 * (distance > self.deviation ? 1 : -1))
            self.deviation = min(max(self.deviation, RobustScale.floor / 2), 10)
        }

        /// How many robust deviations (1.4826 × MAD, a standard deviation for normal data) `value` is above the median.
        func deviations(of value: Double) -> Double {
            (value - self.median) / (1.4826 * max(self.deviation, RobustScale.floor))
        }

        /// The least deviation believed: habits are never more regular than ±10 % (ln 1.1 ≈ 0.095).
        static let floor = 0.095
    }

    /// A decayed count per key, for at most `capacity` keys (space-saving: a new key takes the least-weighted slot).
    public struct Frequencies: Codable, Sendable, Hashable {
        public var weights: [String: Double] = [:]
        /// The decayed weight of payments to keys seen for the first time (how often the agent tries something new).
        public var novelty: Double = 0

        func weight(of key: String) -> Double { self.weights[key] ?? 0 }

        mutating func decay(by factor: Double) {
            for key in self.weights.keys { self.weights[key]! *= factor }
            self.novelty *= factor
        }

        mutating func add(_ key: String, capacity: Int) {
            if self.weights[key] == nil {
                self.novelty += 1
                if self.weights.count >= capacity, let smallest = self.weights.min(by: { ($0.value, $0.key) < ($1.value, $1.key) }) {
                    self.weights[smallest.key] = nil
                }
            }
            self.weights[key, default: 0] += 1
        }

        /// The usual keys, most frequent first.
        func usual(_ count: Int) -> [String] {
            self.weights.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(count).map(\.key)
        }
    }

    /// Authorizations learned from (not decayed: the cold-start rule counts them).
    public var learned = 0
    /// Their decayed total weight: the denominator of every frequency.
    public var weight = 0.0
    /// When the state was last decayed (seconds since 1970).
    public var updatedAt: Int64 = 0
    /// The amount's logarithm, per currency; and a slow anchor of it (a half-life six times longer) for drift.
    public var amounts: [String: RobustScale] = [:]
    public var anchors: [String: RobustScale] = [:]
    public var merchants = Frequencies()
    public var categories = Frequencies()
    /// Decayed payments per hour of the week (0 = Monday 00:00 UTC), and per hour of the day.
    public var hours = [Double](repeating: 0, count: 168)
    public var hoursOfDay = [Double](repeating: 0, count: 24)
    /// When the first payment was learned: the usual pace is corrected for a history shorter than the half-life.
    public var firstLearnedAt: Int64?
    /// The logarithm of the seconds between payments.
    public var gaps: RobustScale?
    public var lastPaymentAt: Int64?
    /// The usual spending pace, per currency, in minor units per day.
    public var usualPace: [String: Double] = [:]
    /// How crowded the agent's payments usually are: ln(1 + its payments in the last few minutes) at each payment,
    /// counted over the learned payments themselves (so the state stays a function of the history), and that count.
    public var crowding: RobustScale?
    public var learnedCrowd = 0.0
    /// What is happening now, noted at every request (not only learned ones): habits are compared with it.
    public var live = Live()

    /// The present, as opposed to the habit: updated at each request the policy decides, decaying in minutes or hours.
    public struct Live: Codable, Sendable, Hashable {
        public var updatedAt: Int64 = 0
        public var lastRequestAt: Int64?
        /// Requests, decayed with a 5-minute half-life.
        public var requests = 0.0
        /// Authorized spending, per currency, decayed with a 6-hour half-life (minor units per day).
        public var pace: [String: Double] = [:]
        /// The unusual-hour and novelty points of recent requests, decayed with a 1-hour half-life.
        public var surprise = 0.0
        /// The last merchant asked for, and how many requests in a row went to it within the repeat window.
        public var repeatMerchant: String?
        public var repeatCount = 0

        public init() {}
    }

    public init() {}
}

/// One payment as the model sees it.
public struct ObservedPayment: Sendable, Hashable {
    public var time: Int64
    public var amount: Money
    public var merchant: String
    public var category: String

    public init(time: Int64, amount: Money, merchant: String, category: String) {
        self.time = time
        self.amount = amount
        self.merchant = merchant
        self.category = category
    }
}

/// What the anomaly model does with a score, per tier (configuration: `anomaly.actions`).
public enum AnomalyAction: String, Sendable, Hashable, Codable, CaseIterable {
    /// Recorded in the decision, nothing more.
    case none
    /// Judged one tier up.
    case escalate
    /// Judged at the first tier, this one or above, that needs approvers.
    case approval
    /// Refused with `ANOMALY_REFUSED`.
    case refuse
}

/// The anomaly model's settings: how fast it forgets, when it starts to judge, and what a score does at each tier.
public struct BehaviourModel: Sendable, Hashable, Encodable {
    /// One rule: at `tier` (and, unless another rule names them, the tiers above), a score at or above `score` does `action`.
    public struct Rule: Sendable, Hashable, Encodable {
        public var tier: String
        /// Points (integers, so the policy version never depends on how a fraction is printed).
        public var score: Int
        public var action: AnomalyAction

        public init(tier: String, score: Int, action: AnomalyAction) {
            self.tier = tier
            self.score = score
            self.action = action
        }
    }

    /// How long until an observation counts half (default 14 days).
    public var halfLifeSeconds: Int64
    /// Authorizations learned before the model judges (the cold-start rule): until then only the static rules apply.
    public var minimumHistory: Int
    /// Rules, in any order; for a tier the strongest action whose score is reached applies.
    public var rules: [Rule]
    /// How many merchants and categories are remembered per agent.
    public var merchantCapacity = 24
    public var categoryCapacity = 12
    /// Payments to one merchant within this many seconds count as a run (split payments).
    public var repeatWindowSeconds: Int64 = 1_800
    /// How long after its authorization a payment is learned (if it stood): an attacker cannot teach the model
    /// within a day what it then takes for usual.
    public var learnAfterSeconds: Int64 = 86_400

    public init(halfLifeSeconds: Int64 = 14 * 86_400, minimumHistory: Int = 12, rules: [Rule] = []) {
        self.halfLifeSeconds = halfLifeSeconds
        self.minimumHistory = minimumHistory
        self.rules = rules
    }

    /// How long after its creation an authorization is final, and learned if it stood: `learnAfterSeconds`, and at
    /// least the longest approval deadline plus the longest lifetime (no verdict or void can change it after).
    public func settleSeconds(in tiers: TierTable) -> Int64 {
        let longestApproval = tiers.tiers.compactMap { $0.approval?.ttlSeconds }.max() ?? 0
        let longestLifetime = tiers.tiers.map(\.lifetimeSeconds).max() ?? 0
        return max(self.learnAfterSeconds, longestApproval + longestLifetime)
    }

    /// The default rules: escalate from a score of 8 at every tier; approval from 12; refuse from 18.
    public static func defaultRules(firstTier: String) -> [Rule] {
        [
            Rule(tier: firstTier, score: 8, action: .escalate), Rule(tier: firstTier, score: 12, action: .approval),
            Rule(tier: firstTier, score: 18, action: .refuse),
        ]
    }
}

/// One feature's contribution to a score, with its reason in words.
public struct AnomalyFinding: Sendable, Hashable {
    /// `amount`, `drift`, `merchant`, `category`, `hour`, `rate`, `burst`, `pace`, `streak`, `repeat`.
    public var feature: String
    /// Points: roughly robust deviations (amounts, gaps) or bits of surprise (novelty, hours); 0 … 10.
    public var points: Double
    /// What was unusual, with the agent's own habit: for approvers and the audit record.
    public var reason: String
}

/// The model's judgement of one request.
public struct AnomalyAssessment: Sendable, Hashable {
    /// The sum of the findings' points; 0 while the model is still learning the agent.
    public var score: Double
    /// Every feature's contribution, largest first (those with no points included, for the record).
    public var findings: [AnomalyFinding]
    /// Whether the cold-start rule held the model back.
    public var learning: Bool

    /// The reasons of the findings that scored, largest first (at least the largest, if any scored at all).
    public var reasons: [String] {
        let strong = self.findings.filter { $0.points >= 1 }
        return (strong.isEmpty ? Array(self.findings.filter { $0.points > 0 }.prefix(1)) : strong).map(\.reason)
    }

    /// The features behind ``reasons``.
    public var features: [String] {
        let strong = self.findings.filter { $0.points >= 1 }
        return (strong.isEmpty ? Array(self.findings.filter { $0.points > 0 }.prefix(1)) : strong).map(\.feature)
    }
}
