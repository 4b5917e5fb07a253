/// Hexadecimal digits read strictly: `0-9`, `a-f`, `A-F` and nothing else (no sign, no `0x`, no spaces), so
/// that one value has one spelling up to letter case.
public enum HexDigits {
    /// The value of one digit.
    public static func value(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Bytes as lowercase digits, two per byte: the one spelling this project writes.
    public static func string(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Pairs of digits as bytes; `nil` for an odd count or anything that is not a digit.
    public static func bytes(_ text: some StringProtocol) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = Self.value(digits[index]), let low = Self.value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    /// The four digits at `offset` (a `\uXXXX` escape's) as a UTF-16 code unit.
    static func unit(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt16? {
        guard bytes.count - offset >= 4 else { return nil }
        var value: UInt16 = 0
        for index in offset..<offset + 4 {
            guard let digit = Self.value(bytes[index]) else { return nil }
            value = value << 4 | UInt16(digit)
        }
        return value
    }
}

/// JSON's one-character escapes (RFC 8259 §7), shared by both readers.
enum JSONEscapes {
    /// The byte that `\` followed by `escape` stands for, or `nil` when `escape` is not one of `" \ / b f n r t`
    /// (a `u` escape is read separately).
    static func byte(for escape: UInt8) -> UInt8? {
        switch escape {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): escape
        case UInt8(ascii: "b"): 0x08
        case UInt8(ascii: "f"): 0x0C
        case UInt8(ascii: "n"): 0x0A
        case UInt8(ascii: "r"): 0x0D
        case UInt8(ascii: "t"): 0x09
        default: nil
        }
    }
}
