import Foundation
import Policy

#if canImport(Glibc)
import Glibc
#endif

/// How the CLI writes for people: notes on standard error (standard output stays for the result a script
/// reads), money in major units with its currency, times in RFC 3339 UTC, durations in the largest whole unit.
/// JSON output (`--json`) keeps the protocol's minor units and epoch seconds.
enum Terminal {
    /// A line on standard error.
    static func note(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// `12.50 USD`; an unknown currency keeps its minor units and says so.
    static func money(_ minorUnits: Int64, _ code: String) -> String {
        guard let currency = Currency(code: code) else { return "\(minorUnits) \(code) (minor units)" }
        return "\(Money(minorUnits: minorUnits, currency: currency))"
    }

    /// `2026-11-25T13:14:15Z`.
    static func time(_ secondsSince1970: Int64) -> String {
        var seconds = time_t(secondsSince1970)
        var parts = tm()
        guard gmtime_r(&seconds, &parts) != nil else { return "\(secondsSince1970)" }
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday), Int(parts.tm_hour),
            Int(parts.tm_min), Int(parts.tm_sec)
        )
    }

    /// `30 days`, `2 h`, `90 s`: the largest unit that divides the duration exactly.
    static func duration(seconds: Int64) -> String {
        for (unit, size) in [("days", Int64(86_400)), ("h", 3_600), ("min", 60)] where seconds >= size && seconds % size == 0 {
            let count = seconds / size
            return unit == "days" && count == 1 ? "1 day" : "\(count) \(unit)"
        }
        return "\(seconds) s"
    }

    /// A line on standard output, flushed at once: C's stdio buffers a pipe by blocks, and a feed
    /// (`countersign audit tail | siem-forwarder`) that waits for 4 KiB before writing anything is no feed.
    static func emit(_ line: String) {
        print(line)
        fflush(nil)
    }
}
