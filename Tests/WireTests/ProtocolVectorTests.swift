import CanonicalJSON
import Crypto
import Foundation
import NIOCore
import Signing
import Testing
import Wire

/// Checks the test vectors published in docs/protocol.md against this implementation.
@Suite("docs/protocol.md test vectors")
struct ProtocolVectorTests {
    static let document: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/protocol.md")
        return (try? String(contentsOf: url, encoding: .utf8)) ?? ""
    }()

    /// The fenced block after `<!-- vector: name -->`.
    static func vector(_ name: String) throws -> String {
        let lines = Self.document.components(separatedBy: "\n")
        let marker = try #require(lines.firstIndex(of: "<!-- vector: \(name) -->"), "vector '\(name)' is in docs/protocol.md")
        let open = try #require(lines[(marker + 1)...].firstIndex { $0.hasPrefix("```") })
        let close = try #require(lines[(open + 1)...].firstIndex { $0 == "```" })
        return lines[(open + 1)..<close].joined(separator: "\n")
    }

    static func hex(_ name: String) throws -> [UInt8] {
        let digits = try Self.vector(name).split(whereSeparator: { $0 == " " || $0 == "\n" })
        return try digits.map { try #require(UInt8($0, radix: 16)) }
    }

    static func bytes(_ frame: Frame) -> [UInt8] {
        var buffer = ByteBuffer()
        frame.write(to: &buffer)
        return Array(buffer.readableBytesView)
    }

    @Test("the PING and HELLO frames")
    func frames() throws {
        #expect(Self.bytes(Frame(type: .ping, requestID: 7, body: WireJSON.encode(Empty()))) == (try Self.hex("ping-frame")))
        let hello = Frame(type: .hello, requestID: 1, body: WireJSON.encode(Hello(principal: "agent-7", client: "example")))
        #expect(Self.bytes(hello) == (try Self.hex("hello-frame")))
        var buffer = ByteBuffer(bytes: try Self.hex("hello-frame"))
        var decoder = FrameDecoder()
        #expect(try decoder.decodeFrame(from: &buffer) == hello)
    }

    @Test("the FRAME_TOO_LARGE answer")
    func frameTooLarge() throws {
        let error = WireError.frameTooLarge(length: UInt64(UInt32.max), maximum: WireProtocol.defaultMaximumFrameLength)
        #expect(Self.bytes(Frame(type: .error, requestID: 0, body: WireJSON.encode(error))) == (try Self.hex("frame-too-large")))
    }

    @Test("the handshake transcript, and the Ed25519 signature byte for byte")
    func ed25519Handshake() throws {
        let challenge = Array(UInt8(0xA0)...UInt8(0xBF))
        #expect(Base64URL.encode(challenge) == (try Self.vector("challenge-b64url")))
        let transcript = Handshake.transcript(version: 1, principal: "agent-7", challenge: challenge)
        #expect(transcript == (try Self.hex("transcript")))

        let key = try CredentialPrivateKey(algorithm: .ed25519, rawRepresentation: try Self.hex("ed25519-seed"))
        #expect(Array(key.publicKey.rawRepresentation) == (try Self.hex("ed25519-public-key")))
        let signature = try key.signature(for: transcript)
        #expect(signature == (try Self.hex("ed25519-signature")))
        #expect(key.publicKey.isValidSignature(signature, for: transcript))

        let auth = Frame(type: .auth, requestID: 2, body: WireJSON.encode(Auth(algorithm: .ed25519, signature: Base64URL.encode(signature))))
        #expect(Self.bytes(auth) == (try Self.hex("auth-frame")))
    }

    @Test("the ES256 signature verifies, and fails for another challenge")
    func es256Handshake() throws {
        let transcript = try Self.hex("transcript")
        let publicKey = try CredentialPublicKey(algorithm: .es256, rawRepresentation: try Self.hex("es256-public-key"))
        let signature = try Self.hex("es256-signature")
        #expect(publicKey.isValidSignature(signature, for: transcript))
        var other = transcript
        other[other.count - 1] ^= 1
        #expect(!publicKey.isValidSignature(signature, for: other))
        let key = try CredentialPrivateKey(algorithm: .es256, rawRepresentation: Array(UInt8(0x11)...UInt8(0x30)))
        #expect(key.publicKey.rawRepresentation == publicKey.rawRepresentation)
    }

    @Test("the canonical escaping of every control character, DEL, quote, backslash, '/' and non-ASCII")
    func canonicalEscapes() throws {
        let controls = String(String.UnicodeScalarView((0..<0x20).map { Unicode.Scalar(UInt8($0)) }))
        let value = controls + "\u{7F}\"\\/é\u{2028}😀"
        var json = CanonicalJSON()
        json.string(value)
        #expect(json.bytes == (try Self.hex("canonical-string")))
        // The strict reader takes the same bytes back to the same text (less U+0000, which no field accepts).
        let withoutNUL = Array(json.bytes[..<1] + json.bytes[7...])
        #expect(try StrictJSONDecoder().decode(String.self, from: withoutNUL) == String(value.dropFirst()))
    }

    @Test("the canonical intent and its hash")
    func intentHash() throws {
        let intent = Intent(description: "2 USB-C cables", lineItems: [LineItem(description: "USB-C cable", quantity: 2, unitAmount: 625)])
        #expect(String(buffer: WireJSON.encode(intent)) == (try Self.vector("intent-canonical")))
        let digest = SHA256.hash(data: Array(try Self.vector("intent-canonical").utf8))
        #expect(Base64URL.encode(Array(digest)) == (try Self.vector("intent-hash")))
    }
}
