import Dispatch
import Foundation
import NIOCore
import Signing
import Testing
import Wire

@Suite("JSON bodies")
struct WireJSONTests {
    static let valid =
        #"{"idempotency_key":"k-1","amount":1250,"currency":"USD","merchant_id":"m-1","merchant_category_code":"5734","intent":{"description":"cable","order_hash":"abc"}}"#

    func decode(_ text: String) throws(WireError) -> AuthorizeRequest {
        let request = try WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(string: text))
        try request.validate()
        return request
    }

    @Test("a valid request decodes")
    func valid() throws {
        let request = try self.decode(Self.valid)
        #expect(request.amount == 1250 && request.currency == "USD" && request.intent.orderHash == "abc")
    }

    @Test("bytes that are not JSON are MALFORMED_JSON", arguments: ["{", "not json", "{\"a\":}", "\u{FF}"])
    func malformed(_ text: String) {
        let error = #expect(throws: WireError.self) { try self.decode(text) }
        #expect(error?.code == .malformedJSON)
    }

    @Test(
        "wrong field types and missing fields are INVALID_REQUEST naming the field",
        arguments: [
            (
                #"{"idempotency_key":"k","amount":"12.50","currency":"USD","merchant_id":"m","merchant_category_code":"5734","intent":{"description":"d","order_hash":"h"}}"#,
                "amount"
            ),
            (
                #"{"idempotency_key":"k","amount":12.5,"currency":"USD","merchant_id":"m","merchant_category_code":"5734","intent":{"description":"d","order_hash":"h"}}"#,
                "amount"
            ),
            (
                #"{"idempotency_key":"k","currency":"USD","merchant_id":"m","merchant_category_code":"5734","intent":{"description":"d","order_hash":"h"}}"#,
                "amount"
            ),
            (
                #"{"idempotency_key":"k","amount":1,"currency":"USD","merchant_id":"m","merchant_category_code":"5734","intent":{"description":7,"order_hash":"h"}}"#,
                "intent.description"
            ),
            (
                #"{"idempotency_key":"k","amount":1,"currency":"USD","merchant_id":"m","merchant_category_code":"5734","intent":{"description":"d","line_items":[{"description":"x","quantity":"2","unit_amount":1}]}}"#,
                "intent.line_items[0].quantity"
            ),
        ]
    )
    func wrongShape(_ text: String, field: String) {
        let error = #expect(throws: WireError.self) { try self.decode(text) }
        #expect(error?.code == .invalidRequest)
        #expect(error?.message.contains("'\(field)'") == true, "\(error?.message ?? "")")
    }

    @Test(
        "values outside their rules are INVALID_REQUEST",
        arguments: [
            ("\"amount\":1250", "\"amount\":0", "amount"),
            ("\"amount\":1250", "\"amount\":-5", "amount"),
            ("\"currency\":\"USD\"", "\"currency\":\"usd\"", "currency"),
            ("\"merchant_category_code\":\"5734\"", "\"merchant_category_code\":\"57a4\"", "merchant_category_code"),
            ("\"idempotency_key\":\"k-1\"", "\"idempotency_key\":\"\"", "idempotency_key"),
            (",\"order_hash\":\"abc\"", "", "intent"),
        ]
    )
    func outOfRange(_ original: String, _ replacement: String, field: String) {
        let text = Self.valid.replacingOccurrences(of: original, with: replacement)
        #expect(text != Self.valid)
        let error = #expect(throws: WireError.self) { try self.decode(text) }
        #expect(error?.code == .invalidRequest)
        #expect(error?.message.contains(field) == true, "\(error?.message ?? "")")
    }

    @Test("an error body has the documented shape")
    func errorBody() {
        let body = WireJSON.encode(WireError(.hsmUnavailable, "the HSM did not answer", retryable: true))
        #expect(String(buffer: body) == #"{"code":"HSM_UNAVAILABLE","message":"the HSM did not answer","retryable":true}"#)
    }
}

@Suite("base64url")
struct Base64URLTests {
    @Test("agrees with Foundation's base64 (with the URL alphabet, unpadded) for every length up to 64, and round-trips")
    func agreesWithFoundation() {
        var generator = SystemRandomNumberGenerator()
        for length in 0...64 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let expected = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
            #expect(Base64URL.encode(bytes) == expected)
            #expect(Base64URL.encode(Data(bytes)) == expected)
            // A slice whose indices do not start at zero, and a collection with no contiguous storage.
            #expect(Base64URL.encode(Data([0xFF] + bytes).dropFirst()) == expected)
            #expect(Base64URL.encode(bytes.withUnsafeBytes { DispatchData(bytes: $0) }) == expected)
            #expect(Base64URL.decode(expected) == bytes)
        }
    }

    @Test("refuses padding, other alphabets, impossible lengths and non-zero trailing bits")
    func refuses() {
        #expect(Base64URL.decode("AA==") == nil)
        #expect(Base64URL.decode("A+8") == nil)
        #expect(Base64URL.decode("A/8") == nil)
        #expect(Base64URL.decode("AAAAA") == nil)
        #expect(Base64URL.decode("AB") == nil, "AB leaves a non-zero bit after the one byte it holds")
        #expect(Base64URL.decode("AA") == [0])
    }
}
