import Foundation
import Policy

/// Runs a trace through the real policy engine, in time order, with the facts the server would give it: the request
/// log's counts, the agent's history (for the static rules) and its learned behaviour (for the model), each learned
/// only from authorizations that stood: signed (at once, not pending), not voided, learned when they expire.
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

    /// Per agent: what the facts are made of.
    struct AgentFacts {
        var requests: [Int64] = []
        /// Authorizations learned, for the static history (time, amount, currency).
        var history: [(time: Int64, amount: Int64, currency: String)] = []
        var merchants: Set<String> = []
        var recent: [(time: Int64, merchant: String, amount: Int64, currency: String)] = []
        var behaviour = AgentBehaviour()
    }

    public func run(_ events: [TraceEvent], keepVerdicts: Bool = false) -> Report {
        var agents: [String: AgentFacts] = [:]
        // Authorizations waiting for their expiry to be learned: (time, agent, payment).
        var maturing: [(time: Int64, agent: String, payment: ObservedPayment, trusted: Bool)] = []
        var report = Report()
        var episodeStart: [Int: (time: Int64, seen: Int, detected: Bool)] = [:]
        let windows = self.windows()

        for event in events {
            // Learn what has matured by now (expired without a void).
            if let first = maturing.first, first.time <= event.time {
                let due = maturing.prefix { $0.time <= event.time }
                for item in due { self.learn(item.payment, agent: item.agent, trusted: item.trusted, into: &agents) }
                maturing.removeFirst(due.count)
            }
            guard let currency = Currency(code: event.currency) else { continue }
            let amount = Money(minorUnits: event.amount, currency: currency)
            var facts = agents[event.agent, default: AgentFacts()]
            facts.requests.append(event.time)
            facts.requests.removeAll { event.time - $0 >= windows.longest }
            var policyFacts = PolicyFacts(now: event.time)
            policyFacts.requestsInRateWindow = facts.requests.count { event.time - $0 < windows.rate }
            policyFacts.requestsInBurstWindow = facts.requests.count { event.time - $0 < windows.burst }
            let since = event.time - self.policy.escalation.historySeconds
            if let first = facts.history.first, first.time < since { facts.history.removeAll { $0.time < since } }
            let history = facts.history.filter { $0.time >= since && $0.currency == event.currency }
            policyFacts.historyCount = history.count
            policyFacts.historyMeanAmount = history.isEmpty ? 0 : (history.reduce(0) { $0 + $1.amount } + Int64(history.count) / 2) / Int64(history.count)
            policyFacts.merchantPaidBefore = facts.merchants.contains(event.merchant)
            if let window = self.policy.escalation.splittingWindowSeconds {
                facts.recent.removeAll { event.time - $0.time >= window }
                policyFacts.recentSpendAtMerchant = facts.recent.filter { $0.merchant == event.merchant && $0.currency == event.currency }.reduce(0) {
                    $0 + $1.amount
                }
            }
            // As the server does: the state before this request is what it is judged on; the request is noted at once.
            let observed = ObservedPayment(time: event.time, amount: amount, merchant: event.merchant, category: event.mcc)
            let before = facts.behaviour
            if let model = self.policy.behaviour {
                policyFacts.behaviour = before
                model.note(observed, into: &facts.behaviour)
            }

            let decision = self.policy.evaluate(
                PolicyRequest(agent: event.agent, amount: amount, merchant: event.merchant, merchantCategoryCode: event.mcc), facts: policyFacts)
            if let model = self.policy.behaviour, decision.tier != nil { model.notePace(observed, into: &facts.behaviour) }
            let flaggedChecks = decision.checks.filter { Self.anomalyChecks.contains($0.name) && $0.result != .pass }
            let flagged = !flaggedChecks.isEmpty
            // Which features raised the flag: the static checks' own, and the model's findings that scored.
            var features = Set(flaggedChecks.compactMap { Self.staticFeature[$0.name] })
            if flaggedChecks.contains(where: { $0.name == "behaviour" }), let model = self.policy.behaviour {
                features.formUnion(model.assess(observed, state: before, agent: event.agent).features)
            }
            let outcome: String
            switch decision.outcome {
            case .authorized(let tier):
                outcome = "authorized"
                // The static rules' history sees an authorization at once, as the store does (voided or not).
                facts.recent.append((event.time, event.merchant, event.amount, event.currency))
                facts.history.append((event.time, event.amount, event.currency))
                facts.merchants.insert(event.merchant)
                // The model learns it a day later if it stood (not voided); its amount only if the model did not flag it.
                let flaggedByModel = flaggedChecks.contains { $0.name == "behaviour" }
                if event.voided != true, self.policy.behaviour != nil {
                    maturing.append(
                        (event.time + max(tier.lifetimeSeconds, self.policy.behaviour?.learnAfterSeconds ?? 0), event.agent, observed, !flaggedByModel))
                    maturing.sort { $0.time < $1.time }
                }
            case .pendingApproval:
                outcome = "pending_approval"  // an approver would look at it; nothing is learned from it here
            case .denied(let code, _):
                outcome = code.rawValue
            }
            agents[event.agent] = facts

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

    private func learn(_ payment: ObservedPayment, agent: String, trusted: Bool, into agents: inout [String: AgentFacts]) {
        var facts = agents[agent, default: AgentFacts()]
        if let model = self.policy.behaviour { model.learn(payment, into: &facts.behaviour, trusted: trusted) }
        agents[agent] = facts
    }

    /// The feature each static check stands for.
    static let staticFeature = ["splitting": "repeat", "amount_anomaly": "amount", "new_merchant": "merchant", "burst": "burst"]

    private func windows() -> (rate: Int64, burst: Int64, longest: Int64) {
        let rate = self.policy.profiles.compactMap { $0.rateLimit?.perSeconds }.max() ?? 60
        let burst = self.policy.escalation.burst?.perSeconds ?? 60
        return (rate, burst, max(rate, burst, 1))
    }
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
