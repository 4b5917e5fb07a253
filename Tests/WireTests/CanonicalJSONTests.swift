import Audit
import CanonicalJSON
import Foundation
import Policy
import Signing
import Testing
import Wire

/// The hand-written canonical JSON must be byte for byte what Foundation's `JSONEncoder` (sorted keys, no
/// escaped '/') writes, for every type on the hot path: stored records, audit entries, signed claims and
/// request hashes must not depend on which of the two wrote them.
@Suite("Canonical JSON writer")
struct CanonicalJSONTests {
    /// A seeded generator, so a failure names a value that can be made again.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    struct Values {
        var generator: SplitMix64

        /// Strings with what escaping must get right: every control character, quotes, backslashes, '/',
        /// DEL, non-ASCII, U+2028, astral characters; and the empty string.
        mutating func string() -> String {
            let pieces = ["a", "Z", "0", " ", "\"", "\\", "/", "\u{7F}", "é", "\u{2028}", "😀", "ß", "\u{0}", "\u{1F}", "\n", "\r", "\t", "\u{8}", "\u{C}", "\u{B}",
                "merchant", "{\"x\":1}"]
            let count = Int.random(in: 0...8, using: &self.generator)
            return (0..<count).map { _ in pieces.randomElement(using: &self.generator)! }.joined()
        }

        mutating func maybe<T>(_ make: (inout Values) -> T) -> T? {
            Bool.random(using: &self.generator) ? make(&self) : nil
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
                authorizationID: values.string(), tier: values.string(), approvalsRequired: Int(truncatingIfNeeded: values.integer()), approvers: values.strings(),
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
                    tier: values.string(), policyVersion: values.string(), approvers: values.maybe { $0.strings() }, auditLogIndex: values.maybe { $0.integer() }
                )
            )
        }
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
}
