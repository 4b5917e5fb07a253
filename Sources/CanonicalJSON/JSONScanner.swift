/// A body that can be read without Foundation's decoder when it has the plain shape its writer gives it.
///
/// `scan` answers `nil` for anything it does not fully understand (an unknown or repeated key, a number
/// that is not a plain integer, invalid UTF-8, a missing field, …); the caller then decodes with
/// ``StrictJSONDecoder``, whose errors are the protocol's. So the fast path can only ever accept what
/// the strict decoder accepts, and must decode it to the same value (tests compare the two on mutated input).
public protocol JSONScannable: Decodable {
    static func scan(_ scanner: inout JSONScanner) -> Self?
}

extension JSONScannable {
    /// The value, if `bytes` are exactly one such object (surrounding whitespace allowed).
    public static func scan(bytes: UnsafeRawBufferPointer) -> Self? {
        var scanner = JSONScanner(bytes)
        guard let value = Self.scan(&scanner), scanner.atEnd() else { return nil }
        return value
    }
}

/// A strict pull reader over JSON bytes, for the fast path of ``JSONScannable``.
public struct JSONScanner {
    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    public init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    private mutating func skipWhitespace() {
        while self.position < self.bytes.count {
            switch self.bytes[self.position] {
            case 0x20, 0x09, 0x0A, 0x0D: self.position += 1
            default: return
            }
        }
    }

    private mutating func consume(_ byte: UInt8) -> Bool {
        self.skipWhitespace()
        guard self.position < self.bytes.count, self.bytes[self.position] == byte else { return false }
        self.position += 1
        return true
    }

    /// Only whitespace is left.
    public mutating func atEnd() -> Bool {
        self.skipWhitespace()
        return self.position == self.bytes.count
    }

    /// Reads an object: `field` is called with each key and must read its value, answering false to give up.
    /// Fails on a repeated key (decoders disagree on which one wins).
    public mutating func object(_ field: (inout JSONScanner, String) -> Bool) -> Bool {
        guard self.consume(UInt8(ascii: "{")) else { return false }
        if self.consume(UInt8(ascii: "}")) { return true }
        var seen: [String] = []
        repeat {
            self.skipWhitespace()
            guard let key = self.string(), !seen.contains(key), self.consume(UInt8(ascii: ":")) else { return false }
            seen.append(key)
            guard field(&self, key) else { return false }
        } while self.consume(UInt8(ascii: ","))
        return self.consume(UInt8(ascii: "}"))
    }

    /// Reads an array, calling `element` for each element.
    public mutating func array(_ element: (inout JSONScanner) -> Bool) -> Bool {
        guard self.consume(UInt8(ascii: "[")) else { return false }
        if self.consume(UInt8(ascii: "]")) { return true }
        repeat {
            guard element(&self) else { return false }
        } while self.consume(UInt8(ascii: ","))
        return self.consume(UInt8(ascii: "]"))
    }

    /// Reads `null`, answering whether it was there (nothing is consumed otherwise).
    public mutating func null() -> Bool {
        self.skipWhitespace()
        guard self.bytes.count - self.position >= 4, self.bytes[self.position] == UInt8(ascii: "n"), self.bytes[self.position + 1] == UInt8(ascii: "u"),
            self.bytes[self.position + 2] == UInt8(ascii: "l"), self.bytes[self.position + 3] == UInt8(ascii: "l")
        else { return false }
        self.position += 4
        return true
    }

    /// Reads a plain integer: an optional minus and digits without a leading zero; no fraction, no exponent.
    public mutating func integer() -> Int64? {
        self.skipWhitespace()
        let negative = self.position < self.bytes.count && self.bytes[self.position] == UInt8(ascii: "-")
        if negative { self.position += 1 }
        let start = self.position
        var magnitude: UInt64 = 0
        while self.position < self.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.bytes[self.position]) {
            let (times10, overflow1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(self.bytes[self.position] - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            magnitude = sum
            self.position += 1
        }
        let digits = self.position - start
        guard digits > 0, !(digits > 1 && self.bytes[start] == UInt8(ascii: "0")) else { return nil }
        if self.position < self.bytes.count {
            switch self.bytes[self.position] {
            case UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"): return nil
            default: break
            }
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? .min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { return nil }
        return Int64(magnitude)
    }

    /// Reads a string; `nil` for invalid UTF-8, a raw control character or an escape it cannot decode.
    public mutating func string() -> String? {
        guard self.consume(UInt8(ascii: "\"")) else { return nil }
        let start = self.position
        var ascii = true
        // The common case: no escapes, straight to a String (ASCII needs no validation).
        while self.position < self.bytes.count {
            let byte = self.bytes[self.position]
            if byte == UInt8(ascii: "\"") {
                let raw = UnsafeRawBufferPointer(rebasing: self.bytes[start..<self.position])
                self.position += 1
                return ascii ? String(decoding: raw, as: UTF8.self) : Self.acceptable(String(validating: raw, as: UTF8.self))
            }
            ascii = ascii && byte < 0x80
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { return nil }
            self.position += 1
        }
        var utf8 = Array(self.bytes[start..<self.position])
        while self.position < self.bytes.count {
            let byte = self.bytes[self.position]
            self.position += 1
            switch byte {
            case UInt8(ascii: "\""):
                // NUL can only arrive escaped here (raw control characters are refused above).
                return utf8.contains(0) ? nil : Self.acceptable(String(validating: utf8, as: UTF8.self))
            case UInt8(ascii: "\\"):
                guard self.position < self.bytes.count else { return nil }
                let escape = self.bytes[self.position]
                self.position += 1
                if let byte = JSONEscapes.byte(for: escape) {
                    utf8.append(byte)
                    continue
                }
                switch escape {
                case UInt8(ascii: "u"):
                    guard let unit = self.hex4() else { return nil }
                    var scalar: Unicode.Scalar?
                    if (0xD800...0xDBFF).contains(unit) {
                        // A high surrogate must be followed by an escaped low one.
                        guard self.bytes.count - self.position >= 2, self.bytes[self.position] == UInt8(ascii: "\\"),
                            self.bytes[self.position + 1] == UInt8(ascii: "u")
                        else { return nil }
                        self.position += 2
                        guard let low = self.hex4(), (0xDC00...0xDFFF).contains(low) else { return nil }
                        scalar = Unicode.Scalar(0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00))
                    } else {
                        scalar = Unicode.Scalar(unit)
                    }
                    guard let scalar else { return nil }
                    utf8.append(contentsOf: String(Character(scalar)).utf8)
                default:
                    return nil
                }
            default:
                if byte < 0x20 { return nil }
                utf8.append(byte)
            }
        }
        return nil
    }

    /// What ``StrictJSONParser`` refuses in a valid string, the scanner leaves to it.
    private static func acceptable(_ text: String?) -> String? {
        guard let text, !text.unicodeScalars.contains(where: \.isNoncharacter) else { return nil }
        return text
    }

    private mutating func hex4() -> UInt16? {
        guard let unit = HexDigits.unit(self.bytes, at: self.position) else { return nil }
        self.position += 4
        return unit
    }

    // MARK: Fields

    /// Reads a required string into `slot`.
    public mutating func read(_ slot: inout String?) -> Bool {
        guard let value = self.string() else { return false }
        slot = value
        return true
    }

    /// Reads a required integer into `slot`.
    public mutating func read(_ slot: inout Int64?) -> Bool {
        guard let value = self.integer() else { return false }
        slot = value
        return true
    }

    /// Reads an optional string: `null` leaves it `nil`.
    public mutating func readOptional(_ slot: inout String?) -> Bool {
        self.null() || self.read(&slot)
    }

    /// Reads an array of strings, or `null`.
    public mutating func readOptional(_ slot: inout [String]?) -> Bool {
        if self.null() { return true }
        var values: [String] = []
        guard
            self.array({ scanner in
                guard let value = scanner.string() else { return false }
                values.append(value)
                return true
            })
        else { return false }
        slot = values
        return true
    }

    /// Reads a nested scannable value, or `null` when `optional`.
    public mutating func read<Value: JSONScannable>(_ slot: inout Value?, optional: Bool = false) -> Bool {
        if optional, self.null() { return true }
        guard let value = Value.scan(&self) else { return false }
        slot = value
        return true
    }

    /// Reads an array of scannable values, or `null`.
    public mutating func readOptional<Element: JSONScannable>(_ slot: inout [Element]?) -> Bool {
        if self.null() { return true }
        var values: [Element] = []
        guard
            self.array({ scanner in
                guard let value = Element.scan(&scanner) else { return false }
                values.append(value)
                return true
            })
        else { return false }
        slot = values
        return true
    }
}
