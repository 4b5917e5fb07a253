import Foundation
import Policy

/// One payment request of a trace, labelled: `legit`, or the attack it belongs to.
public struct TraceEvent: Codable, Sendable, Hashable {
    public var time: Int64
    public var agent: String
    /// Integer minor units.
    public var amount: Int64
    public var currency: String
    public var merchant: String
    public var mcc: String
    /// `legit`, or an ``AttackKind`` raw value.
    public var label: String
    /// Which attack episode it belongs to (one per attacked agent), absent for legitimate payments.
    public var episode: Int?
    /// A legitimate payment the agent voided after its authorization (never learned from).
    public var voided: Bool?

    public var isAttack: Bool { self.label != "legit" }
}

/// The compromises a trace contains.
public enum AttackKind: String, Codable, Sendable, CaseIterable {
    /// The features whose flag counts as detecting this kind of attack.
    public var evidence: Set<String> {
        switch self {
        case .suddenLarge: ["amount", "pace"]
        case .newCategory: ["category", "merchant", "streak"]
        case .burst: ["burst", "rate", "pace", "repeat", "streak"]
        case .offHours: ["hour", "streak"]
        case .slowDrift: ["amount", "drift", "pace"]
        case .splitPayments: ["repeat", "merchant", "burst", "rate", "streak", "pace"]
        case .stolenMimic: ["merchant", "category", "hour", "rate", "pace", "streak", "burst", "repeat"]
        }
    }

    /// A few payments far above the agent's usual amount.
    case suddenLarge = "sudden_large"
    /// Payments in a category the agent never buys in (gambling, money transfer, crypto), to a new merchant.
    case newCategory = "new_category"
    /// Many payments within minutes, at usual amounts to usual merchants.
    case burst
    /// Usual payments at hours the agent is never active.
    case offHours = "off_hours"
    /// The agent's own payments, inflated a little more each day for two weeks.
    case slowDrift = "slow_drift"
    /// Several payments to one new merchant within minutes, each just under a tier's bound.
    case splitPayments = "split_payments"
    /// A stolen credential used for a day: usual-looking amounts, new merchants, its own hours and pace.
    case stolenMimic = "stolen_mimic"
}

/// A deterministic generator of agent fleets: realistic legitimate behaviour (daily and weekly rhythms, merchant
/// habits, gradual growth, a seasonal spike, voids, the odd new merchant or large purchase) and labelled attacks.
/// The same settings give the same trace, byte for byte.
public struct TraceGenerator: Sendable {
    public var seed: UInt64
    public var agents: Int
    public var days: Int
    /// Attacked agents per attack kind (each attacked agent suffers one attack).
    public var attacksPerKind: Int
    /// The first day attacks may start (the model has learned the fleet by then).
    public var quietDays: Int
    /// Monday 2026-01-05 00:00 UTC.
    public var start: Int64 = 1_767_571_200

    public init(seed: UInt64 = 1, agents: Int = 120, days: Int = 56, attacksPerKind: Int = 8, quietDays: Int = 21) {
        self.seed = seed
        self.agents = agents
        self.days = days
        self.attacksPerKind = attacksPerKind
        self.quietDays = quietDays
    }

    enum Rhythm { case office(timezone: Int), alwaysOn, batch(hour: Int) }

    struct Habit {
        var name: String
        var rhythm: Rhythm
        /// Payments per active day.
        var daily: Double
        var currency: String
        /// ln of the median amount in minor units, and the spread.
        var logMedian: Double
        var spread: Double
        /// Monthly growth of amounts and volume.
        var growth: Double
        var merchants: [(id: String, mcc: String)]
        var categories: [String]

        var keepsOfficeHours: Bool {
            if case .office = self.rhythm { return true }
            return false
        }
    }

    static let categories = ["5411", "5734", "5045", "4816", "7372", "5942", "4111", "5812", "7011", "4511", "5968", "7399"]
    static let riskyCategories = ["7995", "4829", "6051"]

    /// The whole trace, sorted by time.
    public func generate() -> [TraceEvent] {
        var random = SplitMix64(state: self.seed)
        let habits = (0..<self.agents).map { self.habit(index: $0, random: &random) }
        var events: [TraceEvent] = []
        for habit in habits { events += self.legitimate(habit, random: &random) }

        // Attacks: each kind on its own agents (off-hours ones on agents with office hours).
        var victims = Array(habits.indices).shuffled(using: &random)
        var episode = 0
        for kind in AttackKind.allCases {
            for _ in 0..<self.attacksPerKind {
                guard let position = victims.firstIndex(where: { kind != .offHours || habits[$0].keepsOfficeHours }) else { break }
                let victim = habits[victims.remove(at: position)]
                let day = self.quietDays + Int(random.next() % UInt64(max(1, self.days - self.quietDays - 15)))
                episode += 1
                events = self.attack(kind, on: victim, day: day, episode: episode, events: events, random: &random)
            }
        }
        return events.sorted { ($0.time, $0.agent, $0.amount) < ($1.time, $1.agent, $1.amount) }
    }

    func habit(index: Int, random: inout SplitMix64) -> Habit {
        let rhythm: Rhythm
        switch random.next() % 10 {
        case 0..<6: rhythm = .office(timezone: [-8, -5, 0, 1, 8, 9][Int(random.next() % 6)])
        case 6..<9: rhythm = .alwaysOn
        default: rhythm = .batch(hour: Int(random.next() % 24))
        }
        let categories = Array(Self.categories.shuffled(using: &random).prefix(1 + Int(random.next() % 3)))
        let merchantCount = 3 + Int(random.next() % 8)
        let merchants = (0..<merchantCount).map { ("m-\(index)-\($0)", categories[$0 % categories.count]) }
        return Habit(
            name: "agent-\(index)", rhythm: rhythm, daily: 3 + random.unit * 40, currency: random.next() % 5 == 0 ? "EUR" : "USD",
            logMedian: log(200) + random.unit * (log(30_000) - log(200)), spread: 0.3 + random.unit * 0.4, growth: random.unit * 0.12,
            merchants: merchants, categories: categories)
    }

    /// Payments per hour at `hour` (hours since `start`).
    func intensity(_ habit: Habit, hour: Int, day: Int) -> Double {
        let growth = pow(1 + habit.growth, Double(day) / 30)
        let season = self.isSpike(day: day) ? 2.5 : 1
        switch habit.rhythm {
        case .office(let timezone):
            let local = hour + timezone
            let weekday = ((local / 24) % 7 + 7) % 7 < 5
            let clock = ((local % 24) + 24) % 24
            guard weekday, (8..<18).contains(clock) else { return habit.daily * growth * season * 0.002 }
            return habit.daily / 10 * growth * season
        case .alwaysOn:
            let clock = Double(hour % 24)
            return habit.daily / 24 * (1 + 0.3 * sin(clock / 24 * 2 * .pi)) * growth * season
        case .batch:
            return 0  // batches are drawn separately
        }
    }

    func isSpike(day: Int) -> Bool { (35..<42).contains(day) }

    func legitimate(_ habit: Habit, random: inout SplitMix64) -> [TraceEvent] {
        var events: [TraceEvent] = []
        var novel = 0
        for day in 0..<self.days {
            var times: [Int64] = []
            if case .batch(let hour) = habit.rhythm {
                let base = self.start + Int64(day * 86_400 + hour * 3600) + Int64(random.next() % 600)
                let count = Int((habit.daily * pow(1 + habit.growth, Double(day) / 30) * (self.isSpike(day: day) ? 2.5 : 1)).rounded())
                var time = base
                for _ in 0..<max(1, count) {
                    times.append(time)
                    time += 5 + Int64(random.next() % 40)
                }
            } else {
                for hour in (day * 24)..<(day * 24 + 24) {
                    for _ in 0..<random.poisson(self.intensity(habit, hour: hour, day: day)) {
                        times.append(self.start + Int64(hour) * 3600 + Int64(random.next() % 3600))
                    }
                }
            }
            for time in times {
                var merchant = habit.merchants[random.zipf(habit.merchants.count)]
                if random.unit < 0.015 {
                    novel += 1
                    let category =
                        random.unit < 0.8
                        ? habit.categories[Int(random.next() % UInt64(habit.categories.count))] : Self.categories.randomElement(using: &random)!
                    merchant = ("\(habit.name)-new-\(novel)", category)
                }
                var amount = self.usualAmount(habit, day: day, random: &random)
                if random.unit < 0.005 { amount *= 4 }
                events.append(
                    TraceEvent(
                        time: time, agent: habit.name, amount: amount, currency: habit.currency, merchant: merchant.id, mcc: merchant.mcc, label: "legit",
                        voided: random.unit < 0.02 ? true : nil))
            }
        }
        return events
    }

    func usualAmount(_ habit: Habit, day: Int, random: inout SplitMix64) -> Int64 {
        let growth = Double(day) / 30 * log(1 + habit.growth) + (self.isSpike(day: day) ? log(1.3) : 0)
        return max(1, Int64(exp(habit.logMedian + growth + habit.spread * random.normal()).rounded()))
    }

    func attack(_ kind: AttackKind, on habit: Habit, day: Int, episode: Int, events: [TraceEvent], random: inout SplitMix64) -> [TraceEvent] {
        var events = events
        let dayStart = self.start + Int64(day * 86_400)
        func add(_ time: Int64, _ amount: Int64, _ merchant: (id: String, mcc: String)) {
            events.append(
                TraceEvent(
                    time: time, agent: habit.name, amount: max(1, amount), currency: habit.currency, merchant: merchant.id, mcc: merchant.mcc,
                    label: kind.rawValue, episode: episode))
        }
        let usual = { (random: inout SplitMix64) in self.usualAmount(habit, day: day, random: &random) }
        let habitual = { (random: inout SplitMix64) in habit.merchants[random.zipf(habit.merchants.count)] }
        let at = dayStart + Int64(random.next() % 86_400)
        switch kind {
        case .suddenLarge:
            for step in 0..<2 { add(at + Int64(step * 3600), Int64(Double(usual(&random)) * (15 + random.unit * 45)), habitual(&random)) }
        case .newCategory:
            let merchant = ("x-\(episode)", Self.riskyCategories[Int(random.next() % 3)])
            for step in 0..<3 { add(at + Int64(step * 2400), Int64(Double(usual(&random)) * (1 + random.unit)), merchant) }
        case .burst:
            var time = at
            for _ in 0..<25 {
                add(time, usual(&random), habitual(&random))
                time += 5 + Int64(random.next() % 35)
            }
        case .offHours:
            guard case .office(let timezone) = habit.rhythm else { return events }
            // The first Sunday from `day`, 02:00-04:00 local.
            let weekday = (day % 7 + 7) % 7
            let sunday = dayStart + Int64((6 - weekday + 7) % 7) * 86_400
            let local = sunday + Int64((2 - timezone) * 3600)
            for _ in 0..<4 { add(local + Int64(random.next() % 7200), usual(&random), habitual(&random)) }
        case .slowDrift:
            // From `day` on for two weeks, every payment of the agent is the attacker's, 12 % larger each day.
            let from = dayStart
            let until = dayStart + 14 * 86_400
            events = events.map { event in
                guard event.agent == habit.name, event.time >= from, event.time < until, !event.isAttack else { return event }
                var drifted = event
                drifted.amount = Int64(Double(event.amount) * pow(1.12, Double(event.time - from) / 86_400))
                drifted.label = kind.rawValue
                drifted.episode = episode
                drifted.voided = nil
                return drifted
            }
        case .splitPayments:
            let merchant = ("x-\(episode)", habit.categories[0])
            var time = at
            for _ in 0..<6 {
                add(time, 1_900 + Int64(random.next() % 99), merchant)
                time += 60 + Int64(random.next() % 240)
            }
        case .stolenMimic:
            let merchants = [("x-\(episode)-a", habit.categories[0]), ("x-\(episode)-b", Self.categories.randomElement(using: &random)!)]
            let count = max(6, Int(habit.daily * 3))
            for _ in 0..<count { add(at + Int64(random.next() % 86_400), usual(&random), merchants[Int(random.next() % 2)]) }
        }
        return events
    }
}

extension SplitMix64 {
    /// Uniform in [0, 1).
    var unit: Double {
        mutating get { Double(self.next() >> 11) / Double(1 << 53) }
    }

    /// Standard normal (Box-Muller).
    mutating func normal() -> Double {
        let u = max(self.unit, 1e-12)
        return (-2 * log(u)).squareRoot() * cos(2 * .pi * self.unit)
    }

    /// A Poisson count with mean `mean` (Knuth's method; the means here are small).
    mutating func poisson(_ mean: Double) -> Int {
        guard mean > 0 else { return 0 }
        let limit = exp(-mean)
        var product = self.unit
        var count = 0
        while product > limit {
            count += 1
            product *= self.unit
        }
        return count
    }

    /// An index in 0..<count, Zipf-weighted (index 0 most often).
    mutating func zipf(_ count: Int) -> Int {
        let total = (1...count).reduce(0.0) { $0 + 1 / Double($1) }
        var pick = self.unit * total
        for index in 0..<count {
            pick -= 1 / Double(index + 1)
            if pick <= 0 { return index }
        }
        return count - 1
    }
}
