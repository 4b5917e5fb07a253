/// Durations as people write them, in the configuration and on the command line: a whole number and a unit,
/// `ms`, `s`, `m`, `h` or `d` (`250ms`, `5s`, `2m`, `1h`, `30d`). The one parser of durations: nothing else reads
/// them, so a unit means the same everywhere.
public enum DurationText {
    /// For messages: "500ms, 5s, 2m, 1h or 30d".
    public static let examples = "500ms, 5s, 2m, 1h or 30d"

    /// The duration `text` names, or `nil` for anything else (a fraction, a sign, a space, another unit, an overflow).
    public static func parse(_ text: some StringProtocol) -> Duration? {
        let units: [(suffix: String, seconds: Int64?)] = [("ms", nil), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for unit in units where text.hasSuffix(unit.suffix) {
            let digits = text.dropLast(unit.suffix.count)
            guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber), let number = Int64(digits) else { return nil }
            guard let seconds = unit.seconds else { return .milliseconds(number) }
            let (product, overflow) = number.multipliedReportingOverflow(by: seconds)
            return overflow ? nil : .seconds(product)
        }
        return nil
    }
}
