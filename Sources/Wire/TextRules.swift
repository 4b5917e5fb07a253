/// What the characters of a string field may be, beyond the JSON rules every string already meets
/// (valid UTF-8, no U+0000: see ``WireJSON``).
///
/// An identifier is compared, stored, logged and shown to people: a control character in it could end a C
/// string early, forge a log line or read differently in a terminal, so identifiers refuse every control
/// and format character. Free text (descriptions) may hold tabs and line breaks, but no other control
/// character, and no bidirectional override or isolate, which could make an approver read text in another
/// order than the one that is signed.
public enum TextRules {
    /// 1 to `maximumBytes` UTF-8 bytes without control (Cc), format (Cf) or line and paragraph separator
    /// characters.
    /// - Throws: ``WireError`` `INVALID_REQUEST` naming `field`.
    public static func identifier(_ value: String, field: String, maximumBytes: Int) throws(WireError) {
        guard (1...maximumBytes).contains(value.utf8.count) else {
            throw WireError(.invalidRequest, "field '\(field)' must be 1 to \(maximumBytes) bytes")
        }
        if let bad = value.unicodeScalars.first(where: Self.isNotInIdentifiers) {
            throw WireError(.invalidRequest, "field '\(field)' holds \(Self.name(bad)); identifiers take no control or format characters")
        }
    }

    /// 1 to `maximumBytes` UTF-8 bytes; tab and line feed are the only control characters, and there is no
    /// bidirectional embedding, override or isolate.
    /// - Throws: ``WireError`` `INVALID_REQUEST` naming `field`.
    public static func text(_ value: String, field: String, maximumBytes: Int) throws(WireError) {
        guard (1...maximumBytes).contains(value.utf8.count) else {
            throw WireError(.invalidRequest, "field '\(field)' must be 1 to \(maximumBytes) bytes")
        }
        if let bad = value.unicodeScalars.first(where: Self.isNotInText) {
            throw WireError(.invalidRequest, "field '\(field)' holds \(Self.name(bad)), which text fields do not take")
        }
    }

    static func isNotInIdentifiers(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator: true
        default: false
        }
    }

    static func isNotInText(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0A: false
        case 0x202A...0x202E, 0x2066...0x2069: true
        default: scalar.properties.generalCategory == .control
        }
    }

    /// `U+000A`, the way Unicode names code points.
    static func name(_ scalar: Unicode.Scalar) -> String {
        let digits = String(scalar.value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
