import Foundation

/// UTC days and hours during which a scheduled context is in force.
public struct Schedule: Sendable, Hashable, CustomStringConvertible, Encodable {
    /// 0 = Monday … 6 = Sunday; empty means every day.
    public var days: Set<Int>
    /// Minutes after midnight UTC: in force from `fromMinute` (inclusive) to `toMinute` (exclusive). A range
    /// that wraps past midnight (`22:00-06:00`) is allowed.
    public var fromMinute: Int
    public var toMinute: Int

    public init(days: Set<Int>, fromMinute: Int, toMinute: Int) {
        self.days = days
        self.fromMinute = fromMinute
        self.toMinute = toMinute
    }

    /// Whether the schedule covers `now` (seconds since 1970). For a range that wraps past midnight, the
    /// day is the one on which the range began.
    public func covers(_ now: Int64) -> Bool {
        let dayNumber = BudgetWindow.day.start(at: now) / 86_400
        let weekday = Int(((dayNumber + 3) % 7 + 7) % 7)
        let minute = Int((now - dayNumber * 86_400) / 60)
        if self.fromMinute <= self.toMinute {
            return (self.days.isEmpty || self.days.contains(weekday)) && minute >= self.fromMinute && minute < self.toMinute
        }
        if minute >= self.fromMinute { return self.days.isEmpty || self.days.contains(weekday) }
        if minute < self.toMinute { return self.days.isEmpty || self.days.contains((weekday + 6) % 7) }
        return false
    }

    public var description: String {
        let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        let days = self.days.isEmpty ? "every day" : self.days.sorted().map { names[$0] }.joined(separator: ",")
        let time: (Int) -> String = { String(format: "%02d:%02d", $0 / 60, $0 % 60) }
        return "\(days) \(time(self.fromMinute))-\(time(self.toMinute)) UTC"
    }
}

/// A named context that raises or lowers limits for named agents while it is in force: a mode that admins
/// switch on and off (e.g. `incident`), or a schedule. Agents can never set one.
public struct PolicyContext: Sendable, Hashable, Encodable {
    public enum Activation: Sendable, Hashable, Encodable {
        /// In force while an admin has it switched on.
        case mode
        case schedule(Schedule)
    }

    public var name: String
    public var activation: Activation
    /// The agents it applies to, by id or by profile name.
    public var agents: Set<String>
    public var profiles: Set<String>
    /// Replaces the profile's highest tier while in force.
    public var highestTier: String?
    /// Replaces the profile's per-authorization maximum for the currencies it names while in force.
    public var maximumPerAuthorization: [String: Int64]

    public init(
        name: String, activation: Activation, agents: Set<String> = [], profiles: Set<String> = [], highestTier: String? = nil,
        maximumPerAuthorization: [String: Int64] = [:]
    ) {
        self.name = name
        self.activation = activation
        self.agents = agents
        self.profiles = profiles
        self.highestTier = highestTier
        self.maximumPerAuthorization = maximumPerAuthorization
    }

    public var isMode: Bool { self.activation == .mode }

    func isInForce(now: Int64, modes: Set<String>) -> Bool {
        switch self.activation {
        case .mode: modes.contains(self.name)
        case .schedule(let schedule): schedule.covers(now)
        }
    }

    func applies(to agent: String, profile: AgentProfile?) -> Bool {
        self.agents.contains(agent) || (profile.map { self.profiles.contains($0.name) } ?? false)
    }

}
