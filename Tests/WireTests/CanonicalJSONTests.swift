import Audit
import CanonicalJSON
import Foundation
import Policy
import Signing
import TestSupport
import Testing
import Wire

/// The hand-written canonical JSON must be byte for byte what Foundation's `JSONEncoder` (sorted keys, no
/// escaped '/') writes, for every type on the hot path: stored records, audit entries, signed claims and
/// request hashes must not depend on which of the two wrote them.
@Suite("Canonical JSON writer")
struct CanonicalJSONTests {

    struct Values {
        var generator: SplitMix64
        /// Every optional member present: then every CodingKey of every type is in the JSON.
        var everyOptional = false

        /// Strings with what escaping must get right: every control character, quotes, backslashes, '/',
        /// DEL, non-ASCII, U+2028, astral characters; and the empty string.
        mutating func string() -> String {
            let pieces = [
                "a", "Z", "0", " ", "\"", "\\", "/", "\u{7F}", "é", "\u{2028}", "😀", "ß", "\u{0}", "\u{1F}", "\n", "\r", "\t", "\u{8}", "\u{C}", "\u{B}",
                "merchant", "{\"x\":1}",
            ]
            let count = Int.random(in: 0...8, using: &self.generator)
            return (0..<count).map { _ in pieces.randomElement(using: &self.generator)! }.joined()
        }

        mutating func maybe<T>(_ make: (inout Values) -> T) -> T? {
            self.everyOptional || Bool.random(using: &self.generator) ? make(&self) : nil
        }

        mutating func integer() -> Int64 {
            [Int64.min, Int64.max, 0, -1, 1, 9, 10, 99, 100, 1_000_000_000_000_000].randomElement(using: &self.generator)!
                &+ (Bool.random(using: &self.generator) ? 0 : Int64.random(in: -1_000_000...1_000_000, using: &self.generator))
        }

        mutating func strings() -> [String] {
            (0..<Int.random(in: 0...3, using: &self.generator)).map { _ in self.string() }
        }

        mutating func map() -> [String: String] {
            Dictionary((0..<Int.random(in: 0...4, using: &self.generator)).map { _ in (self.string(), self.string()) }, uniquingKeysWith: { a, _ in a })
        }

        mutating func intent() -> Intent {
            Intent(
                description: self.string(),
                lineItems: self.maybe { values in
                    (0..<Int.random(in: 0...3, using: &values.generator)).map { _ in
                        LineItem(description: values.string(), quantity: values.integer(), unitAmount: values.integer(), category: values.maybe { $0.string() })
                    }
                },
                orderHash: self.maybe { $0.string() }
            )
        }

        mutating func checks() -> [CheckRecord] {
            (0..<Int.random(in: 0...3, using: &self.generator)).map { _ in
                CheckRecord(name: self.string(), inputs: self.string(), result: [.pass, .fail, .escalate, .atCommit].randomElement(using: &self.generator)!)
            }
        }

        mutating func summary() -> DecisionSummary {
            DecisionSummary(
                outcome: self.string(), code: self.maybe { $0.string() }, amount: self.maybe { $0.integer() }, currency: self.maybe { $0.string() },
                merchant: self.maybe { $0.string() }, tier: self.maybe { $0.string() }, tierReason: self.maybe { $0.string() },
                policyVersion: self.maybe { $0.string() }, checks: self.maybe { $0.string() }, kid: self.maybe { $0.string() },
                jwsSHA256: self.maybe { $0.string() }, intentHash: self.maybe { $0.string() }, approvers: self.maybe { $0.strings() }
            )
        }
    }

    static let foundation: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func expectSame<T: CanonicalJSONEncodable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let expected = String(decoding: try Self.foundation.encode(value), as: UTF8.self)
        let written = String(decoding: value.canonicalJSONBytes, as: UTF8.self)
        #expect(written == expected, sourceLocation: sourceLocation)
    }

    @Test("every hot type writes exactly what JSONEncoder writes, for 500 random values each")
    func agreesWithFoundation() throws {
        var values = Values(generator: SplitMix64(state: 20_261_125))
        for _ in 0..<500 {
            try Self.expectEveryHotTypeSame(&values)
        }
    }

    /// The field lists written by hand (the writers' and the scanners') against the CodingKeys JSONEncoder and
    /// JSONDecoder use: with every optional present, every key is in JSONEncoder's output, so a field a writer
    /// leaves out, adds or misspells, or a scanner does not know, fails here (not only with some probability).
    @Test("with every optional member present, every hot type's writer writes and its scanner reads every CodingKey")
    func everyCodingKey() throws {
        var values = Values(generator: SplitMix64(state: 15), everyOptional: true)
        for _ in 0..<20 {
            try Self.expectEveryHotTypeSame(&values)
            try Self.expectScanned(&values, encoders: [Self.foundation])
        }
    }

    static func expectEveryHotTypeSame(_ values: inout Values) throws {
        let intent = values.intent()
        try Self.expectSame(intent)
        try Self.expectSame(
            AuthorizeRequest(
                idempotencyKey: values.string(), amount: values.integer(), currency: values.string(), merchantID: values.string(),
                merchantCategoryCode: values.string(), intent: intent
            )
        )
        let authorization = Authorization(
            jws: values.string(), authorizationID: values.string(), tier: values.string(), kid: values.string(), keyName: values.string(),
            keyVersion: Int(truncatingIfNeeded: values.integer()), keyBackend: values.string(), expiresAt: values.integer(),
            approvers: values.maybe { $0.strings() }
        )
        try Self.expectSame(authorization)
        try Self.expectSame(AuthorizeOutcome.authorized(authorization))
        let pending = PendingAuthorization(
            authorizationID: values.string(), tier: values.string(), approvalsRequired: Int(truncatingIfNeeded: values.integer()),
            approvers: values.strings(),
            approvalExpiresAt: values.integer()
        )
        try Self.expectSame(pending)
        try Self.expectSame(AuthorizeOutcome.pendingApproval(pending))
        try Self.expectSame(WireError(ErrorCode(rawValue: values.string()), values.string(), retryable: Bool.random(using: &values.generator)))
        try Self.expectSame(
            DecisionRecord(
                outcome: values.string(), code: values.maybe { $0.string() }, tier: values.maybe { $0.string() }, tierReason: values.string(),
                checks: values.checks(), policyVersion: values.string()
            )
        )
        try Self.expectSame(
            AuditEntry(
                index: values.integer(), time: values.integer(), kind: values.string(), action: values.string(), actor: values.string(),
                subject: values.maybe { $0.string() }, decision: values.maybe { $0.summary() }, details: values.maybe { $0.map() }
            )
        )
        try Self.expectSame(JWSHeader(kid: values.string()))
        try Self.expectSame(
            AuthorizationClaims(
                iss: values.string(), sub: values.string(), aud: values.string(), jti: values.string(), iat: values.integer(), nbf: values.integer(),
                exp: values.integer(), amount: values.integer(), currency: values.string(), mcc: values.string(), intentHash: values.string(),
                tier: values.string(), policyVersion: values.string(), approvers: values.maybe { $0.strings() },
                auditLogIndex: values.maybe { $0.integer() }
            )
        )
    }

    @Test("escapes control characters, quotes and backslashes as Foundation does, and leaves '/' and non-ASCII alone")
    func escaping() {
        var json = CanonicalJSON()
        json.string("a\"b\\c/d\u{0}\u{8}\u{9}\u{A}\u{B}\u{C}\u{D}\u{1F}\u{7F}é")
        #expect(String(decoding: json.bytes, as: UTF8.self) == #""a\"b\\c/d\u0000\b\t\n\u000b\f\r\u001f"# + "\u{7F}é\"")
    }

    @Test("integers at the edges")
    func integers() {
        for value: Int64 in [.min, .max, 0, -1, 10, -10] {
            var json = CanonicalJSON()
            json.integer(value)
            #expect(String(decoding: json.bytes, as: UTF8.self) == String(value))
        }
    }

    // MARK: The fast reader

    static func scanned<T: JSONScannable>(_ type: T.Type, _ bytes: [UInt8]) -> T? {
        bytes.withUnsafeBytes { T.scan(bytes: $0) }
    }

    static func randomRequest(_ values: inout Values) -> AuthorizeRequest {
        AuthorizeRequest(
            idempotencyKey: values.string(), amount: values.integer(), currency: values.string(), merchantID: values.string(),
            merchantCategoryCode: values.string(), intent: values.intent()
        )
    }

    static func randomAuthorization(_ values: inout Values) -> Authorization {
        Authorization(
            jws: values.string(), authorizationID: values.string(), tier: values.string(), kid: values.string(), keyName: values.string(),
            keyVersion: Int(truncatingIfNeeded: values.integer()), keyBackend: values.string(), expiresAt: values.integer(),
            approvers: values.maybe { $0.strings() }
        )
    }

    static func strict<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) -> T? {
        try? StrictJSONDecoder().decode(type, from: bytes)
    }

    /// What the fast reader makes of `bytes` must be what the strict decoder makes of them, whenever it makes anything.
    static func expectAgrees<T: JSONScannable & Equatable>(_ type: T.Type, _ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        guard let fast = Self.scanned(type, bytes) else { return }
        #expect(fast == Self.strict(type, bytes), "\(String(decoding: bytes, as: UTF8.self))", sourceLocation: sourceLocation)
    }

    /// Every string may hold U+0000 in what the writer is given, and no reader accepts one.
    static func expected<T>(_ value: T, in bytes: [UInt8]) -> T? {
        bytes.firstRange(of: Array(#"\u0000"#.utf8)) == nil ? value : nil
    }

    @Test("reads what the writer and JSONEncoder write (sorted or not, pretty or not, '/' escaped or not) to the value written, as the strict decoder does")
    func scannerReadsEncodings() throws {
        var values = Values(generator: SplitMix64(state: 7))
        let encoders = [JSONEncoder.OutputFormatting.prettyPrinted, [], [.sortedKeys, .prettyPrinted]].map { formatting in
            let encoder = JSONEncoder()
            encoder.outputFormatting = formatting
            return encoder
        }
        for _ in 0..<300 {
            try Self.expectScanned(&values, encoders: encoders)
        }
    }

    static func expectScanned(_ values: inout Values, encoders: [JSONEncoder]) throws {
        let request = Self.randomRequest(&values)
        let authorization = Self.randomAuthorization(&values)
        let requestBytes = request.canonicalJSONBytes, authorizationBytes = authorization.canonicalJSONBytes
        #expect(Self.scanned(AuthorizeRequest.self, requestBytes) == Self.expected(request, in: requestBytes))
        #expect(Self.strict(AuthorizeRequest.self, requestBytes) == Self.expected(request, in: requestBytes))
        #expect(Self.scanned(Authorization.self, authorizationBytes) == Self.expected(authorization, in: authorizationBytes))
        #expect(Self.strict(Authorization.self, authorizationBytes) == Self.expected(authorization, in: authorizationBytes))
        #expect(Self.scanned(AuthorizeOutcome.self, authorizationBytes) == Self.expected(.authorized(authorization), in: authorizationBytes))
        for encoder in encoders {
            let requestBytes = Array(try encoder.encode(request)), authorizationBytes = Array(try encoder.encode(authorization))
            #expect(Self.scanned(AuthorizeRequest.self, requestBytes) == Self.expected(request, in: requestBytes))
            #expect(Self.strict(AuthorizeRequest.self, requestBytes) == Self.expected(request, in: requestBytes))
            #expect(Self.scanned(Authorization.self, authorizationBytes) == Self.expected(authorization, in: authorizationBytes))
        }
    }

    @Test("never accepts what the strict decoder refuses, nor reads it differently: 20,000 mutated bodies")
    func scannerUnderMutation() {
        var values = Values(generator: SplitMix64(state: 11))
        let interesting = Array(#"{}[]":,\/ -0123456789.eEnultrfu"#.utf8) + [0x00, 0x1F, 0x7F, 0x80, 0xC3, 0xA9, 0xFF]
        var accepted = 0
        for round in 0..<10_000 {
            let original = round % 2 == 0 ? Self.randomRequest(&values).canonicalJSONBytes : Self.randomAuthorization(&values).canonicalJSONBytes
            for _ in 0..<2 {
                var bytes = original
                for _ in 0..<Int.random(in: 1...3, using: &values.generator) where !bytes.isEmpty {
                    let at = Int.random(in: 0..<bytes.count, using: &values.generator)
                    switch Int.random(in: 0..<4, using: &values.generator) {
                    case 0: bytes[at] = interesting.randomElement(using: &values.generator)!
                    case 1: bytes.remove(at: at)
                    case 2: bytes.insert(interesting.randomElement(using: &values.generator)!, at: at)
                    default:
                        let end = min(bytes.count, at + Int.random(in: 1...12, using: &values.generator))
                        bytes.insert(contentsOf: bytes[at..<end], at: at)
                    }
                }
                if round % 2 == 0 {
                    Self.expectAgrees(AuthorizeRequest.self, bytes)
                    accepted += Self.scanned(AuthorizeRequest.self, bytes) == nil ? 0 : 1
                } else {
                    Self.expectAgrees(Authorization.self, bytes)
                    Self.expectAgrees(AuthorizeOutcome.self, bytes)
                    accepted += Self.scanned(Authorization.self, bytes) == nil ? 0 : 1
                }
            }
        }
        #expect(accepted > 100, "some mutations (inside strings, digits) stay valid and are read by the fast path")
    }

    @Test(
        "leaves to the strict decoder: repeated and unknown keys, non-integer numbers, overflow, bad escapes, NUL, noncharacters; reads escapes and null optionals"
    )
    func scannerEdges() {
        let base = #""amount":1,"currency":"USD","idempotency_key":"k","merchant_category_code":"5734","merchant_id":"m""#
        func request(_ text: String) -> AuthorizeRequest? { Self.scanned(AuthorizeRequest.self, Array(text.utf8)) }
        let intent = #""intent":{"description":"d","line_items":null,"order_hash":"h"}"#
        #expect(request("{\(base),\(intent)}")?.intent == Intent(description: "d", orderHash: "h"))
        #expect(request("{\(base),\(intent),\"amount\":2}") == nil, "a repeated key")
        #expect(request("{\(base),\(intent),\"extra\":2}") == nil, "an unknown key")
        #expect(request("{\(base),\(intent)} x") == nil, "trailing bytes")
        for number in ["1.0", "1e2", "01", "9223372036854775808", "-", "+1", "0x1"] {
            #expect(request("{\(base.replacingOccurrences(of: "\"amount\":1", with: "\"amount\":\(number)")),\(intent)}") == nil, "amount \(number)")
        }
        #expect(request("{\(base.replacingOccurrences(of: "\"amount\":1", with: "\"amount\":-9223372036854775808")),\(intent)}")?.amount == .min)
        let escaped = #""intent":{"description":"\u00e9\ud83d\ude00\/\n\"","order_hash":"h"}"#
        #expect(request("{\(base),\(escaped)}")?.intent.description == "é😀/\n\"")
        for bad in [#"\ud83d"#, #"\ude00"#, #"\x"#, #"\u12"#] {
            #expect(request("{\(base),\"intent\":{\"description\":\"\(bad)\",\"order_hash\":\"h\"}}") == nil, "escape \(bad)")
        }
        #expect(
            Self.scanned(AuthorizeRequest.self, Array("{\(base),\"intent\":{\"description\":\"\u{1}\",\"order_hash\":\"h\"}}".utf8)) == nil,
            "a raw control character")
        #expect(Self.scanned(AuthorizeRequest.self, Array("{\(base),\(intent)}".utf8) + [0xFF]) == nil)
        for text in [#"a\u0000"#, #"\ufdd0"#, #"\udbff\udfff"#] {
            #expect(request("{\(base),\"intent\":{\"description\":\"\(text)\",\"order_hash\":\"h\"}}") == nil, "\(text)")
        }
        #expect(
            Self.scanned(
                AuthorizeRequest.self,
                Array("{\(base),\"intent\":{\"description\":\"\u{1}\",\"order_hash\":\"h\"}}".utf8).replacing([0x01], with: [0xEF, 0xBF, 0xBF])) == nil,
            "a raw noncharacter")
    }
}
