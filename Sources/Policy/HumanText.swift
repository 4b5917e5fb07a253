/// Times and durations as people read them in messages, logs and the CLI (JSON keeps epoch seconds).
public enum HumanText {
    /// `2026-11-25T13:14:15Z` (RFC 3339, UTC).
    public static func time(_ secondsSince1970: Int64) -> String {
        let day: Int64 = 86_400
        let days = (secondsSince1970 >= 0 ? secondsSince1970 : secondsSince1970 - day + 1) / day
        let (year, month, dayOfMonth) = BudgetWindow.civilDate(fromDays: days)
        let second = secondsSince1970 - days * day
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(year)-\(two(month))-\(two(dayOfMonth))T\(two(second / 3600)):\(two(second % 3600 / 60)):\(two(second % 60))Z"
    }

    /// `30 days`, `1 day`, `2 h`, `15 min`, `90 s`: the largest unit that divides the duration exactly.
    public static func duration(seconds: Int64) -> String {
        for (unit, size) in [("days", Int64(86_400)), ("h", 3_600), ("min", 60)] where seconds >= size && seconds % size == 0 {
            let count = seconds / size
            return unit == "days" && count == 1 ? "1 day" : "\(count) \(unit)"
        }
        return "\(seconds) s"
    }
}
