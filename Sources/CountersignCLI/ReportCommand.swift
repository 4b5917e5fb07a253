import ArgumentParser
import CountersignConfiguration
import Foundation
import Ledger
import Policy
import PolicyLab

/// `countersign report`: what the service decided over a window, for the people who own its outcomes.
struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Report decisions by outcome and code, escalation and approval rates, approval turnaround, voids, budget use and anomaly scores.",
        discussion: """
            Read from the store (read-only) over [--from, --to). Budgets are those of --policy (or of --config's policy): for \
            each, what counted in its window at the end of the report, and the most it reached during it. The figures are \
            documented in docs/operations.md ("Business report").
            """
    )

    @OptionGroup var source: StoreHistorySource

    @Option(help: "A configuration whose budgets are reported (default: --config's).")
    var policy: String?

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    func run() async throws {
        let window = try self.source.window(now: Int64(Date().timeIntervalSince1970))
        let policyPath = self.policy ?? self.source.configuration
        let engine = try policyPath.map { try PolicyCommand.load($0).policy }
        let longestWindow = engine.map { $0.budgets.budgets.map { Self.longest($0.window) }.max() ?? 0 } ?? 0
        let history = try await self.source.read(StoreHistory.Range(from: window.from, to: window.to, holdsFrom: max(0, window.from - longestWindow)))
        let report = BusinessReport(history: history, budgets: engine?.budgets.budgets ?? [], from: window.from, to: window.to)
        if self.json {
            try JSONOutput.print(report)
        } else {
            print(report.text())
        }
    }

    static func longest(_ window: BudgetWindow) -> Int64 {
        switch window {
        case .rolling(let seconds): seconds
        case .day: 86_400
        case .week: 7 * 86_400
        case .month: 31 * 86_400
        }
    }
}

/// The figures of `countersign report`, computed from the store's history.
struct BusinessReport: Encodable {
    struct Turnaround: Encodable {
        var count = 0
        var medianSeconds: Int64?
        var p90Seconds: Int64?
        var maxSeconds: Int64?

        enum CodingKeys: String, CodingKey {
            case count
            case medianSeconds = "median_seconds"
            case p90Seconds = "p90_seconds"
            case maxSeconds = "max_seconds"
        }
    }

    struct Approvals: Encodable {
        var requested = 0
        var approved = 0
        var denied = 0
        var expired = 0
        /// Withdrawn by the agent before a verdict.
        var withdrawn = 0
        var pending = 0
        /// Approved over those decided (approved, denied, expired).
        var approvalRate: Double?
        var turnaround = Turnaround()

        enum CodingKeys: String, CodingKey {
            case requested, approved, denied, expired, withdrawn, pending, turnaround
            case approvalRate = "approval_rate"
        }
    }

    struct BudgetUse: Encodable {
        var scope: String
        var window: String
        var currency: String
        var limit: Int64
        /// Counted in the window that holds the report's end.
        var counted: Int64
        var utilization: Double
        /// The most counted in any window during the report, when a payment was held.
        var peak: Int64
        var peakUtilization: Double
        var peakAt: Int64?

        enum CodingKeys: String, CodingKey {
            case scope, window, currency, limit, counted, utilization, peak
            case peakUtilization = "peak_utilization"
            case peakAt = "peak_at"
        }
    }

    struct Scores: Encodable {
        /// Requests the model judged (past its cold start).
        var judged = 0
        /// Requests of agents it was still learning.
        var learning = 0
        /// Requests it escalated, sent to approvers or refused.
        var flagged = 0
        /// Upper bounds of the buckets (the last is open), and the requests in each.
        var buckets: [String: Int] = [:]
        var median: Double?
        var p99: Double?
    }

    var from: Int64
    var to: Int64
    var decisions = 0
    /// `authorized` (signed at once), `pending_approval`, `refused`.
    var outcomes: [String: Int] = [:]
    var refusals: [String: Int] = [:]
    /// Decisions where a check raised the tier, by check.
    var escalated = 0
    var escalationRate: Double?
    var escalationsByCheck: [String: Int] = [:]
    var approvals = Approvals()
    var voided = 0
    /// Authorizations signed in the window (at once, or approved) that their agent voided; a pending one withdrawn is
    /// counted with the approvals.
    var voidRate: Double?
    var budgets: [BudgetUse] = []
    var anomalyScores = Scores()

    enum CodingKeys: String, CodingKey {
        case from, to, decisions, outcomes, refusals, escalated, approvals, voided, budgets
        case escalationRate = "escalation_rate"
        case escalationsByCheck = "escalations_by_check"
        case voidRate = "void_rate"
        case anomalyScores = "anomaly_scores"
    }

    static let scoreBuckets: [Double] = [1, 2, 4, 8, 12, 18]

    init(history: StoreHistory, budgets: [Budget], from: Int64, to: Int64) {
        self.from = from
        self.to = to
        var scores: [Double] = []
        var turnarounds: [Int64] = []
        var verdicts: [String: [ApprovalRecord]] = [:]
        for approval in history.approvals { verdicts[approval.authorizationID, default: []].append(approval) }
        let decoder = JSONDecoder()
        var decisionRecords: [DecisionRecord] = []
        for record in history.authorizations {
            if record.quorum != nil {
                self.outcomes["pending_approval", default: 0] += 1
                self.approvals.requested += 1
                // As it stood at the report's end: verdicts given after it do not count yet.
                let given = (verdicts[record.id] ?? []).filter { $0.decidedAt < to }
                let approvedAt = given.filter { $0.verdict == .approve }.map(\.decidedAt).sorted().dropFirst((record.quorum ?? 1) - 1).first
                if let deny = given.first(where: { $0.verdict == .deny }) {
                    self.approvals.denied += 1
                    turnarounds.append(deny.decidedAt - record.createdAt)
                } else if let approvedAt {
                    self.approvals.approved += 1
                    turnarounds.append(approvedAt - record.createdAt)
                    if let voidedAt = record.voidedAt, voidedAt < to { self.voided += 1 }
                } else if let voidedAt = record.voidedAt, voidedAt < to {
                    self.approvals.withdrawn += 1  // the agent withdrew it before anyone decided
                } else if let deadline = record.approvalExpiresAt, deadline <= to {
                    self.approvals.expired += 1
                } else {
                    self.approvals.pending += 1
                }
            } else {
                self.outcomes["authorized", default: 0] += 1
            }
            if record.quorum == nil, let voidedAt = record.voidedAt, voidedAt < to { self.voided += 1 }
            if let data = record.decision, let decision = try? decoder.decode(DecisionRecord.self, from: data) { decisionRecords.append(decision) }
        }
        for refusal in history.refusals {
            self.outcomes["refused", default: 0] += 1
            self.refusals[refusal.code, default: 0] += 1
            if let decision = try? decoder.decode(DecisionRecord.self, from: refusal.decision) { decisionRecords.append(decision) }
        }
        self.decisions = history.authorizations.count + history.refusals.count
        for decision in decisionRecords {
            let escalations = decision.checks.filter { $0.result == .escalate }
            if !escalations.isEmpty { self.escalated += 1 }
            for check in escalations { self.escalationsByCheck[check.name, default: 0] += 1 }
            if let behaviour = decision.checks.first(where: { $0.name == "behaviour" }) {
                if let score = Self.score(behaviour.inputs) {
                    self.anomalyScores.judged += 1
                    scores.append(score)
                    if behaviour.result != .pass { self.anomalyScores.flagged += 1 }
                } else {
                    self.anomalyScores.learning += 1
                }
            }
        }
        self.escalationRate = self.decisions == 0 ? nil : Double(self.escalated) / Double(self.decisions)
        let signed = (self.outcomes["authorized"] ?? 0) + self.approvals.approved
        self.voidRate = signed == 0 ? nil : Double(self.voided) / Double(signed)
        let decided = self.approvals.approved + self.approvals.denied + self.approvals.expired
        self.approvals.approvalRate = decided == 0 ? nil : Double(self.approvals.approved) / Double(decided)
        turnarounds.sort()
        self.approvals.turnaround = Turnaround(
            count: turnarounds.count, medianSeconds: Self.percentile(turnarounds, 0.5), p90Seconds: Self.percentile(turnarounds, 0.9),
            maxSeconds: turnarounds.last)
        scores.sort()
        for score in scores {
            let bound = Self.scoreBuckets.first { score < $0 }
            self.anomalyScores.buckets[bound.map { "<\(Int($0))" } ?? ">=\(Int(Self.scoreBuckets.last ?? 0))", default: 0] += 1
        }
        self.anomalyScores.median = Self.percentile(scores, 0.5)
        self.anomalyScores.p99 = Self.percentile(scores, 0.99)
        self.budgets = Self.budgetUse(budgets, holds: history.holds, from: from, to: to)
    }

    /// Each budget's use at the end of the report, and its peak: the most counted in its window at any moment a
    /// payment was held during the report.
    static func budgetUse(_ budgets: [Budget], holds: [HoldRecord], from: Int64, to: Int64) -> [BudgetUse] {
        var uses: [BudgetUse] = []
        for budget in budgets {
            for (currency, limit) in budget.limits.sorted(by: { $0.key < $1.key }) {
                var timeline = HoldTimeline()
                var peak: (amount: Int64, at: Int64?) = (0, nil)
                var started = false
                // What counted when the report starts, then at every hold made during it, then at its end.
                func observe(_ time: Int64) {
                    let counted = timeline.counted(since: budget.window.start(at: time), at: time)
                    if counted > peak.amount { peak = (counted, time) }
                }
                for hold in holds where hold.scope == budget.scope.key && hold.currency == currency {
                    if hold.createdAt >= from, !started {
                        started = true
                        observe(from)
                    }
                    timeline.add(time: hold.createdAt, amount: hold.amount, releasedAt: [hold.releasedAt, hold.expiresAt].compactMap { $0 }.min())
                    if hold.createdAt >= from { observe(hold.createdAt) }
                }
                if !started { observe(from) }
                let end = to - 1
                let counted = timeline.counted(since: budget.window.start(at: end), at: end)
                if counted > peak.amount { peak = (counted, end) }
                uses.append(
                    BudgetUse(
                        scope: budget.scope.key, window: budget.window.description, currency: currency, limit: limit, counted: counted,
                        utilization: Double(counted) / Double(max(1, limit)), peak: peak.amount, peakUtilization: Double(peak.amount) / Double(max(1, limit)),
                        peakAt: peak.at))
            }
        }
        return uses
    }

    /// The score in a behaviour check's inputs (`score 7.5: …`); `nil` while the model was learning.
    static func score(_ inputs: String) -> Double? {
        guard inputs.hasPrefix("score ") else { return nil }
        return Double(inputs.dropFirst(6).prefix { $0 != ":" })
    }

    /// Nearest rank.
    static func percentile<Value>(_ sorted: [Value], _ fraction: Double) -> Value? {
        guard !sorted.isEmpty else { return nil }
        let rank = Int((fraction * Double(sorted.count)).rounded(.up))
        return sorted[min(sorted.count - 1, max(0, rank - 1))]
    }

    func text() -> String {
        let percent = { (value: Double?) in value.map { String(format: "%.1f%%", 100 * $0) } ?? "-" }
        let seconds = { (value: Int64?) in value.map { Terminal.duration(seconds: $0) } ?? "-" }
        var lines = ["report \(Terminal.time(self.from)) to \(Terminal.time(self.to)): \(self.decisions) decision(s)"]
        for outcome in ["authorized", "pending_approval", "refused"] {
            let count = self.outcomes[outcome] ?? 0
            lines.append("  \(outcome.padding(toLength: 18, withPad: " ", startingAt: 0))\(count)")
        }
        for (code, count) in self.refusals.sorted(by: { ($0.value, $1.key) > ($1.value, $0.key) }) {
            lines.append("    \(code.padding(toLength: 26, withPad: " ", startingAt: 0))\(count)")
        }
        lines.append("escalated: \(self.escalated) (\(percent(self.escalationRate)))")
        for (check, count) in self.escalationsByCheck.sorted(by: { $0.key < $1.key }) {
            lines.append("    \(check.padding(toLength: 26, withPad: " ", startingAt: 0))\(count)")
        }
        let approvals = self.approvals
        lines.append(
            "approvals: \(approvals.requested) requested, \(approvals.approved) approved, \(approvals.denied) denied, \(approvals.expired) expired, "
                + "\(approvals.withdrawn) withdrawn, \(approvals.pending) pending; approval rate \(percent(approvals.approvalRate))")
        lines.append(
            "  turnaround: median \(seconds(approvals.turnaround.medianSeconds)), p90 \(seconds(approvals.turnaround.p90Seconds)), "
                + "max \(seconds(approvals.turnaround.maxSeconds))")
        lines.append("voided: \(self.voided) (\(percent(self.voidRate)) of those signed)")
        if !self.budgets.isEmpty {
            lines.append("budgets (now, and peak during the report)")
            for use in self.budgets {
                lines.append(
                    "  \(use.scope) \(use.window): \(Terminal.money(use.counted, use.currency)) of \(Terminal.money(use.limit, use.currency)) "
                        + "(\(percent(use.utilization))); peak \(Terminal.money(use.peak, use.currency)) (\(percent(use.peakUtilization)))"
                        + (use.peakAt.map { " at \(Terminal.time($0))" } ?? ""))
            }
        }
        let scores = self.anomalyScores
        if scores.judged + scores.learning > 0 {
            lines.append(
                "anomaly model: \(scores.judged) judged, \(scores.learning) while learning, \(scores.flagged) flagged; "
                    + "median score \(scores.median.map { String(format: "%.1f", $0) } ?? "-"), p99 \(scores.p99.map { String(format: "%.1f", $0) } ?? "-")")
            let order = Self.scoreBuckets.map { "<\(Int($0))" } + [">=\(Int(Self.scoreBuckets.last ?? 0))"]
            lines.append("  " + order.map { "\($0): \(scores.buckets[$0] ?? 0)" }.joined(separator: "  "))
        }
        return lines.joined(separator: "\n")
    }
}
