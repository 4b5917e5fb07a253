import Foundation

// How a ``BehaviourModel`` learns an agent's habits from its payments, and how it scores a new payment against them.
extension BehaviourModel {
    /// Learns one authorization that stood (its expiry passed without a void). One the model itself flagged
    /// (`trusted: false`) teaches where and when the agent pays, but not how much: an attacker's escalated payments
    /// must not make larger amounts usual.
    public func learn(_ payment: ObservedPayment, into state: inout AgentBehaviour, trusted: Bool = true) {
        self.decay(&state, to: payment.time)
        let code = payment.amount.currency.code
        let value = log(Double(max(1, payment.amount.minorUnits)))
        state.learned += 1
        state.weight += 1
        let rate = max(1 / state.weight, 0.02)
        if !trusted {
        } else if var scale = state.amounts[code] {
            scale.learn(value, rate: rate)
            state.amounts[code] = scale
            var anchor = state.anchors[code]!
            anchor.learn(value, rate: max(1 / state.weight, 0.02) / 6)
            state.anchors[code] = anchor
        } else if state.amounts.count < 8 {
            state.amounts[code] = .init(median: value, deviation: 0.5)
            state.anchors[code] = .init(median: value, deviation: 0.5)
        }
        state.merchants.add(payment.merchant, capacity: self.merchantCapacity)
        state.categories.add(payment.category, capacity: self.categoryCapacity)
        state.hours[Self.hourOfWeek(payment.time)] += 1
        state.hoursOfDay[Self.hourOfWeek(payment.time) % 24] += 1
        if state.firstLearnedAt == nil { state.firstLearnedAt = payment.time }
        if let last = state.lastPaymentAt {
            let gap = log(Double(max(1, payment.time - last)))
            if var gaps = state.gaps {
                gaps.learn(gap, rate: rate)
                state.gaps = gaps
            } else {
                state.gaps = .init(median: gap, deviation: 1)
            }
        }
        state.learnedCrowd = Self.decayed(state.learnedCrowd, from: state.lastPaymentAt ?? payment.time, to: payment.time, halfLife: Self.crowdHalfLife) + 1
        let crowding = log(1 + state.learnedCrowd)
        if var scale = state.crowding {
            scale.learn(crowding, rate: rate)
            state.crowding = scale
        } else {
            state.crowding = .init(median: crowding, deviation: 0.5)
        }
        state.lastPaymentAt = payment.time
        if trusted { state.usualPace[code, default: 0] += Double(payment.amount.minorUnits) * 86_400 / Double(self.halfLifeSeconds) * log(2) }
    }

    /// ln(1 + the agent's requests in the last few minutes, this one included): what bursts are measured by.
    func crowding(_ state: AgentBehaviour, at time: Int64) -> Double {
        log(1 + Self.decayed(state.live.requests, from: state.live.updatedAt, to: time, halfLife: Self.crowdHalfLife) + 1)
    }

    /// Notes a request as it arrives, before it is judged (so that requests arriving together each see the ones
    /// before them): bursts, runs, streaks of unusual requests. The state the request is judged on is the one before.
    public func note(_ payment: ObservedPayment, into state: inout AgentBehaviour) {
        let surprise = state.learned >= self.minimumHistory ? self.surprise(of: payment, in: state) : 0
        var live = state.live
        let time = max(live.updatedAt, payment.time)
        live.requests = Self.decayed(live.requests, from: live.updatedAt, to: time, halfLife: Self.crowdHalfLife) + 1
        live.surprise = Self.decayed(live.surprise, from: live.updatedAt, to: time, halfLife: Self.streakHalfLife) + surprise
        for code in live.pace.keys { live.pace[code] = Self.decayed(live.pace[code]!, from: live.updatedAt, to: time, halfLife: Self.paceHalfLife) }
        if live.repeatMerchant == payment.merchant, let last = live.lastRequestAt, payment.time - last <= self.repeatWindowSeconds {
            live.repeatCount += 1
        } else {
            live.repeatMerchant = payment.merchant
            live.repeatCount = 1
        }
        live.lastRequestAt = payment.time
        live.updatedAt = time
        state.live = live
    }

    /// Adds an authorized payment to the spending pace (once it is signed or pending approval).
    public func notePace(_ payment: ObservedPayment, into state: inout AgentBehaviour) {
        let code = payment.amount.currency.code
        state.live.pace[code] =
            Self.decayed(
                state.live.pace[code, default: 0], from: state.live.updatedAt, to: max(state.live.updatedAt, payment.time), halfLife: Self.paceHalfLife)
            + Double(payment.amount.minorUnits) * 86_400 / Double(Self.paceHalfLife) * log(2)
    }

    /// The unusual-hour and novelty points of one request (what a streak adds up).
    private func surprise(of payment: ObservedPayment, in state: AgentBehaviour) -> Double {
        var state = state
        self.decay(&state, to: payment.time)
        return self.unusualness(of: payment, in: state, agent: "").reduce(0) { $0 + $1.points }
    }

    /// A new merchant, a new category (counted half when the merchant is new too: a new shop often sells something
    /// new), an unusual hour.
    private func unusualness(of payment: ObservedPayment, in state: AgentBehaviour, agent: String) -> [AnomalyFinding] {
        let merchant = self.novelty(of: payment.merchant, in: state.merchants, total: state.weight, agent: agent, noun: "merchant")
        var category = self.novelty(of: payment.category, in: state.categories, total: state.weight, agent: agent, noun: "category")
        if merchant.points > 0 { category.points /= 2 }
        return [merchant, category, self.hourFinding(payment.time, state: state, agent: agent)]
    }

    static func decayed(_ value: Double, from: Int64, to: Int64, halfLife: Int64) -> Double {
        to > from ? value * pow(0.5, Double(to - from) / Double(halfLife)) : value
    }

    /// Judges a request against the agent's habits as learned so far (the state is not changed).
    public func assess(_ payment: ObservedPayment, state: AgentBehaviour, agent: String) -> AnomalyAssessment {
        guard state.learned >= self.minimumHistory else {
            return AnomalyAssessment(
                score: 0,
                findings: [.init(feature: "learning", points: 0, reason: "\(agent) has \(state.learned) of \(self.minimumHistory) payments the model needs")],
                learning: true)
        }
        var state = state
        self.decay(&state, to: payment.time)
        let code = payment.amount.currency.code
        let amountText = "\(payment.amount)"
        var findings: [AnomalyFinding] = []

        if let scale = state.amounts[code] {
            let deviations = scale.deviations(of: log(Double(max(1, payment.amount.minorUnits))))
            let usual = Self.money(exp(scale.median), payment.amount.currency)
            findings.append(
                .init(
                    feature: "amount", points: Self.clamp(1.5 * (deviations - 2)),
                    reason:
                        "amount \(amountText) is \(Self.one(abs(deviations))) robust deviations \(deviations >= 0 ? "above" : "below") \(agent)'s usual \(usual)"
                ))
            if let anchor = state.anchors[code] {
                let ratio = exp(scale.median - anchor.median)
                findings.append(
                    .init(
                        feature: "drift", points: Self.clamp(8 * log2(max(ratio, 1)) - 2),
                        reason:
                            "\(agent)'s usual amount has moved \(Self.one(ratio))x from its longer-run \(Self.money(exp(anchor.median), payment.amount.currency))"
                    ))
            }
        } else {
            findings.append(.init(feature: "amount", points: 6, reason: "\(agent) never paid in \(code) before"))
        }

        let unusual = self.unusualness(of: payment, in: state, agent: agent)
        findings += unusual

        // A streak: other unusual requests in the last hour make this one count more, but only if it is unusual too
        // (a usual request after a legitimate new merchant stays usual).
        let own = unusual.reduce(0) { $0 + $1.points }
        let streak = Self.decayed(state.live.surprise, from: state.live.updatedAt, to: payment.time, halfLife: Self.streakHalfLife)
        findings.append(
            .init(
                feature: "streak", points: Self.clamp(min(1.5 * own, 0.8 * streak)),
                reason: "other requests in the last hour were also unusual (new merchants or categories, unusual hours)"))

        if let last = state.live.lastRequestAt ?? state.lastPaymentAt, let gaps = state.gaps {
            let gap = max(1, payment.time - last)
            let deviations = -gaps.deviations(of: log(Double(gap)))
            findings.append(
                .init(
                    feature: "rate", points: Self.clamp(deviations - 2.5),
                    reason: "\(gap) s after its last payment; \(agent) usually pays every \(Self.durationText(exp(gaps.median)))"))
        }

        if let crowding = state.crowding {
            // How surprising this many requests within minutes are for an agent that usually has `usual` (a Poisson
            // tail bound, in bits): a batch job's crowd is its usual, an interactive agent's is not.
            let requests = exp(self.crowding(state, at: payment.time)) - 1
            let usual = max(0.5, exp(crowding.median) - 1)
            let bits = requests > usual ? requests * log2(requests / usual) - (requests - usual) * log2(M_E) : 0
            findings.append(
                .init(
                    feature: "burst", points: Self.clamp(bits - 3),
                    reason: "\(Int(requests.rounded())) requests within minutes; \(agent) usually makes \(Self.one(usual))"))
        }

        if let learned = state.usualPace[code], learned > 0, let first = state.firstLearnedAt {
            // A history shorter than the half-life has not reached its steady pace yet: correct for it.
            let usual = learned / max(0.05, 1 - pow(0.5, Double(max(0, payment.time - first)) / Double(self.halfLifeSeconds)))
            let recent =
                Self.decayed(state.live.pace[code, default: 0], from: state.live.updatedAt, to: payment.time, halfLife: Self.paceHalfLife)
                + Double(payment.amount.minorUnits) * 86_400 / Double(Self.paceHalfLife) * log(2)
            let ratio = recent / usual
            findings.append(
                .init(
                    feature: "pace", points: Self.clamp(2 * log2(max(ratio, 1)) - 3),
                    reason:
                        "spending at \(Self.one(ratio))x \(agent)'s usual pace of \(Self.money(usual, payment.amount.currency)) a day"
                ))
        }

        if state.live.repeatMerchant == payment.merchant, let last = state.live.lastRequestAt, payment.time - last <= self.repeatWindowSeconds {
            let run = state.live.repeatCount + 1
            let habit = state.merchants.weight(of: payment.merchant) / max(state.weight, 1)
            findings.append(
                .init(
                    feature: "repeat", points: Self.clamp(Double(run) - 2 - 4 * habit),
                    reason: "payment \(run) in a row to \(payment.merchant) within \(self.repeatWindowSeconds / 60) minutes"))
        }

        findings.sort { ($0.points, $1.feature) > ($1.points, $0.feature) }
        return AnomalyAssessment(score: findings.reduce(0) { $0 + $1.points }, findings: findings, learning: false)
    }

    /// The action the rules give `score` at `tier` (tiers in their order): the strongest rule for that tier or a
    /// lower one whose score is reached.
    public func action(for score: Double, at tier: String, tierOrder: [String]) -> AnomalyAction {
        guard let position = tierOrder.firstIndex(of: tier) else { return .none }
        let applicable = self.rules.filter { rule in (tierOrder.firstIndex(of: rule.tier) ?? .max) <= position }
        // A rule for this very tier overrides the lower tiers' rules for the same action.
        let strongest = AnomalyAction.allCases.reversed().first { action in
            let candidates = applicable.filter { $0.action == action }
            guard let nearest = candidates.max(by: { tierOrder.firstIndex(of: $0.tier)! < tierOrder.firstIndex(of: $1.tier)! }) else { return false }
            return score >= Double(nearest.score)
        }
        return strongest ?? .none
    }

    private func hourFinding(_ time: Int64, state: AgentBehaviour, agent: String) -> AnomalyFinding {
        let hour = Self.hourOfWeek(time)
        // Half the week's profile, half the day's (a daily job is usual on its first Tuesday too), each smoothed over
        // the neighbouring hours.
        let week = 0.25 * state.hours[(hour + 167) % 168] + 0.5 * state.hours[hour] + 0.25 * state.hours[(hour + 1) % 168]
        let clock = hour % 24
        let day = 0.25 * state.hoursOfDay[(clock + 23) % 24] + 0.5 * state.hoursOfDay[clock] + 0.25 * state.hoursOfDay[(clock + 1) % 24]
        let share = 0.5 * (week + 0.02) / (state.weight + 168 * 0.02) + 0.5 / 7 * (day + 0.02) / (state.weight + 24 * 0.02)
        return .init(
            feature: "hour", points: Self.clamp(1.5 * (log2((1.0 / 168) / share) - 1)),
            reason: "\(Self.hourText(hour)) is an unusual hour for \(agent) (\(Self.one(100 * share))% of its payments fall near this hour of the week)")
    }

    private func novelty(of key: String, in frequencies: AgentBehaviour.Frequencies, total: Double, agent: String, noun: String) -> AnomalyFinding {
        let weight = frequencies.weight(of: key)
        if weight > 0.5 {
            return .init(
                feature: noun, points: 0, reason: "\(noun) \(key) is one \(agent) uses (\(Int((100 * weight / max(total, 1)).rounded()))% of its payments)")
        }
        // How often the agent tries something new, with one imagined novelty and one habit as a prior.
        let chance = (frequencies.novelty + 1) / (total + 2)
        let usual = frequencies.usual(3).joined(separator: ", ")
        return .init(
            feature: noun, points: Self.clamp(log2(1 / chance) - 1),
            reason: "\(noun) \(key) is new for \(agent) (usually \(usual); \(Int((100 * chance).rounded()))% of its payments go to new ones)")
    }

    private func decay(_ state: inout AgentBehaviour, to time: Int64) {
        let elapsed = Double(max(0, time - state.updatedAt))
        state.updatedAt = max(state.updatedAt, time)
        guard elapsed > 0, state.learned > 0 else { return }
        let factor = pow(0.5, elapsed / Double(self.halfLifeSeconds))
        state.weight *= factor
        state.merchants.decay(by: factor)
        state.categories.decay(by: factor)
        for index in state.hours.indices { state.hours[index] *= factor }
        for index in state.hoursOfDay.indices { state.hoursOfDay[index] *= factor }
        for code in state.usualPace.keys { state.usualPace[code]! *= factor }
    }

    static let paceHalfLife: Int64 = 6 * 3600
    static let crowdHalfLife: Int64 = 300
    static let streakHalfLife: Int64 = 3600

    /// A statistic in minor units as money, for a reason in words (never trapping on an extreme value).
    static func money(_ minorUnits: Double, _ currency: Currency) -> Money {
        Money(minorUnits: minorUnits.isFinite ? Int64(min(max(minorUnits, 0), 1e15).rounded()) : 0, currency: currency)
    }

    /// One decimal: `6.1`.
    static func one(_ value: Double) -> String { String(format: "%.1f", value) }

    static func clamp(_ points: Double) -> Double { min(10, max(0, points)) }

    static func hourOfWeek(_ time: Int64) -> Int {
        // 1970-01-01 was a Thursday: day 3 of a week starting Monday.
        let hours = time / 3600
        return Int(((hours + 3 * 24) % 168 + 168) % 168)
    }

    static func hourText(_ hour: Int) -> String {
        let days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
        return "\(days[hour / 24]) \(hour % 24 < 10 ? "0" : "")\(hour % 24):00 UTC"
    }

    static func durationText(_ seconds: Double) -> String {
        switch seconds {
        case ..<120: String(format: "%.0f s", seconds)
        case ..<7200: String(format: "%.0f minutes", seconds / 60)
        case ..<172_800: String(format: "%.1f hours", seconds / 3600)
        default: String(format: "%.1f days", seconds / 86_400)
        }
    }
}
