/// When a request is judged at a higher tier than its amount alone would put it in.
///
/// Applied at tiers whose checks include ``PolicyCheck/escalation``. Any anomaly moves the request up one
/// tier (once, however many anomalies); from the last tier it is refused, unless that tier needs approvers,
/// who then see the anomaly in the decision record. Splitting is judged first: several
/// payments to one merchant within `splittingWindowSeconds` are judged at the tier of their sum.
public struct EscalationRules: Sendable, Hashable, Encodable {
    /// An amount more than `amountFactor` times the agent's mean over its history is an anomaly…
    public var amountFactor: Int64?
    /// …over its authorizations in this many seconds…
    public var historySeconds: Int64
    /// …once it has at least this many (a new agent has no history to compare with).
    public var minimumHistory: Int
    /// A merchant the agent never paid before, for more than this amount (per currency), is an anomaly.
    public var newMerchantAbove: [String: Int64]
    /// More than this many requests within the window is an anomaly.
    public var burst: RateLimit?
    public var splittingWindowSeconds: Int64?

    public init(
        amountFactor: Int64? = nil, historySeconds: Int64 = 30 * 86_400, minimumHistory: Int = 5, newMerchantAbove: [String: Int64] = [:],
        burst: RateLimit? = nil, splittingWindowSeconds: Int64? = nil
    ) {
        self.amountFactor = amountFactor
        self.historySeconds = historySeconds
        self.minimumHistory = minimumHistory
        self.newMerchantAbove = newMerchantAbove
        self.burst = burst
        self.splittingWindowSeconds = splittingWindowSeconds
    }

    public static let none = EscalationRules()

}

/// Recent request times per agent, for rate limits and burst detection. Keeps only as many times per agent as
/// the largest threshold needs, so a flood cannot grow it without bound.
public struct RequestLog: Sendable {
    private var times: [String: [Duration]] = [:]
    private let keep: Int
    private let horizon: Duration

    /// - Parameters:
    ///   - keep: the most times kept per agent (the largest threshold plus one).
    ///   - horizon: the longest window asked about; older times are dropped.
    public init(keep: Int, horizon: Duration) {
        self.keep = max(1, keep)
        self.horizon = horizon
    }

    /// Records a request by `agent` at `now` and returns how many of its requests, this one included, fall in
    /// each of `windows` (capped at `keep`).
    public mutating func record(agent: String, at now: Duration, windows: [Duration]) -> [Int] {
        var list = self.times[agent, default: []]
        list.removeAll { now - $0 >= self.horizon }
        list.append(now)
        if list.count > self.keep { list.removeFirst(list.count - self.keep) }
        self.times[agent] = list
        return windows.map { window in list.reduce(0) { $0 + (now - $1 < window ? 1 : 0) } }
    }

    /// Forgets agents with no recent requests.
    public mutating func prune(at now: Duration) {
        self.times = self.times.filter { _, list in list.last.map { now - $0 < self.horizon } ?? false }
    }
}
