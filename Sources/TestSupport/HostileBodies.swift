import Foundation
import Wire

/// Hostile AUTHORIZE bodies, each with the code the server must answer and a piece of its message: the same
/// table is read by the decoder's tests (WireTests) and sent over a real socket (CountersignTests).
public enum HostileBodies {
    /// A valid AUTHORIZE body with `$MEMBERS` for extra top-level members, `$AMOUNT`, `$MERCHANT`, `$DESCRIPTION`,
    /// `$INTENT_EXTRA`, `$ITEM` (the line item's members) and `$QUANTITY` to replace.
    static let template =
        #"{"idempotency_key":"k-1","amount":$AMOUNT,"currency":"USD","merchant_id":$MERCHANT,"merchant_category_code":"5734","intent":{"description":$DESCRIPTION,"line_items":[{"description":"USB-C cable","quantity":$QUANTITY,"unit_amount":625$ITEM}]$INTENT_EXTRA}$MEMBERS}"#

    public static func body(
        amount: String = "1250", merchant: String = #""m-42""#, description: String = #""2 cables""#, quantity: String = "2", item: String = "",
        intentExtra: String = "", members: String = ""
    ) -> [UInt8] {
        Array(
            Self.template.replacingOccurrences("$AMOUNT", amount).replacingOccurrences("$MERCHANT", merchant)
                .replacingOccurrences("$DESCRIPTION", description).replacingOccurrences("$QUANTITY", quantity).replacingOccurrences("$ITEM", item)
                .replacingOccurrences("$INTENT_EXTRA", intentExtra).replacingOccurrences("$MEMBERS", members).utf8
        )
    }

    public struct Hostile: CustomStringConvertible, Sendable {
        public var name: String
        public var bytes: [UInt8]
        public var code: ErrorCode
        /// A piece of the message: the field it names, or what is wrong.
        public var says: String

        init(_ name: String, _ bytes: [UInt8], _ code: ErrorCode, _ says: String) {
            self.name = name
            self.bytes = bytes
            self.code = code
            self.says = says
        }

        init(_ name: String, _ text: String, _ code: ErrorCode, _ says: String) {
            self.init(name, Array(text.utf8), code, says)
        }

        public var description: String { self.name }
    }

    static let invalid = ErrorCode.invalidRequest
    static let malformed = ErrorCode.malformedJSON

    public static let all: [Hostile] = [
        // Repeated members, at every depth and however they are spelled.
        Hostile(
            "merchant_id twice, the evil one first", Self.body(merchant: #""m-evil","merchant_id":"m-42""#), invalid,
            "member 'merchant_id' appears more than once"),
        Hostile("amount twice", Self.body(amount: #"1,"amount":1250"#), invalid, "member 'amount' appears more than once"),
        Hostile("the same value twice", Self.body(amount: #"1250,"amount":1250"#), invalid, "member 'amount' appears more than once"),
        Hostile("repeated through an escape", Self.body(members: #","merchant\u005fid":"m-evil""#), invalid, "member 'merchant_id' appears more than once"),
        Hostile("repeated intent", Self.body(members: #","intent":{"description":"x","order_hash":"h"}"#), invalid, "member 'intent' appears more than once"),
        Hostile("repeated in the intent", Self.body(intentExtra: #","description":"other""#), invalid, "member 'intent.description' appears more than once"),
        Hostile("repeated in a line item", Self.body(item: #","quantity":1"#), invalid, "member 'intent.line_items[0].quantity' appears more than once"),
        Hostile("repeated inside an unknown member", Self.body(members: #","x":{"a":1,"a":2}"#), invalid, "member 'x.a' appears more than once"),
        // Numbers: integers from their digits, never rounded.
        Hostile("a fraction that rounds to 1000", Self.body(amount: "999.99999999999999999"), invalid, "field 'amount' must be an integer"),
        Hostile("1000.0", Self.body(amount: "1000.0"), invalid, "field 'amount' must be an integer"),
        Hostile("an exponent", Self.body(amount: "1e3"), invalid, "field 'amount' must be an integer"),
        Hostile("a capital exponent", Self.body(amount: "1E3"), invalid, "field 'amount' must be an integer"),
        Hostile("a signed exponent", Self.body(amount: "125e+1"), invalid, "field 'amount' must be an integer"),
        Hostile("a huge exponent", Self.body(amount: "1e999999999"), invalid, "field 'amount' must be an integer"),
        Hostile("a huge negative exponent", Self.body(amount: "-1e-999999999"), invalid, "field 'amount' must be an integer"),
        Hostile("just past Int64", Self.body(amount: "9223372036854775808"), invalid, "field 'amount' is out of range"),
        Hostile("far past Int64", Self.body(amount: String(repeating: "9", count: 400)), invalid, "field 'amount' is out of range"),
        Hostile("just below Int64", Self.body(amount: "-9223372036854775809"), invalid, "field 'amount' is out of range"),
        Hostile(
            "a quantity that rounds to 2", Self.body(quantity: "1.99999999999999999999"), invalid, "field 'intent.line_items[0].quantity' must be an integer"),
        Hostile(
            "a unit amount with an exponent", Array(Self.body().replacing(Array(#""unit_amount":625"#.utf8), with: Array(#""unit_amount":6.25e2"#.utf8))),
            invalid, "field 'intent.line_items[0].unit_amount'"),
        Hostile("amount as a string", Self.body(amount: #""1250""#), invalid, "field 'amount' must be an integer, not a string"),
        Hostile("amount as true", Self.body(amount: "true"), invalid, "field 'amount' must be an integer"),
        Hostile("amount null", Self.body(amount: "null"), invalid, "field 'amount'"),
        Hostile("amount as an array", Self.body(amount: "[1250]"), invalid, "field 'amount' must be an integer, not an array"),
        Hostile("minus zero", Self.body(amount: "-0"), invalid, "field 'amount' must be a positive integer"),
        Hostile("a negative amount", Self.body(amount: "-1250"), invalid, "field 'amount' must be a positive integer"),
        Hostile("a leading zero", Self.body(amount: "01250"), malformed, "leading zero"),
        Hostile("a plus sign", Self.body(amount: "+1250"), malformed, "not valid JSON"),
        Hostile("a bare fraction", Self.body(amount: ".5"), malformed, "not valid JSON"),
        Hostile("a trailing dot", Self.body(amount: "1."), malformed, "fraction needs digits"),
        Hostile("an empty exponent", Self.body(amount: "1e"), malformed, "exponent needs digits"),
        Hostile("NaN", Self.body(amount: "NaN"), malformed, "not valid JSON"),
        Hostile("Infinity", Self.body(amount: "Infinity"), malformed, "not valid JSON"),
        Hostile("hexadecimal", Self.body(amount: "0x4E2"), malformed, "not valid JSON"),
        Hostile("digit separators", Self.body(amount: "1_250"), malformed, "not valid JSON"),
        // Members the protocol does not define.
        Hostile("an unknown top-level member", Self.body(members: #","note":"hi""#), invalid, "unknown member 'note'"),
        Hostile("an unknown member that is null", Self.body(members: #","note":null"#), invalid, "unknown member 'note'"),
        Hostile(
            "a shipping address in the intent", Self.body(intentExtra: #","shipping_address":"1 Main St""#), invalid, "unknown member 'intent.shipping_address'"
        ),
        Hostile("a sku in a line item", Self.body(item: #","sku":"A-1""#), invalid, "unknown member 'intent.line_items[0].sku'"),
        Hostile(
            "an unknown member holding an object", Self.body(intentExtra: #","shipping_address":{"street":"1 Main"}"#), invalid,
            "unknown member 'intent.shipping_address':"),
        Hostile("an unknown member named with NUL", Self.body(members: #","a\u0000b":1"#), invalid, "unknown member 'a\\u{0}b'"),
        Hostile("a misspelled optional", Self.body(intentExtra: #","orderhash":"h""#), invalid, "unknown member 'intent.orderhash'"),
        // Bytes that are not UTF-8, and I-JSON's forbidden code points.
        Hostile("an invalid byte in a string", Self.body(description: "\"a\u{1}\"").replacing([0x01], with: [0xFF]), malformed, "not valid UTF-8"),
        Hostile("an overlong '/'", Self.body(description: "\"a\u{1}\"").replacing([0x01], with: [0xC0, 0xAF]), malformed, "not valid UTF-8"),
        Hostile("an overlong NUL", Self.body(description: "\"a\u{1}\"").replacing([0x01], with: [0xC0, 0x80]), malformed, "not valid UTF-8"),
        Hostile("a three-byte overlong", Self.body(description: "\"a\u{1}\"").replacing([0x01], with: [0xE0, 0x80, 0xAF]), malformed, "not valid UTF-8"),
        Hostile("an encoded surrogate", Self.body(description: "\"a\u{1}\"").replacing([0x01], with: [0xED, 0xA0, 0x80]), malformed, "not valid UTF-8"),
        Hostile("past U+10FFFF", Self.body(description: "\"a\u{1}\"").replacing([0x01], with: [0xF4, 0x90, 0x80, 0x80]), malformed, "not valid UTF-8"),
        Hostile("a truncated sequence", Self.body(description: "\"a\u{1}\"").replacing([0x01], with: [0xE2, 0x82]), malformed, "not valid UTF-8"),
        Hostile("a lone continuation byte", Self.body(description: "\"a\u{1}\"").replacing([0x01], with: [0x80]), malformed, "not valid UTF-8"),
        Hostile("an invalid byte between members", Self.body(members: ",\u{1}").replacing([0x01], with: [0xFF]), malformed, "not valid JSON"),
        Hostile("a byte order mark", [0xEF, 0xBB, 0xBF] + Self.body(), malformed, "byte order mark"),
        Hostile("an escaped lone high surrogate", Self.body(description: #""a\ud800b""#), malformed, "lone surrogate \\uD800"),
        Hostile("an escaped lone low surrogate", Self.body(description: #""a\udc00b""#), malformed, "lone surrogate \\uDC00"),
        Hostile("a high surrogate before a non-surrogate", Self.body(description: #""a\ud800\u0041""#), malformed, "lone surrogate"),
        Hostile("an escaped noncharacter", Self.body(description: #""a\uffff""#), malformed, "noncharacter U+FFFF"),
        Hostile("a raw noncharacter", Self.body(description: "\"a\u{1}\"").replacing([0x01], with: [0xEF, 0xB7, 0x90]), malformed, "noncharacter U+FDD0"),
        Hostile("a noncharacter in a member name", Self.body(members: #","\ufffe":1"#), malformed, "noncharacter U+FFFE"),
        // NUL and control characters.
        Hostile("an escaped NUL in the merchant", Self.body(merchant: #""m-42\u0000evil""#), invalid, "field 'merchant_id' holds U+0000 (NUL)"),
        Hostile("an escaped NUL in a description", Self.body(description: #""cables\u0000""#), invalid, "field 'intent.description' holds U+0000 (NUL)"),
        Hostile("a raw NUL in a string", Self.body(description: "\"a\u{0}\""), malformed, "raw control character"),
        Hostile("a raw line feed in a string", Self.body(description: "\"a\nb\""), malformed, "raw control character"),
        Hostile("a bell in the merchant", Self.body(merchant: #""m-42\u0007""#), invalid, "field 'merchant_id' holds U+0007"),
        Hostile("a C1 control in the merchant", Self.body(merchant: #""m-42\u0085""#), invalid, "field 'merchant_id' holds U+0085"),
        Hostile("a zero-width space in the merchant", Self.body(merchant: #""m-\u200b42""#), invalid, "field 'merchant_id' holds U+200B"),
        Hostile("a right-to-left override in the description", Self.body(description: #""cables \u202e""#), invalid, "field 'intent.description' holds U+202E"),
        Hostile("an escape character in the description", Self.body(description: #""\u001b[31mred""#), invalid, "field 'intent.description' holds U+001B"),
        Hostile(
            "a line feed in the idempotency key", Array(Self.body().replacing(Array(#""k-1""#.utf8), with: Array(#""k\n1""#.utf8))), invalid,
            "field 'idempotency_key'"),
        // Structure.
        Hostile(
            "nesting past the limit", Self.body(members: #","x":"# + String(repeating: "[", count: 40) + String(repeating: "]", count: 40)), invalid,
            "nests deeper than 32 levels"),
        Hostile("100,000 open brackets", Array((String(repeating: "[", count: 100_000)).utf8), invalid, "nests deeper than 32 levels"),
        Hostile("a trailing comma in an object", Self.body(members: ","), malformed, "not valid JSON"),
        Hostile("a trailing comma in an array", Array(Self.body().replacing(Array("}]".utf8), with: Array("},]".utf8))), malformed, "not valid JSON"),
        Hostile("a comment", Self.body(members: "/* hi */"), malformed, "not valid JSON"),
        Hostile("single quotes", Self.body(merchant: "'m-42'"), malformed, "not valid JSON"),
        Hostile("an unquoted member name", Self.body(members: ",note:1"), malformed, "member name must be a string"),
        Hostile("two bodies", Self.body() + Array("{}".utf8), malformed, "more after the JSON value"),
        Hostile("a NUL after the body", Self.body() + [0], malformed, "more after the JSON value"),
        Hostile("an unclosed string", Array(#"{"idempotency_key":"k-1"#.utf8), malformed, "not closed"),
        Hostile("an unclosed object", Array(Self.body().dropLast()), malformed, "not valid JSON"),
        Hostile("an unknown escape", Self.body(description: #""a\xb""#), malformed, "unknown escape"),
        Hostile("a short \\u escape", Self.body(description: #""a\u004""#), malformed, "four hex digits"),
        Hostile("a misspelled literal", Self.body(amount: "tru"), malformed, "literals"),
        Hostile("whitespace only", Array(" \n".utf8), malformed, "ends where a value should be"),
        Hostile("a top-level array", "[]", invalid, "the body must be an object, not an array"),
        Hostile("a top-level string", #""hi""#, invalid, "the body must be an object, not a string"),
        Hostile("an empty object", "{}", invalid, "field 'idempotency_key' is required"),
        Hostile(
            "an intent that is a string",
            Array(#"{"idempotency_key":"k","amount":1,"currency":"USD","merchant_id":"m","merchant_category_code":"5734","intent":"x"}"#.utf8), invalid,
            "field 'intent' must be an object"),
        Hostile(
            "line items as an object",
            Self.body(intentExtra: "").replacing(Array(#""line_items":["#.utf8), with: Array(#""line_items":{"a":"#.utf8)).replacing(
                Array("}]}".utf8), with: Array("}}}".utf8)), invalid, "field 'intent.line_items' must be an array"),
        // Values: shapes that decode but are refused by the field's rules.
        Hostile("a lower-case currency", Array(Self.body().replacing(Array(#""USD""#.utf8), with: Array(#""usd""#.utf8))), invalid, "field 'currency'"),
        Hostile("a two-letter currency", Array(Self.body().replacing(Array(#""USD""#.utf8), with: Array(#""US""#.utf8))), invalid, "field 'currency'"),
    ]
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        self.replacing(target, with: replacement)
    }
}
