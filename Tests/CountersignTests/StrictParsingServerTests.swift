import CountersignClient
import Foundation
import NIOCore
import Signing
import TestSupport
import Testing
import Wire

/// What is signed is exactly what was sent, over a real socket: hostile bodies are refused with their codes
/// and change nothing, and whatever the server signs is what Python's `json` module reads from the same bytes.
@Suite("Strict parsing, end to end", .serialized, .timeLimit(.minutes(5)))
struct StrictParsingServerTests {
    @Test("every hostile body gets its documented code on a live connection, which stays usable; nothing is recorded or signed")
    func hostileBodies() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-hostile"))
            let auditor = try await server.connect(server.admin)
            let before = try await auditor.auditEntries(from: 0, limit: 1).size
            // Bodies past the frame limit (64 KiB) are FRAME_TOO_LARGE before any JSON is read; BadInputTests has them.
            let sent = HostileBodies.all.filter { $0.bytes.count < 60_000 }
            #expect(sent.count >= 60)
            for (index, hostile) in sent.enumerated() {
                let answer = try await agent.send(Frame(type: .authorize, requestID: UInt32(1000 + index), body: ByteBuffer(bytes: hostile.bytes)))
                #expect(answer.type == .error && answer.requestID == UInt32(1000 + index), "\(hostile.name)")
                let error = try WireJSON.decode(WireError.self, from: answer.body)
                #expect(error.code == hostile.code, "\(hostile.name): \(error)")
                #expect(error.message.contains(hostile.says), "\(hostile.name): \(error.message)")
            }
            #expect(try await auditor.auditEntries(from: 0, limit: 1).size == before, "a refused body is neither decided nor recorded")
            let valid = try await agent.send(Frame(type: .authorize, requestID: 7, body: ByteBuffer(bytes: HostileBodies.body())))
            #expect(valid.type == MessageType.authorize.response, "the same connection still authorizes")
            #expect(try await auditor.auditEntries(from: 0, limit: 1).size == before + 1)
            await agent.close()
            await auditor.close()
        }
    }

    @Test("20,000 generated and mutated bodies: the server refuses each, or signs the claims Python's json reads from the same bytes")
    func differentialAgainstPython() async throws {
        try await withServer { server in
            let agentID = "agent-differential"
            let agent = try await server.connect(try await server.addPrincipal(agentID))
            var generator = BodyGenerator(seed: 12)
            let bodies = (0..<20_000).map { generator.body(number: $0) }
            var authorized: [(body: [UInt8], jws: String)] = []
            var refusals: [ErrorCode: Int] = [:]
            for batch in stride(from: 0, to: bodies.count, by: 48) {
                let answers = try await withThrowingTaskGroup(of: (Int, Frame).self) { group in
                    for index in batch..<min(batch + 48, bodies.count) {
                        group.addTask {
                            (index, try await agent.send(Frame(type: .authorize, requestID: UInt32(index + 1), body: ByteBuffer(bytes: bodies[index]))))
                        }
                    }
                    return try await group.reduce(into: [(Int, Frame)]()) { $0.append($1) }
                }
                for (index, frame) in answers {
                    if frame.type == .error {
                        let error = try WireJSON.decode(WireError.self, from: frame.body)
                        refusals[error.code, default: 0] += 1
                    } else {
                        let outcome = try WireJSON.decode(AuthorizeOutcome.self, from: frame.body)
                        guard case .authorized(let authorization) = outcome else {
                            Issue.record("no tier here needs approval: \(outcome)")
                            continue
                        }
                        authorized.append((bodies[index], authorization.jws))
                    }
                }
            }
            await agent.close()
            print("differential: \(authorized.count) authorized, refused \(refusals)")
            #expect(refusals[.internalError] == nil, "\(refusals)")
            let documented: Set<ErrorCode> = [.malformedJSON, .invalidRequest, .idempotencyConflict, .currencyNotAccepted, .amountAboveLimit]
            #expect(Set(refusals.keys).isSubset(of: documented), "\(refusals)")
            // Both sides must be well represented, or the comparison proves little.
            #expect(authorized.count >= 6_000, "authorized \(authorized.count), refused \(refusals)")
            #expect(refusals.values.reduce(0, +) >= 6_000, "authorized \(authorized.count), refused \(refusals)")

            let cases = FileManager.default.temporaryDirectory.appendingPathComponent("differential-\(UUID().uuidString).jsonl")
            defer { try? FileManager.default.removeItem(at: cases) }
            var lines = ""
            for (body, jws) in authorized {
                lines += #"{"agent":"\#(agentID)","body":"\#(Data(body).base64EncodedString())","jws":"\#(jws)"}"# + "\n"
            }
            try lines.write(to: cases, atomically: true, encoding: .utf8)
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/differential.py")
            let result = try await ProcessResult.run(
                executable: URL(fileURLWithPath: "/usr/bin/env"), arguments: ["python3", script.path, cases.path],
                environment: ProcessInfo.processInfo.environment
            )
            #expect(result.status == 0, "\(result.standardOutput)\(result.standardError)")
            #expect(result.standardOutput.contains(#""checked": \#(authorized.count), "mismatches": 0"#), "\(result.standardOutput)")
        }
    }
}

/// AUTHORIZE bodies as agents' tooling writes them (any member order, whitespace, escapes, nulls for absent
/// optionals, non-ASCII), and as attackers and bugs bend them (repeated and unknown members, numbers in
/// every form, bytes flipped, inserted and dropped). Seeded: a failure names a body that can be made again.
struct BodyGenerator {
    var random: SplitMix64

    init(seed: UInt64) {
        self.random = SplitMix64(state: seed)
    }

    mutating func next() -> UInt64 {
        self.random.next()
    }

    mutating func below(_ bound: Int) -> Int { Int(self.next() % UInt64(bound)) }
    mutating func chance(_ percent: Int) -> Bool { self.below(100) < percent }
    mutating func pick<T>(_ choices: [T]) -> T { choices[self.below(choices.count)] }

    /// A JSON string literal for a text made of pieces that reading must get right, now and then one that
    /// the field refuses.
    mutating func text(_ pieces: (good: [String], refused: [String]), count: ClosedRange<Int>) -> String {
        let length = count.lowerBound + self.below(count.upperBound - count.lowerBound + 1)
        return "\"" + (0..<length).map { _ in self.chance(2) ? self.pick(pieces.refused) : self.pick(pieces.good) }.joined() + "\""
    }

    static let textPieces = (
        good: [
            "a", "Z", "0", " ", "-", "é", "😀", "ß", "\\\"", "\\\\", "\\/", "/", "\\n", "\\t", "\\u00e9", "\\ud83d\\ude00", "\\u0041", "\\u2028", "\u{2028}",
            "cable",
        ],
        refused: ["\\u0000", "\\u001b", "\u{7F}", "\\u007f", "\\u202e", "\\ud800", "\\uffff"]
    )
    static let identifierPieces = (
        good: ["m", "-", "4", "2", "é", "\\u0041", "\\/", "_", ".", "😀", " "],
        refused: ["\\u0007", "\\u200b", "\\u0000"]
    )

    mutating func number(_ value: Int64) -> String {
        guard self.chance(4) else { return String(value) }
        return self.pick([
            "\(value).0", "\(value)e0", "\(value)E+0", "0\(value)", "-\(value)", "\(value).000000000000000000001", "\(value - 1).99999999999999999999",
            "\(value)00000000000000000000", "1e400", "\(Double(value))", "\"\(value)\"", "null", "true", "[\(value)]", "-0",
        ])
    }

    mutating func name(_ name: String) -> String {
        // The same name spelled with an escape: one member to every reader.
        guard self.chance(5), let first = name.unicodeScalars.first else { return "\"\(name)\"" }
        return "\"\\u00" + String(first.value, radix: 16) + name.dropFirst() + "\""
    }

    mutating func object(_ members: [(String, String)]) -> String {
        var members = members
        for index in members.indices.reversed() {
            members.swapAt(index, self.below(index + 1))
        }
        let space = self.chance(20) ? self.pick([" ", "\n", "\t", "  \r\n"]) : ""
        return "{" + space + members.map { "\(self.name($0.0))\(space):\(space)\($0.1)" }.joined(separator: ",\(space)") + space + "}"
    }

    mutating func body(number: Int) -> [UInt8] {
        let quantity = Int64(1 + self.below(5)), unit = Int64(1 + self.below(8_000))
        var item: [(String, String)] = [
            ("description", self.text(Self.textPieces, count: 1...6)), ("quantity", self.number(quantity)), ("unit_amount", self.number(unit)),
        ]
        if self.chance(30) { item.append(("category", self.text(Self.identifierPieces, count: 1...4))) }
        var intent: [(String, String)] = [("description", self.text(Self.textPieces, count: 1...10))]
        switch self.below(4) {
        case 0: intent.append(("order_hash", self.text(Self.identifierPieces, count: 1...8)))
        case 1: intent += [("line_items", "[" + self.object(item) + "]"), ("order_hash", "null")]
        default: intent.append(("line_items", "[" + self.object(item) + "]"))
        }
        var members: [(String, String)] = [
            ("idempotency_key", "\"diff-\(number)\""), ("amount", self.number(quantity * unit)),
            ("currency", self.chance(90) ? self.pick(["\"USD\"", "\"JPY\"", "\"U\\u0053D\""]) : self.pick(["\"usd\"", "\"EUR\""])),
            ("merchant_id", self.text(Self.identifierPieces, count: 1...8)),
            ("merchant_category_code", self.chance(95) ? self.pick(["\"5734\"", "\"5411\""]) : "\"57a4\""),
        ]
        // What attackers and bugs add: repeated members, members nobody defined.
        if self.chance(5) { intent.append(self.pick([("description", "\"other\""), ("shipping_address", "\"1 Main St\""), ("order_hash", "\"h\"")])) }
        if self.chance(5) { members.append(self.pick([("merchant_id", "\"m-evil\""), ("amount", "1"), ("note", "\"hi\""), ("intent", "{}")])) }
        members.append(("intent", self.object(intent)))
        var bytes = Array(self.object(members).utf8)
        // A third of the bodies lose, gain or change a few bytes.
        if self.chance(33) {
            let interesting = Array(#"{}[]":,\/ -0123456789.eEnultrfu"#.utf8) + [0x00, 0x1F, 0x7F, 0x80, 0xC3, 0xA9, 0xED, 0xA0, 0xFF, 0xEF, 0xBB, 0xBF]
            for _ in 0..<(1 + self.below(3)) where !bytes.isEmpty {
                let at = self.below(bytes.count)
                switch self.below(4) {
                case 0: bytes[at] = self.pick(interesting)
                case 1: bytes.remove(at: at)
                case 2: bytes.insert(self.pick(interesting), at: at)
                default:
                    let end = min(bytes.count, at + 1 + self.below(12))
                    bytes.insert(contentsOf: bytes[at..<end], at: at)
                }
            }
        }
        return bytes
    }
}
