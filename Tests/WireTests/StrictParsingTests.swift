import CanonicalJSON
import Foundation
import NIOCore
import Signing
import TestSupport
import Testing
import Wire

/// The strict reading of request bodies (docs/protocol.md, "Parsing rules"): what is ambiguous is refused
/// with the documented code and a sentence naming the field, never guessed.
@Suite("Strict parsing of request bodies")
struct StrictParsingTests {
    @Test("every hostile body is refused with its documented code and a sentence naming what is wrong", arguments: HostileBodies.all)
    func refused(_ hostile: HostileBodies.Hostile) {
        do {
            let request = try WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: hostile.bytes))
            try request.validate()
            Issue.record("accepted: \(request)")
        } catch {
            #expect(error.code == hostile.code, "\(error)")
            #expect(error.message.contains(hostile.says), "\(error.message)")
        }
    }

    @Test("the table holds at least 60 hostile bodies, each distinct")
    func tableSize() {
        #expect(HostileBodies.all.count >= 60)
        #expect(Set(HostileBodies.all.map(\.bytes)).count == HostileBodies.all.count)
    }

    @Test("what is valid still reads: any member order, whitespace, escapes in names and values, null for an absent optional")
    func validForms() throws {
        let plain = try WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: HostileBodies.body()))
        #expect(plain.merchantID == "m-42" && plain.amount == 1250 && plain.intent.lineItems?.first?.quantity == 2)
        let spaced =
            #" { "intent" : { "line_items" : [ { "unit_amount" : 625 , "quantity" : 2 , "description" : "USB-C cable" } ] , "description" : "2 cables" , "order_hash" : null } ,"#
            + #" "merchant_category_code" : "5734" , "merchant\u005fid" : "m\u002d42" , "currency" : "USD" , "amount" : 1250 , "idempotency_key" : "k\/1" } "#
        let other = try WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(string: spaced))
        #expect(other.merchantID == "m-42" && other.idempotencyKey == "k/1")
        #expect(other.intent == plain.intent)
        let emoji = try WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: HostileBodies.body(description: #""caf\u00e9 \ud83d\ude00 é""#)))
        #expect(emoji.intent.description == "café 😀 é")
        let largest = try WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: HostileBodies.body(amount: "9223372036854775807")))
        #expect(largest.amount == .max, "Int64's maximum is read exactly (and then refused by the amount's own rule)")
        let line = try WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: HostileBodies.body(description: #""two\nlines\tand a tab""#)))
        #expect(throws: Never.self) { try line.validate() }
    }

    @Test("integer fields of other requests are read from their digits too: wait_seconds, indexes, sizes")
    func otherIntegerFields() {
        func refusal<Body: ValidatedRequest>(_ type: Body.Type, _ text: String) -> WireError? {
            do {
                try WireJSON.decode(type, from: ByteBuffer(string: text)).validate()
                return nil
            } catch {
                return error
            }
        }
        let fetch = refusal(FetchAuthorizationRequest.self, #"{"authorization_id":"abc","wait_seconds":1.5}"#)
        #expect(fetch?.code == .invalidRequest && fetch?.message.contains("'wait_seconds'") == true)
        let fetchExponent = refusal(FetchAuthorizationRequest.self, #"{"authorization_id":"abc","wait_seconds":6e1}"#)
        #expect(fetchExponent?.code == .invalidRequest && fetchExponent?.message.contains("'wait_seconds'") == true)
        let entries = refusal(AuditEntriesRequest.self, #"{"from":1e2}"#)
        #expect(entries?.code == .invalidRequest && entries?.message.contains("'from'") == true)
        let limit = refusal(AuditEntriesRequest.self, #"{"from":0,"limit":99999999999999999999}"#)
        #expect(limit?.code == .invalidRequest && limit?.message.contains("'limit' is out of range") == true)
        let proof = refusal(AuditProofRequest.self, #"{"index":2.0}"#)
        #expect(proof?.code == .invalidRequest && proof?.message.contains("'index'") == true)
        let consistency = refusal(AuditConsistencyRequest.self, #"{"old_size":1,"old_size":2}"#)
        #expect(consistency?.code == .invalidRequest && consistency?.message.contains("'old_size' appears more than once") == true)
        let void = refusal(AuthorizationReference.self, #"{"authorization_id":"abc\u0000"}"#)
        #expect(void?.code == .invalidRequest)
        let voidControl = refusal(AuthorizationReference.self, #"{"authorization_id":"abc\u0007"}"#)
        #expect(voidControl?.code == .invalidRequest && voidControl?.message.contains("'authorization_id'") == true)
        let hello = refusal(Hello.self, #"{"principal":"agent-7","client":"x\u001b[2J"}"#)
        #expect(hello?.code == .invalidRequest && hello?.message.contains("'client'") == true)
    }

    @Test("answers a newer server may extend: unknown members are ignored there, repeated ones are not")
    func answers() throws {
        let answer =
            #"{"authorization_id":"a","expires_at":1,"jws":"j","key_backend":"software","key_name":"k","key_version":1,"kid":"k/v1","status":"authorized","tier":"t","new_member":{"x":1}}"#
        #expect(throws: WireError.self) { try WireJSON.decode(Authorization.self, from: ByteBuffer(string: answer)) }
        let read = try WireJSON.decode(Authorization.self, from: ByteBuffer(string: answer), allowingUnknownMembers: true)
        #expect(read.kid == "k/v1")
        let twice = answer.replacingOccurrences(#""kid":"k/v1""#, #""kid":"k/v1","kid":"evil/v1""#)
        let error = #expect(throws: WireError.self) { try WireJSON.decode(Authorization.self, from: ByteBuffer(string: twice), allowingUnknownMembers: true) }
        #expect(error?.message.contains("'kid' appears more than once") == true)
    }

    @Test("an empty body is an object with no members; anything else is refused")
    func emptyBodies() throws {
        #expect(throws: Never.self) { try WireJSON.decode(Empty.self, from: ByteBuffer()) }
        #expect(throws: Never.self) { try WireJSON.decode(Empty.self, from: ByteBuffer(string: " { } ")) }
        for text in ["[]", "1", "null", "\"x\"", "true", #"[{"a":1}]"#] {
            let error = #expect(throws: WireError.self) { try WireJSON.decode(Empty.self, from: ByteBuffer(string: text)) }
            #expect(
                error?.code == .invalidRequest && error?.message.hasPrefix("the body must be an object") == true,
                "\(text): \(error.map(String.init(describing:)) ?? "")")
        }
        let member = #expect(throws: WireError.self) { try WireJSON.decode(Empty.self, from: ByteBuffer(string: #"{"a":1}"#)) }
        #expect(member?.message.hasPrefix("unknown member 'a'") == true)
    }

    @Test("key ids and token object ids have one spelling each")
    func oneSpelling() {
        #expect(KeyID(kid: "standard/v2") == KeyID(name: "standard", version: 2))
        for kid in ["standard/v+2", "standard/v02", "standard/v-1", "standard/v", "standard/v2 ", "/v2", "standard/v٢"] {
            #expect(KeyID(kid: kid) == nil, "\(kid)")
        }
        #expect(KeysAdoptRequest(name: "k", id: "0aFf").idBytes == [0x0A, 0xFF])
        for id in ["+f", "-0", "0x", " f", "0g"] {
            #expect(KeysAdoptRequest(name: "k", id: id).idBytes == nil, "\(id)")
        }
        #expect(throws: WireError.self) { try KeysAdoptRequest(name: "k", label: "a\u{200B}b").validate() }
    }

    /// A body type with a floating-point field, which no body of the protocol has.
    struct WithFraction: Decodable {
        var rate: Double
    }

    @Test("the decoder has no floating-point: a Double field is refused, whatever the number")
    func noFloatingPoint() {
        for number in ["1", "1.5", "1e3"] {
            let error = #expect(throws: WireError.self) { try WireJSON.decode(WithFraction.self, from: ByteBuffer(string: #"{"rate":\#(number)}"#)) }
            #expect(error?.code == .invalidRequest && error?.message.contains("'rate'") == true)
        }
    }

    @Test("the request decoding path names no floating-point type, nor a decoder that would read through one")
    func noFloatingPointInSource() throws {
        // The files every request body passes through, from frame to validated value.
        let files = [
            "Sources/CanonicalJSON/StrictJSON.swift", "Sources/CanonicalJSON/StrictJSONDecoder.swift", "Sources/CanonicalJSON/JSONScanner.swift",
            "Sources/Wire/WireJSON.swift", "Sources/Wire/Messages.swift", "Sources/Wire/MessagesJSON.swift", "Sources/Wire/ApprovalMessages.swift",
            "Sources/Wire/AuditMessages.swift", "Sources/Wire/KeyMessages.swift", "Sources/Wire/TextRules.swift",
        ]
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let forbidden = ["Double", "Float", "Decimal", "NSNumber", "JSONDecoder", "JSONSerialization"]
        for file in files {
            let text = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                // The decoder's refusals name the types they refuse.
                guard !line.contains("refuseFraction()"), !line.trimmingCharacters(in: .whitespaces).hasPrefix("//") else { continue }
                for word in forbidden where line.contains(try Regex("\\b\(word)\\b")) {
                    Issue.record("\(file):\(number + 1) names \(word): \(line)")
                }
            }
        }
    }
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        self.replacing(target, with: replacement)
    }
}
