/// The period a budget counts spending over.
public enum BudgetWindow: Sendable, Hashable, CustomStringConvertible, Encodable {
    /// The last `seconds` seconds.
    case rolling(seconds: Int64)
    /// The current calendar day, ISO week (from Monday) or month, in UTC.
    case day
    case week
    case month

    /// The first second (since 1970) that counts at `now`.
    public func start(at now: Int64) -> Int64 {
        let day: Int64 = 86_400
        switch self {
        case .rolling(let seconds):
            return now - seconds + 1
        case .day:
            return Self.floor(now, day)
        case .week:
            // 1970-01-01 was a Thursday; Monday-based weeks start 3 days before each Thursday-aligned week.
            let days = Self.floor(now, day) / day
            let sinceMonday = ((days + 3) % 7 + 7) % 7
            return (days - sinceMonday) * day
        case .month:
            let (year, month, _) = Self.civilDate(fromDays: Self.floor(now, day) / day)
            return Self.days(year: year, month: month, day: 1) * day
        }
    }

    /// When the window that holds `now` ends and a new one starts from zero; `nil` for a rolling window,
    /// whose spending leaves it payment by payment.
    public func nextStart(after now: Int64) -> Int64? {
        let day: Int64 = 86_400
        switch self {
        case .rolling: return nil
        case .day: return self.start(at: now) + day
        case .week: return self.start(at: now) + 7 * day
        case .month:
            let (year, month, _) = Self.civilDate(fromDays: self.start(at: now) / day)
            return (month == 12 ? Self.days(year: year + 1, month: 1, day: 1) : Self.days(year: year, month: month + 1, day: 1)) * day
        }
    }

    /// A fixed name (what the policy version hashes, metric labels, JSON): unlike the description, it never
    /// changes with how people are shown a window.
    public var versionKey: String {
        switch self {
        case .rolling(let seconds): "rolling \(seconds) s"
        case .day: "day (UTC)"
        case .week: "week (UTC, from Monday)"
        case .month: "month (UTC)"
        }
    }

    public var description: String {
        switch self {
        case .rolling(let seconds): "rolling \(HumanText.duration(seconds: seconds))"
        case .day: "day (UTC)"
        case .week: "week (UTC, from Monday)"
        case .month: "month (UTC)"
        }
    }

    private static func floor(_ value: Int64, _ unit: Int64) -> Int64 {
        let quotient = value / unit
        return (value % unit < 0 ? quotient - 1 : quotient) * unit
    }

    /// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day number.
    static func civilDate(fromDays days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthPrime = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthPrime + 2) / 5 + 1
        let month = monthPrime < 10 ? monthPrime + 3 : monthPrime - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// Howard Hinnant's `days_from_civil`.
    static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

/// Who a budget limits. A spend counts at every level: the agent, its team and the team's organization.
public enum BudgetScope: Sendable, Hashable, CustomStringConvertible, Encodable {
    case agent(String)
    case team(String)
    case organization(String)

    /// The ledger's name for the scope: `agent:<id>`, `team:<name>` or `org:<name>`.
    public var key: String {
        switch self {
        case .agent(let id): "agent:\(id)"
        case .team(let name): "team:\(name)"
        case .organization(let name): "org:\(name)"
        }
    }

    public var description: String {
        switch self {
        case .agent(let id): "agent \(id)"
        case .team(let name): "team \(name)"
        case .organization(let name): "organization \(name)"
        }
    }
}

/// A spending limit for one scope over a window, per currency, in minor units.
public struct Budget: Sendable, Hashable, Encodable {
    public var scope: BudgetScope
    public var limits: [String: Int64]
    public var window: BudgetWindow

    public init(scope: BudgetScope, limits: [String: Int64], window: BudgetWindow) {
        self.scope = scope
        self.limits = limits
        self.window = window
    }

    public init(agent: String, limits: [String: Int64], window: BudgetWindow) {
        self.init(scope: .agent(agent), limits: limits, window: window)
    }
}

/// One check the store makes atomically with the hold it reserves: the scope's holds in `currency` since
/// `windowStart`, plus this amount, must not exceed `limit`.
public struct BudgetCheck: Sendable, Hashable {
    public var scope: BudgetScope
    public var windowStart: Int64
    public var limit: Int64
    public var window: BudgetWindow

    public init(scope: BudgetScope, windowStart: Int64, limit: Int64, window: BudgetWindow) {
        self.scope = scope
        self.windowStart = windowStart
        self.limit = limit
        self.window = window
    }
}

/// The budgets, as loaded from the configuration.
public struct BudgetTable: Sendable, Hashable, Encodable {
    public let budgets: [Budget]

    public init(_ budgets: [Budget]) {
        self.budgets = budgets
    }

    /// The checks a request in `currency` at `now` must pass at each of `scopes`. A currency a budget does not
    /// name is not limited by it.
    public func checks(scopes: [BudgetScope], currency: String, now: Int64) -> [BudgetCheck] {
        self.budgets.compactMap { budget in
            guard scopes.contains(budget.scope), let limit = budget.limits[currency] else { return nil }
            return BudgetCheck(scope: budget.scope, windowStart: budget.window.start(at: now), limit: limit, window: budget.window)
        }
    }

    public func budgets(of scope: BudgetScope) -> [Budget] {
        self.budgets.filter { $0.scope == scope }
    }

}
