// `make fuzz` compiles this module's files with CountersignCore's into one program, where there is no module to import.
#if canImport(CountersignCore)
import CountersignCore
#endif

/// One JSON value read strictly (RFC 8259 with the I-JSON restrictions of RFC 7493).
///
/// Numbers keep their text: a field decides what a number means (every number in this protocol is an
/// integer, read from its digits), so no number ever passes through a binary floating-point value.
public indirect enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    /// The number exactly as written (RFC 8259 grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in the order they were written; names are unique (a repeated name is refused).
    case object([JSONMember])
}

/// A member of an object, numbered in document order so a decoder can tell which members it never read.
public struct JSONMember: Sendable, Hashable {
    public var name: String
    public var value: JSONValue
    /// The member's position among all members of the document, counted from 0.
    public var ordinal: Int
}

/// Why a body was refused: `malformed` (`MALFORMED_JSON`) when the bytes are not I-JSON at all, `invalid`
/// (`INVALID_REQUEST`) when they are, but not what the reader accepts (a repeated member, a member it does not
/// know, a value of the wrong shape).
public struct StrictJSONError: CountersignError, Hashable {
    public enum Kind: Sendable, Hashable {
        case malformed
        case invalid
    }

    public var kind: Kind
    /// A sentence for people, naming the field where there is one.
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var code: ErrorCode { self.kind == .malformed ? .malformedJSON : .invalidRequest }
    public var reason: String { self.message }
    public var description: String { self.message }
}

/// A strict JSON reader. Everything a lenient parser would have to guess at is refused:
/// - bytes that are not UTF-8 (overlong forms, encoded surrogates, past U+10FFFF), a byte order mark,
///   escaped lone surrogates, and Unicode noncharacters (RFC 7493 §2.1);
/// - a member name repeated in one object, however it is escaped (RFC 7493 §2.3): parsers disagree on
///   which of the two wins, so an agent's tooling and the server could read different payments;
/// - anything RFC 8259 does not allow (comments, trailing commas, `NaN`, leading zeros, raw control
///   characters in strings, text after the value), and nesting deeper than ``maximumDepth``.
public struct StrictJSONParser {
    /// Deeper than any body of this protocol (they nest four levels) and far from the stack's limit.
    public static let maximumDepth = 32

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    private var members = 0
    private var path: [JSONPathComponent] = []
    /// The first repeated member. Reported once the whole body has been read, so that bytes which are not
    /// JSON at all are called malformed whatever else they hold.
    private var repeated: StrictJSONError?

    private init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    /// Reads exactly one value, with only whitespace around it.
    /// - Returns: the value and the number of object members it holds.
    /// - Throws: ``StrictJSONError``.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(StrictJSONError) -> (value: JSONValue, memberCount: Int) {
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF {
            throw StrictJSONError(.malformed, "the body starts with a byte order mark (U+FEFF); send UTF-8 without one")
        }
        var parser = StrictJSONParser(bytes)
        parser.skipWhitespace()
        let value = try parser.value(depth: 1)
        parser.skipWhitespace()
        guard parser.position == bytes.count else {
            throw parser.malformed("there is more after the JSON value")
        }
        if let repeated = parser.repeated { throw repeated }
        return (value, parser.members)
    }

    private func malformed(_ what: String) -> StrictJSONError {
        StrictJSONError(.malformed, "the body is not valid JSON: \(what) (at byte \(self.position))")
    }

    private var current: UInt8? { self.position < self.bytes.count ? self.bytes[self.position] : nil }

    private mutating func skipWhitespace() {
        while let byte = self.current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D {
            self.position += 1
        }
    }

    private mutating func value(depth: Int) throws(StrictJSONError) -> JSONValue {
        guard let byte = self.current else { throw self.malformed("it ends where a value should be") }
        switch byte {
        case UInt8(ascii: "{"):
            return try self.object(depth: depth)
        case UInt8(ascii: "["):
            return try self.array(depth: depth)
        case UInt8(ascii: "\""):
            return .string(try self.string())
        case UInt8(ascii: "t"):
            try self.literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try self.literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try self.literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return .number(try self.number())
        default:
            throw self.malformed("unexpected character \(Self.show(byte))")
        }
    }

    private mutating func enter(_ depth: Int) throws(StrictJSONError) {
        guard depth <= Self.maximumDepth else {
            throw StrictJSONError(.invalid, "the body nests deeper than \(Self.maximumDepth) levels")
        }
        self.position += 1
        self.skipWhitespace()
    }

    private mutating func object(depth: Int) throws(StrictJSONError) -> JSONValue {
        try self.enter(depth)
        var members: [JSONMember] = []
        if self.current == UInt8(ascii: "}") {
            self.position += 1
            return .object(members)
        }
        var names = Set<String>()
        while true {
            guard self.current == UInt8(ascii: "\"") else { throw self.malformed("a member name must be a string") }
            let name = try self.string()
            if !names.insert(name).inserted, self.repeated == nil {
                let field = JSONPath.render(self.path + [.member(name)])
                self.repeated = StrictJSONError(
                    .invalid, "member '\(field)' appears more than once; send each member once (parsers disagree on which copy wins)"
                )
            }
            self.skipWhitespace()
            guard self.current == UInt8(ascii: ":") else { throw self.malformed("a member name must be followed by ':'") }
            self.position += 1
            self.skipWhitespace()
            // Numbered before its value, so that a member comes before the members inside it.
            let ordinal = self.members
            self.members += 1
            self.path.append(.member(name))
            let value = try self.value(depth: depth + 1)
            self.path.removeLast()
            members.append(JSONMember(name: name, value: value, ordinal: ordinal))
            self.skipWhitespace()
            switch self.current {
            case UInt8(ascii: ","):
                self.position += 1
                self.skipWhitespace()
            case UInt8(ascii: "}"):
                self.position += 1
                return .object(members)
            default:
                throw self.malformed("expected ',' or '}' in an object")
            }
        }
    }

    private mutating func array(depth: Int) throws(StrictJSONError) -> JSONValue {
        try self.enter(depth)
        var elements: [JSONValue] = []
        if self.current == UInt8(ascii: "]") {
            self.position += 1
            return .array(elements)
        }
        while true {
            self.path.append(.index(elements.count))
            elements.append(try self.value(depth: depth + 1))
            self.path.removeLast()
            self.skipWhitespace()
            switch self.current {
            case UInt8(ascii: ","):
                self.position += 1
                self.skipWhitespace()
            case UInt8(ascii: "]"):
                self.position += 1
                return .array(elements)
            default:
                throw self.malformed("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func literal(_ word: StaticString) throws(StrictJSONError) {
        let count = word.utf8CodeUnitCount
        let matches = word.withUTF8Buffer { expected in
            self.bytes.count - self.position >= count && (0..<count).allSatisfy { self.bytes[self.position + $0] == expected[$0] }
        }
        guard matches else { throw self.malformed("unexpected word (only true, false and null are JSON literals)") }
        self.position += count
    }

    private mutating func number() throws(StrictJSONError) -> String {
        let start = self.position
        func digits(_ parser: inout StrictJSONParser) -> Int {
            let first = parser.position
            while let byte = parser.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { parser.position += 1 }
            return parser.position - first
        }
        if self.current == UInt8(ascii: "-") { self.position += 1 }
        let integerStart = self.position
        let integerDigits = digits(&self)
        guard integerDigits > 0 else { throw self.malformed("a number needs digits") }
        guard integerDigits == 1 || self.bytes[integerStart] != UInt8(ascii: "0") else { throw self.malformed("a number has a leading zero") }
        if self.current == UInt8(ascii: ".") {
            self.position += 1
            guard digits(&self) > 0 else { throw self.malformed("a number's fraction needs digits") }
        }
        if self.current == UInt8(ascii: "e") || self.current == UInt8(ascii: "E") {
            self.position += 1
            if self.current == UInt8(ascii: "+") || self.current == UInt8(ascii: "-") { self.position += 1 }
            guard digits(&self) > 0 else { throw self.malformed("a number's exponent needs digits") }
        }
        return String(decoding: UnsafeRawBufferPointer(rebasing: self.bytes[start..<self.position]), as: UTF8.self)
    }

    private mutating func string() throws(StrictJSONError) -> String {
        self.position += 1
        var utf8: [UInt8] = []
        var ascii = true
        while let byte = self.current {
            self.position += 1
            switch byte {
            case UInt8(ascii: "\""):
                let text: String
                if ascii {
                    text = String(decoding: utf8, as: UTF8.self)
                } else {
                    guard let valid = String(validating: utf8, as: UTF8.self) else {
                        throw self.malformed("a string is not valid UTF-8")
                    }
                    text = valid
                }
                if !ascii, let bad = text.unicodeScalars.first(where: \.isNoncharacter) {
                    throw StrictJSONError(.malformed, "the body holds the Unicode noncharacter \(JSONPath.show(bad)), which I-JSON forbids")
                }
                return text
            case UInt8(ascii: "\\"):
                guard let escape = self.current else { break }
                self.position += 1
                if let byte = JSONEscapes.byte(for: escape) {
                    utf8.append(byte)
                    continue
                }
                switch escape {
                case UInt8(ascii: "u"):
                    let scalar = try self.escapedScalar()
                    ascii = ascii && scalar.isASCII
                    utf8.append(contentsOf: String(Character(scalar)).utf8)
                default:
                    throw self.malformed("unknown escape \\\(Self.show(escape))")
                }
            default:
                guard byte >= 0x20 else { throw self.malformed("a string holds the raw control character \(Self.show(byte)); escape it") }
                ascii = ascii && byte < 0x80
                utf8.append(byte)
            }
        }
        throw self.malformed("a string is not closed")
    }

    /// The scalar of a `\uXXXX` escape (the `\u` already read), joining a surrogate pair.
    private mutating func escapedScalar() throws(StrictJSONError) -> Unicode.Scalar {
        let unit = try self.hex4()
        switch unit {
        case 0xD800...0xDBFF:
            guard self.bytes.count - self.position >= 2, self.bytes[self.position] == UInt8(ascii: "\\"), self.bytes[self.position + 1] == UInt8(ascii: "u")
            else {
                throw StrictJSONError(.malformed, "the body holds a lone surrogate \\u\(Self.hex(unit)), which I-JSON forbids")
            }
            self.position += 2
            let low = try self.hex4()
            guard (0xDC00...0xDFFF).contains(low) else {
                throw StrictJSONError(.malformed, "the body holds a lone surrogate \\u\(Self.hex(unit)), which I-JSON forbids")
            }
            // A valid pair always makes a scalar in U+10000…U+10FFFF.
            return Unicode.Scalar(0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00))!
        case 0xDC00...0xDFFF:
            throw StrictJSONError(.malformed, "the body holds a lone surrogate \\u\(Self.hex(unit)), which I-JSON forbids")
        default:
            return Unicode.Scalar(unit)!
        }
    }

    private mutating func hex4() throws(StrictJSONError) -> UInt16 {
        guard let unit = HexDigits.unit(self.bytes, at: self.position) else { throw self.malformed("a \\u escape needs four hex digits") }
        self.position += 4
        return unit
    }

    private static func hex(_ unit: UInt16) -> String {
        let digits = String(unit, radix: 16, uppercase: true)
        return String(repeating: "0", count: 4 - digits.count) + digits
    }

    private static func show(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "0x" + String(byte, radix: 16, uppercase: true)
    }
}

extension Unicode.Scalar {
    /// U+FDD0…U+FDEF and the last two code points of every plane (U+xFFFE, U+xFFFF): never text.
    public var isNoncharacter: Bool {
        (0xFDD0...0xFDEF).contains(self.value) || self.value & 0xFFFE == 0xFFFE
    }
}

/// One step of the way to a value: a member name or an array index.
public enum JSONPathComponent: Sendable, Hashable {
    case member(String)
    case index(Int)
}

/// How fields are named in messages: `intent.line_items[0].quantity`, or `(body)` for the whole body.
public enum JSONPath {
    public static func render(_ path: [JSONPathComponent]) -> String {
        var text = ""
        for component in path {
            switch component {
            case .member(let name):
                let shown = Self.printable(name)
                text += text.isEmpty ? shown : ".\(shown)"
            case .index(let index): text += "[\(index)]"
            }
        }
        return text.isEmpty ? "(body)" : text
    }

    /// A member name as messages show it: control and format characters and noncharacters as `\u{…}`, so
    /// that a message can neither hold U+0000 nor change a terminal's or a log's lines.
    static func printable(_ name: String) -> String {
        guard name.unicodeScalars.contains(where: Self.needsEscape) else { return name }
        return name.unicodeScalars.map { Self.needsEscape($0) ? "\\u{\(String($0.value, radix: 16, uppercase: true))}" : String($0) }.joined()
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator: true
        default: scalar.isNoncharacter
        }
    }

    /// `U+0000 (NUL)`-style names for characters in messages.
    static func show(_ scalar: Unicode.Scalar) -> String {
        let digits = String(scalar.value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
