import Foundation

/// Idempotency keys for payments that have no natural one (an order number is best when there is one).
///
/// Make a key once per payment and keep it with the payment before the first call: a call that failed may still have
/// been recorded, and only the same key asks for that payment again. Any key of 1–200 printable ASCII characters without spaces works;
/// keys that grow with time cost the server less: its index of keys takes each new one at its end instead of on a
/// random page of its own (docs/protocol.md, "Choosing keys").
public enum IdempotencyKeys {
    /// A new UUID version 7 (RFC 9562, 5.7), in lowercase: 48 bits of Unix time in milliseconds, then 74 random
    /// bits. Keys made later sort after keys made earlier (within a millisecond, in random order).
    public static func timeOrdered() -> String {
        var random = SystemRandomNumberGenerator()
        let milliseconds = UInt64(max(0, Date().timeIntervalSince1970 * 1_000))
        return self.uuidVersion7(milliseconds: milliseconds, using: &random)
    }

    /// A UUID version 7 of `milliseconds` since 1970, its random bits from `random` (two draws: `rand_a`, the low 12
    /// bits of the first, then `rand_b`, the low 62 bits of the second).
    public static func uuidVersion7(milliseconds: UInt64, using random: inout some RandomNumberGenerator) -> String {
        let randA = random.next() & 0x0FFF
        let randB = random.next() & 0x3FFF_FFFF_FFFF_FFFF
        let high = (milliseconds & 0xFFFF_FFFF_FFFF) << 16 | 0x7000 | randA
        let low = 0x8000_0000_0000_0000 | randB
        let hex = Self.hex(high, digits: 16) + Self.hex(low, digits: 16)
        let characters = Array(hex)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(characters[$0]) }.joined(separator: "-")
    }

    private static func hex(_ value: UInt64, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: digits - text.count) + text
    }
}
