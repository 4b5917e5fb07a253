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
        Money.text(minorUnits: minorUnits, code: code)
    }

    /// `2026-11-25T13:14:15Z`.
    static func time(_ secondsSince1970: Int64) -> String {
        HumanText.time(secondsSince1970)
    }

    /// `30 days`, `2 h`, `90 s`.
    static func duration(seconds: Int64) -> String {
        HumanText.duration(seconds: seconds)
    }

    /// `20.00 USD, 3000 JPY`: a per-currency map, sorted by currency.
    static func amounts(_ amounts: [String: Int64]) -> String {
        Money.text(amounts)
    }

    /// A line on standard output, flushed at once: C's stdio buffers a pipe by blocks, and a feed
    /// (`countersign audit tail | siem-forwarder`) that waits for 4 KiB before writing anything is no feed.
    static func emit(_ line: String) {
        print(line)
        fflush(nil)
    }
}
