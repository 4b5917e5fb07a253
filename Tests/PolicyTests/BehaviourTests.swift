import CountersignCore
import Foundation
import Policy
import PolicyLab
import Testing

/// The adaptive anomaly model: what it learns, what it scores and why, what the rules do with a score, and the
/// trace laboratory that measures it.
@Suite("The anomaly model: per-agent habits, scores with reasons, rules per tier")
struct BehaviourTests {
    static let usd = CascadeTests.usd
    static let monday: Int64 = 1_767_571_200  // 2026-01-05 00:00 UTC
    static let model = BehaviourModel(minimumHistory: 12, rules: [.init(tier: "micro", score: 8, action: .escalate)])

    /// An office agent: ~4.10 USD at a few merchants of category 5734, weekdays 09:00-17:00 UTC, a few times an hour.
    static func habits(days: Int = 28, seed: UInt64 = 7, amount: Double = 410) -> [ObservedPayment] {
        var random = SplitMix64(state: seed)
        var payments: [ObservedPayment] = []
        for day in 0..<days where day % 7 < 5 {
            for hour in 9..<17 {
                for _ in 0..<2 {
                    let time = Self.monday + Int64(day * 86_400 + hour * 3600) + Int64(random.next() % 3600)
                    let factor = 0.85 + Double(random.next() % 300) / 1000
                    payments.append(
                        ObservedPayment(
                            time: time, amount: Money(minorUnits: Int64(amount * factor), currency: Self.usd), merchant: "m-\(random.next() % 4)",
                            category: "5734"))
                }
            }
        }
        return payments.sorted { $0.time < $1.time }
    }

    static func learned(_ payments: [ObservedPayment], model: BehaviourModel = Self.model) -> AgentBehaviour {
        var state = AgentBehaviour()
        for payment in payments { model.learn(payment, into: &state) }
        return state
    }

    /// Wednesday of the fifth week, 11:30 UTC: inside the agent's hours.
    static let usualTime = Self.monday + 30 * 86_400 + 11 * 3600 + 1800

    @Test("a large amount scores with its reason in words; a usual one does not")
    func amount() {
        let state = Self.learned(Self.habits())
        let large = ObservedPayment(time: Self.usualTime, amount: Money(minorUnits: 4_800, currency: Self.usd), merchant: "m-1", category: "5734")
        let assessment = Self.model.assess(large, state: state, agent: "agent-3")
        #expect(assessment.score >= 8)
        let reason = try! #require(assessment.findings.first { $0.feature == "amount" }).reason
        #expect(reason.hasPrefix("amount 48.00 USD is "), "\(reason)")
        #expect(reason.contains("robust deviations above agent-3's usual 4."), "\(reason)")
        let usual = ObservedPayment(time: Self.usualTime, amount: Money(minorUnits: 420, currency: Self.usd), merchant: "m-1", category: "5734")
        #expect(Self.model.assess(usual, state: state, agent: "agent-3").score < 2)
    }

    @Test("a new category at a new merchant, at an hour the agent is never active, each scores and says why")
    func novelty() {
        let state = Self.learned(Self.habits())
        let casino = ObservedPayment(time: Self.usualTime, amount: Money(minorUnits: 420, currency: Self.usd), merchant: "m-casino", category: "7995")
        let findings = Self.model.assess(casino, state: state, agent: "agent-3").findings
        let category = try! #require(findings.first { $0.feature == "category" })
        #expect(category.points > 0 && category.reason.hasPrefix("category 7995 is new for agent-3 (usually 5734"), "\(category.reason)")
        #expect(try! #require(findings.first { $0.feature == "merchant" }).points > 0)
        // Sunday 03:00 UTC.
        let night = ObservedPayment(
            time: Self.monday + 34 * 86_400 + 3 * 3600, amount: Money(minorUnits: 420, currency: Self.usd), merchant: "m-1", category: "5734")
        let hour = try! #require(Self.model.assess(night, state: state, agent: "agent-3").findings.first { $0.feature == "hour" })
        #expect(hour.points > 3 && hour.reason.hasPrefix("Sunday 03:00 UTC is an unusual hour for agent-3"), "\(hour.reason)")
    }

    @Test("cold start: below the minimum history the model only learns, and says so")
    func coldStart() {
        let state = Self.learned(Array(Self.habits().prefix(11)))
        let large = ObservedPayment(time: Self.usualTime, amount: Money(minorUnits: 99_999, currency: Self.usd), merchant: "m-x", category: "7995")
        let assessment = Self.model.assess(large, state: state, agent: "agent-3")
        #expect(assessment.learning && assessment.score == 0)
        #expect(assessment.findings.first?.reason == "agent-3 has 11 of 12 payments the model needs")
    }

    @Test("old behaviour ages out: after weeks of legitimately larger payments, the larger amount is usual")
    func aging() {
        let before = Self.habits(days: 28)
        let after = Self.habits(days: 84, seed: 8, amount: 1_230).filter { $0.time >= Self.monday + 28 * 86_400 }
        let late = Self.monday + 84 * 86_400 + 2 * 86_400 + 11 * 3600
        let payment = ObservedPayment(time: late, amount: Money(minorUnits: 1_250, currency: Self.usd), merchant: "m-1", category: "5734")
        let early = Self.learned(before)
        #expect(
            Self.model.assess(ObservedPayment(time: Self.usualTime, amount: payment.amount, merchant: "m-1", category: "5734"), state: early, agent: "a").score
                >= 4)
        #expect(Self.model.assess(payment, state: Self.learned(before + after), agent: "a").score < 2)
    }

    @Test("the state is a function of the history: rebuilt from the same payments it is the same, and it round-trips through JSON")
    func deterministic() throws {
        let one = Self.learned(Self.habits())
        let two = Self.learned(Self.habits())
        #expect(one == two)
        let decoded = try JSONDecoder().decode(AgentBehaviour.self, from: try JSONEncoder().encode(one))
        #expect(decoded == one)
        #expect(Self.learned(Self.habits(seed: 9)) != one)
    }

    @Test("a burst is judged against the agent's own crowding: many requests within minutes score for an interactive agent")
    func burst() {
        var state = Self.learned(Self.habits())
        var scores: [Double] = []
        for second in stride(from: 0, to: 300, by: 20) {
            let payment = ObservedPayment(
                time: Self.usualTime + Int64(second), amount: Money(minorUnits: 420, currency: Self.usd), merchant: "m-1", category: "5734")
            scores.append(Self.model.assess(payment, state: state, agent: "a").score)
            Self.model.note(payment, into: &state)
        }
        #expect(scores[0] < 2)
        #expect(scores.last! >= 8, "\(scores)")
    }

    @Test("the rules: the strongest action whose score is reached, at the tier or inherited from a lower one")
    func rules() {
        let model = BehaviourModel(rules: [
            .init(tier: "micro", score: 8, action: .escalate), .init(tier: "micro", score: 14, action: .approval),
            .init(tier: "high", score: 20, action: .refuse),
            .init(tier: "high", score: 6, action: .escalate),
        ])
        let order = ["micro", "standard", "high", "critical"]
        #expect(model.action(for: 7, at: "micro", tierOrder: order) == .none)
        #expect(model.action(for: 8, at: "standard", tierOrder: order) == .escalate)
        #expect(model.action(for: 15, at: "standard", tierOrder: order) == .approval)
        #expect(model.action(for: 6.5, at: "high", tierOrder: order) == .escalate, "high's own escalate rule replaces micro's")
        #expect(model.action(for: 21, at: "critical", tierOrder: order) == .refuse)
    }

    @Test("in the engine: escalated one tier, sent to approvers, or refused with ANOMALY_REFUSED in words without the score")
    func engine() throws {
        let state = Self.learned(Self.habits())
        func decide(_ action: AnomalyAction) throws -> Decision {
            let engine = try PolicyEngine(
                tiers: CascadeTests.tiers, profiles: [], behaviour: BehaviourModel(minimumHistory: 12, rules: [.init(tier: "micro", score: 8, action: action)]))
            var facts = PolicyFacts(now: Self.usualTime)
            facts.behaviour = state
            // With line items: the tiers above check the intent (cascading), and approvers need it.
            let request = PolicyRequest(
                agent: "agent-3", amount: Money(minorUnits: 900, currency: Self.usd), merchant: "m-casino", merchantCategoryCode: "7995",
                lineItems: [.init(quantity: 1, unitAmount: 900, category: nil)])
            return engine.evaluate(request, facts: facts)
        }
        let escalated = try decide(.escalate)
        guard case .authorized(let tier) = escalated.outcome else { Issue.record("\(escalated.outcome)"); return }
        #expect(tier.name == "standard")
        let record = try #require(escalated.checks.first { $0.name == "behaviour" })
        #expect(record.result == .escalate && record.inputs.hasPrefix("score ") && record.inputs.contains("category 7995 is new for agent-3"))
        #expect(escalated.tierReason.contains("escalated to tier 'standard' by the anomaly model"))

        guard case .pendingApproval(let approving, _) = try decide(.approval).outcome else { Issue.record("not sent to approvers"); return }
        #expect(approving.name == "critical")

        guard case .denied(let code, let reason) = try decide(.refuse).outcome else { Issue.record("not refused"); return }
        #expect(code == .anomalyRefused)
        #expect(reason.hasPrefix("this payment is unlike agent-3's usual payments ("))
        #expect(
            !reason.contains("score") && reason.replacingOccurrences(of: "agent-3", with: "").rangeOfCharacter(from: .decimalDigits) == nil,
            "no score or threshold reaches the agent: \(reason)")
    }

    @Test("the trace generator is deterministic and labels every attack kind")
    func traces() {
        let generator = TraceGenerator(seed: 5, agents: 30, days: 40, attacksPerKind: 2, quietDays: 21)
        let events = generator.generate()
        #expect(events == generator.generate())
        #expect(events != TraceGenerator(seed: 6, agents: 30, days: 40, attacksPerKind: 2, quietDays: 21).generate())
        #expect(zip(events, events.dropFirst()).allSatisfy { $0.time <= $1.time })
        #expect(Set(events.map(\.label)) == Set(AttackKind.allCases.map(\.rawValue) + ["legit"]))
        #expect(events.filter { $0.isAttack }.allSatisfy { $0.time >= generator.start + 21 * 86_400 })
    }

    /// Runs CPU-bound work on a thread of its own and awaits its result.
    static func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: work()) }.start()
        }
    }

    @Test("evaluated through the engine, the model flags what the static rules alone miss (a new category), seldom legitimate requests")
    func evaluation() async throws {
        let staticOnly = try PolicyEngine(tiers: CascadeTests.tiers, profiles: [], escalation: CascadeTests.engine.escalation)
        let withModel = try PolicyEngine(
            tiers: CascadeTests.tiers, profiles: [], escalation: .none,
            behaviour: BehaviourModel(rules: [.init(tier: "micro", score: 8, action: .escalate), .init(tier: "micro", score: 14, action: .approval)]))
        // Seconds of CPU: on a thread of its own, never on the cooperative pool that the servers of the other tests in
        // this process run on (two threads on two cores: a test holding one for seconds starves their handshakes).
        let (before, after) = await Self.onOwnThread {
            let events = TraceGenerator(seed: 11, agents: 30, days: 42, attacksPerKind: 2, quietDays: 21).generate()
            return (TraceEvaluation(policy: staticOnly).run(events), TraceEvaluation(policy: withModel).run(events))
        }
        #expect(after.attacks[.newCategory]!.detected > before.attacks[.newCategory]!.detected)
        for kind in AttackKind.allCases { #expect(after.attacks[kind]!.detected >= 1, "\(kind)") }
        #expect(after.falseEscalationRate < 0.02, "\(after.falseEscalationRate)")
    }
}
