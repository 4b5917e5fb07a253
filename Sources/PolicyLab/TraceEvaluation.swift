import Foundation
import Policy

/// Runs a trace through the real policy engine, in time order, with the facts the server would give it
/// (``PolicySimulator``): the request log's counts, the agent's history (for the static rules), budgets, and its
/// learned behaviour (for the model), learned only from authorizations that stood: signed at once, not voided.
public struct TraceEvaluation: Sendable {
    /// How one request came out.
    public struct Verdict: Sendable, Hashable {
        public var event: TraceEvent
        /// An anomaly check escalated it, sent it to approvers, or refused it (splitting, amount, new merchant, burst,
        /// the model).
        public var flagged: Bool
        /// `authorized`, `pending_approval`, or the refusal's code.
        public var outcome: String
        public var score: String?
    }

    /// Per attack kind: how many episodes, how many detected (any of their requests flagged), the requests flagged,
    /// and how long detection took.
    public struct AttackFigures: Sendable {
        public var episodes = 0
        public var detected = 0
        public var requests = 0
        /// Attack requests flagged by a feature that has to do with the attack.
        public var flaggedRequests = 0
        /// Attack requests not signed at once: sent to approvers, or refused.
        public var stoppedRequests = 0
        /// Minor units the attack had signed without a person (all currencies added: a rough measure).
        public var signedAmount: Int64 = 0
        /// For each detected episode: attack requests let through before the first flag, and seconds from its first
        /// request to the first flag.
        public var delays: [(requests: Int, seconds: Int64)] = []
    }

    /// The figures of one run.
    public struct Report: Sendable {
        public var legitimate = 0
        public var legitimateFlagged = 0
        public var attacks: [AttackKind: AttackFigures] = [:]
        public var verdicts: [Verdict] = []

        public var falseEscalationRate: Double { Double(self.legitimateFlagged) / Double(max(1, self.legitimate)) }
    }

    public let policy: PolicyEngine
    /// The anomaly checks: a flag from any of them marks the request.
    static let anomalyChecks: Set<String> = ["splitting", "amount_anomaly", "new_merchant", "burst", "behaviour"]

    public init(policy: PolicyEngine) {
        self.policy = policy
    }

    public func run(_ events: [TraceEvent], keepVerdicts: Bool = false) -> Report {
        var simulator = PolicySimulator(policy: self.policy)
        var report = Report()
        var episodeStart: [Int: (time: Int64, seen: Int, detected: Bool)] = [:]

        for event in events {
            guard let currency = Currency(code: event.currency) else { continue }
            let request = PolicyRequest(
                agent: event.agent, amount: Money(minorUnits: event.amount, currency: currency), merchant: event.merchant, merchantCategoryCode: event.mcc)
            let decided = simulator.decide(request, at: event.time)
            let (judgement, decision) = (decided.judgement, decided.decision)
            // A trace does not say when a payment was voided, only that it was: it stays in the static history (as
            // it would until its void) and is never learned. Pending approvals get no verdict: held until the deadline.
            switch decision.outcome {
            case .authorized:
                simulator.record(decided, agent: event.agent, settlement: .init(authorizedAt: event.time, releasedAt: nil, learnable: event.voided != true))
            case .pendingApproval(_, let approval):
                simulator.record(
                    decided, agent: event.agent, settlement: .init(authorizedAt: nil, releasedAt: event.time + approval.ttlSeconds, learnable: false))
            case .denied:
                break
            }
            let flaggedChecks = decision.checks.filter { Self.anomalyChecks.contains($0.name) && $0.result != .pass }
            let flagged = !flaggedChecks.isEmpty
            // Which features raised the flag: the static checks' own, and the model's findings that scored.
            var features = Set(flaggedChecks.compactMap { Self.staticFeature[$0.name] })
            if flaggedChecks.contains(where: { $0.name == "behaviour" }), let model = self.policy.behaviour, let before = judgement.before {
                features.formUnion(model.assess(judgement.payment, state: before, agent: event.agent).features)
            }
            let outcome: String
            switch decision.outcome {
            case .authorized: outcome = "authorized"
            case .pendingApproval: outcome = "pending_approval"  // an approver would look at it
            case .denied(let code, _): outcome = code.rawValue
            }

            if let kind = AttackKind(rawValue: event.label), let episode = event.episode {
                var figures = report.attacks[kind, default: AttackFigures()]
                var start = episodeStart[episode] ?? (event.time, 0, false)
                if episodeStart[episode] == nil { figures.episodes += 1 }
                figures.requests += 1
                if outcome == "authorized" {
                    figures.signedAmount += event.amount
                } else {
                    figures.stoppedRequests += 1
                }
                // Detected only by a flag that has to do with the attack: a chance flag on an unrelated feature
                // (legitimate requests are flagged at a small rate too) does not count.
                if flagged, !features.isDisjoint(with: kind.evidence) {
                    figures.flaggedRequests += 1
                    if !start.detected {
                        start.detected = true
                        figures.detected += 1
                        figures.delays.append((start.seen, event.time - start.time))
                    }
                }
                start.seen += 1
                episodeStart[episode] = start
                report.attacks[kind] = figures
            } else {
                report.legitimate += 1
                if flagged { report.legitimateFlagged += 1 }
            }
            if keepVerdicts {
                let score = decision.checks.first { $0.name == "behaviour" }?.inputs
                report.verdicts.append(Verdict(event: event, flagged: flagged, outcome: outcome, score: score))
            }
        }
        return report
    }

    /// The feature each static check stands for.
    static let staticFeature = ["splitting": "repeat", "amount_anomaly": "amount", "new_merchant": "merchant", "burst": "burst"]
}

extension TraceEvaluation.Report {
    /// The table `countersign policy evaluate` prints.
    public func table() -> String {
        var lines = ["attack kind       episodes  detected  rate    flagged    stopped    median delay (requests, time)"]
        for kind in AttackKind.allCases {
            let figures = self.attacks[kind] ?? .init()
            let rate = Double(figures.detected) / Double(max(1, figures.episodes))
            let delays = figures.delays.sorted { $0.seconds < $1.seconds }
            let median = delays.isEmpty ? "-" : "\(delays[delays.count / 2].requests), \(Self.duration(delays[delays.count / 2].seconds))"
            let requests = "\(figures.flaggedRequests)/\(figures.requests)"
            let stopped = "\(figures.stoppedRequests)/\(figures.requests)"
            lines.append(
                kind.rawValue.padding(toLength: 18, withPad: " ", startingAt: 0) + "\(figures.episodes)".padding(toLength: 10, withPad: " ", startingAt: 0)
                    + "\(figures.detected)".padding(toLength: 10, withPad: " ", startingAt: 0)
                    + String(format: "%5.1f%%  ", 100 * rate) + requests.padding(toLength: 11, withPad: " ", startingAt: 0)
                    + stopped.padding(toLength: 11, withPad: " ", startingAt: 0) + median)
        }
        let all = self.attacks.values.reduce(into: (0, 0)) {
            $0.0 += $1.episodes; $0.1 += $1.detected
        }
        lines.append(
            String(
                format: "legitimate requests flagged: %d of %d (%.2f%%); attack episodes detected: %d of %d", self.legitimateFlagged, self.legitimate,
                100 * self.falseEscalationRate, all.1, all.0))
        return lines.joined(separator: "\n")
    }

    static func duration(_ seconds: Int64) -> String {
        seconds < 120 ? "\(seconds) s" : seconds < 7200 ? "\(seconds / 60) min" : seconds < 172_800 ? "\(seconds / 3600) h" : "\(seconds / 86_400) d"
    }
}
