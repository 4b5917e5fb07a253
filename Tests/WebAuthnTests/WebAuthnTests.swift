import Crypto
import Foundation
import Testing
import WebAuthn

/// The relying party's checks against the W3C's published test vectors, and against a software authenticator made
/// here for every way a registration or an assertion can be wrong.
@Suite("WebAuthn: registration and assertion checks")
struct WebAuthnTests {
    static func hex(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            bytes.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }

    // WebAuthn Level 3, §16 "Test Vectors", ES256 credential, attestation "none" (w3c/webauthn index.bs).
    enum W3C {
        static let registrationChallenge = hex("00c30fb78531c464d2b6771dab8d7b603c01162f2fa486bea70f283ae556e130")
        static let credentialID = hex("f91f391db4c9b2fde0ea70189cba3fb63f579ba6122b33ad94ff3ec330084be4")
        static let registrationClientData = hex(
            "7b2274797065223a22776562617574686e2e637265617465222c226368616c6c656e6765223a22414d4d507434557878475453746e63647134313759447742466938767049612d7077386f4f755657345441222c226f726967696e223a2268747470733a2f2f6578616d706c652e6f7267222c2263726f73734f726967696e223a66616c73652c22657874726144617461223a22636c69656e74446174614a534f4e206d617920626520657874656e6465642077697468206164646974696f6e616c206669656c647320696e20746865206675747572652c207375636820617320746869733a20426b5165446a646354427258426941774a544c453551227d"
        )
        static let attestationObject = hex(
            "a363666d74646e6f6e656761747453746d74a068617574684461746158a4bfabc37432958b063360d3ad6461c9c4735ae7f8edd46592a5e0f01452b2e4b559000000008446ccb9ab1db374750b2367ff6f3a1f0020f91f391db4c9b2fde0ea70189cba3fb63f579ba6122b33ad94ff3ec330084be4a5010203262001215820afefa16f97ca9b2d23eb86ccb64098d20db90856062eb249c33a9b672f26df61225820930a56b87a2fca66334b03458abf879717c12cc68ed73290af2e2664796b9220"
        )
        static let publicKeyX963 = hex(
            "04afefa16f97ca9b2d23eb86ccb64098d20db90856062eb249c33a9b672f26df61930a56b87a2fca66334b03458abf879717c12cc68ed73290af2e2664796b9220")
        static let assertionChallenge = hex("39c0e7521417ba54d43e8dc95174f423dee9bf3cd804ff6d65c857c9abf4d408")
        static let authenticatorData = hex("bfabc37432958b063360d3ad6461c9c4735ae7f8edd46592a5e0f01452b2e4b51900000000")
        static let assertionClientData = hex(
            "7b2274797065223a22776562617574686e2e676574222c226368616c6c656e6765223a224f63446e55685158756c5455506f334a5558543049393770767a7a59425039745a63685879617630314167222c226f726967696e223a2268747470733a2f2f6578616d706c652e6f7267222c2263726f73734f726967696e223a66616c73657d"
        )
        static let signature = hex(
            "3046022100f50a4e2e4409249c4a853ba361282f09841df4dd4547a13a87780218deffcd380221008480ac0f0b93538174f575bf11a1dd5d78c6e486013f937295ea13653e331e87"
        )
        /// The vectors' authenticator does not verify the user (flags UP, BE, BS).
        static var relyingParty: RelyingParty {
            var party = RelyingParty(id: "example.org", origins: ["https://example.org"])
            party.requiresUserVerification = false
            return party
        }
    }

    @Test("the W3C vectors: a none-attestation ES256 registration, then an assertion with counter 0 after 0")
    func w3cVectors() throws {
        let registration = try W3C.relyingParty.register(
            clientDataJSON: W3C.registrationClientData, attestationObject: W3C.attestationObject, challenge: W3C.registrationChallenge)
        #expect(registration.credentialID == W3C.credentialID)
        #expect(registration.attestationFormat == "none")
        #expect(registration.signCount == 0)
        guard case .es256(let key) = registration.publicKey else { throw WebAuthnError(.unsupportedKey, "not ES256") }
        #expect(Array(key.x963Representation) == W3C.publicKeyX963)

        let assertion = RelyingParty.Assertion(
            credentialID: W3C.credentialID, clientDataJSON: W3C.assertionClientData, authenticatorData: W3C.authenticatorData, signature: W3C.signature)
        let data = try W3C.relyingParty.verify(assertion, challenge: W3C.assertionChallenge, publicKey: registration.publicKey, storedSignCount: 0)
        #expect(data.flags.contains(.userPresent) && !data.flags.contains(.userVerified))
        // The stored key, read back from its encoding, verifies the same.
        let stored = try COSEKey(encoded: registration.encodedPublicKey)
        _ = try W3C.relyingParty.verify(assertion, challenge: W3C.assertionChallenge, publicKey: stored, storedSignCount: 0)

        // Requiring user verification (as the console does), the same assertion is refused.
        let strict = RelyingParty(id: "example.org", origins: ["https://example.org"])
        #expect(throws: WebAuthnError(.userVerification, "the user was not verified (UV flag clear): a PIN or biometric is required")) {
            try strict.verify(assertion, challenge: W3C.assertionChallenge, publicKey: stored, storedSignCount: 0)
        }
        // Any bit of the signed data changed, the signature fails.
        var tampered = assertion
        tampered.clientDataJSON[tampered.clientDataJSON.count - 3] ^= 0x01
        #expect(throws: WebAuthnError.self) { try W3C.relyingParty.verify(tampered, challenge: W3C.assertionChallenge, publicKey: stored, storedSignCount: 0) }
    }

    @Test("every check refuses its own fault: type, challenge, origin, cross-origin, relying party, presence, verification, counter, signature")
    func refusals() throws {
        let party = RelyingParty(id: "localhost", origins: ["http://localhost:7680"])
        for authenticator in [SoftwareAuthenticator.es256(), SoftwareAuthenticator.ed25519()] {
            let challenge = Array("registration challenge 0123456789".utf8)
            let made = authenticator.register(challenge: challenge, origin: "http://localhost:7680", rpID: "localhost")
            let registration = try party.register(clientDataJSON: made.clientData, attestationObject: made.attestationObject, challenge: challenge)
            #expect(registration.publicKey.algorithm == authenticator.algorithm)
            #expect(registration.credentialID == authenticator.credentialID)

            let issued = Array("assertion challenge 9876543210".utf8)
            func check(_ assertion: RelyingParty.Assertion, stored: UInt32 = 1) throws(WebAuthnError) {
                _ = try party.verify(assertion, challenge: issued, publicKey: registration.publicKey, storedSignCount: stored)
            }
            func reason(_ assertion: RelyingParty.Assertion, stored: UInt32 = 1) -> WebAuthnError.Reason? {
                do {
                    try check(assertion, stored: stored)
                    return nil
                } catch { return error.reason }
            }
            let good = authenticator.assert(challenge: issued, origin: "http://localhost:7680", rpID: "localhost", counter: 2)
            try check(good)
            #expect(reason(good, stored: 2) == .signCount, "the same counter again: a replay or a clone")
            #expect(reason(good, stored: 7) == .signCount)
            #expect(reason(authenticator.assert(challenge: issued, origin: "http://localhost:7680", rpID: "localhost", counter: 0), stored: 0) == nil)
            #expect(
                reason(authenticator.assert(challenge: Array("another".utf8), origin: "http://localhost:7680", rpID: "localhost", counter: 3)) == .challenge)
            #expect(reason(authenticator.assert(challenge: issued, origin: "http://evil.example:7680", rpID: "localhost", counter: 3)) == .origin)
            #expect(reason(authenticator.assert(challenge: issued, origin: "http://localhost:7680", rpID: "evil.example", counter: 3)) == .relyingParty)
            #expect(
                reason(authenticator.assert(challenge: issued, origin: "http://localhost:7680", rpID: "localhost", counter: 3, crossOrigin: true)) == .origin)
            #expect(
                reason(authenticator.assert(challenge: issued, origin: "http://localhost:7680", rpID: "localhost", counter: 3, flags: 0x04)) == .userPresence)
            #expect(
                reason(authenticator.assert(challenge: issued, origin: "http://localhost:7680", rpID: "localhost", counter: 3, flags: 0x01))
                    == .userVerification)
            #expect(
                reason(authenticator.assert(challenge: issued, origin: "http://localhost:7680", rpID: "localhost", counter: 3, type: "webauthn.create"))
                    == .wrongType)
            var forged = authenticator.assert(challenge: issued, origin: "http://localhost:7680", rpID: "localhost", counter: 3)
            forged.signature = SoftwareAuthenticator.es256().assert(challenge: issued, origin: "http://localhost:7680", rpID: "localhost", counter: 3).signature
            #expect(reason(forged) == .signature, "signed by another key")
            // A registration answered to another challenge, or as an assertion, is refused too.
            #expect(throws: WebAuthnError.self) {
                try party.register(clientDataJSON: made.clientData, attestationObject: made.attestationObject, challenge: issued)
            }
            #expect(throws: WebAuthnError.self) {
                try party.register(clientDataJSON: good.clientDataJSON, attestationObject: made.attestationObject, challenge: issued)
            }
        }
    }

    @Test("hostile CBOR is refused, never trusted: truncation, indefinite lengths, huge counts, duplicate keys, deep nesting, trailing bytes")
    func hostileCBOR() {
        let cases: [[UInt8]] = [
            [0xA1, 0x01],  // a map whose value is missing
            [0x5F, 0x41, 0x00, 0xFF],  // an indefinite-length byte string
            [0x9B, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],  // an array claiming 2^63 elements
            [0xA2, 0x01, 0x02, 0x01, 0x03],  // the key 1 twice
            Array(repeating: 0x81, count: 40) + [0x00],  // 40 nested arrays
            [0xC0, 0x00],  // a tag
            [0xF9, 0x3C, 0x00],  // a half-precision float
            [0x01, 0x02],  // a value and a byte more
            [0x7A, 0xFF, 0xFF, 0xFF, 0xFF],  // text longer than the input
            [0xB8, 65] + (0..<65).flatMap { [UInt8(0x18), UInt8($0), UInt8(0x00)] },  // a map of 65 pairs: more than WebAuthn uses
        ]
        for bytes in cases {
            #expect(throws: CBORError.self, "\(bytes)") { try CBOR.decode(bytes) }
        }
        #expect(throws: WebAuthnError.self) { try AuthenticatorData(Array(repeating: 0, count: 36)) }
        // An attested credential whose id length runs past the end.
        #expect(throws: WebAuthnError.self) {
            try AuthenticatorData(Array(repeating: 0, count: 32) + [0x41, 0, 0, 0, 0] + Array(repeating: 0, count: 16) + [0xFF, 0xFF])
        }
    }
}

/// An authenticator in software: what a browser's passkey would answer, with every field under the test's control.
struct SoftwareAuthenticator {
    enum Key {
        case es256(P256.Signing.PrivateKey)
        case ed25519(Curve25519.Signing.PrivateKey)
    }

    let key: Key
    let credentialID: [UInt8]

    static func es256() -> SoftwareAuthenticator { .init(key: .es256(.init()), credentialID: Array((0..<16).map { _ in UInt8.random(in: 0...255) })) }
    static func ed25519() -> SoftwareAuthenticator { .init(key: .ed25519(.init()), credentialID: Array((0..<32).map { _ in UInt8.random(in: 0...255) })) }

    var algorithm: Int {
        switch self.key {
        case .es256: -7
        case .ed25519: -8
        }
    }

    /// The COSE_Key, CBOR-encoded by hand (a map of small integers and byte strings).
    var coseKey: [UInt8] {
        switch self.key {
        case .es256(let key):
            let point = Array(key.publicKey.x963Representation)
            return [0xA5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20] + point[1...32] + [0x22, 0x58, 0x20] + point[33...64]
        case .ed25519(let key):
            return [0xA4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 0x20] + Array(key.publicKey.rawRepresentation)
        }
    }

    func sign(_ message: [UInt8]) -> [UInt8] {
        switch self.key {
        case .es256(let key): Array(try! key.signature(for: message).derRepresentation)
        case .ed25519(let key): Array(try! key.signature(for: message))
        }
    }

    static func clientData(type: String, challenge: [UInt8], origin: String, crossOrigin: Bool = false) -> [UInt8] {
        Array(
            #"{"type":"\#(type)","challenge":"\#(RelyingParty.base64URLEncode(challenge))","origin":"\#(origin)","crossOrigin":\#(crossOrigin)}"#.utf8)
    }

    static func authenticatorData(rpID: String, flags: UInt8, counter: UInt32) -> [UInt8] {
        Array(SHA256.hash(data: Data(rpID.utf8))) + [flags] + withUnsafeBytes(of: counter.bigEndian) { Array($0) }
    }

    func register(challenge: [UInt8], origin: String, rpID: String) -> (clientData: [UInt8], attestationObject: [UInt8]) {
        let clientData = Self.clientData(type: "webauthn.create", challenge: challenge, origin: origin)
        let authData =
            Self.authenticatorData(rpID: rpID, flags: 0x45, counter: 0) + Array(repeating: 0, count: 16) + [
                UInt8(self.credentialID.count >> 8), UInt8(self.credentialID.count & 0xFF),
            ]
            + self.credentialID + self.coseKey
        // {"fmt": "none", "attStmt": {}, "authData": h'…'}
        let object: [UInt8] =
            [0xA3, 0x63] + Array("fmt".utf8) + [0x64] + Array("none".utf8) + [0x67] + Array("attStmt".utf8) + [0xA0] + [0x68] + Array("authData".utf8)
            + [0x59, UInt8(authData.count >> 8), UInt8(authData.count & 0xFF)] + authData
        return (clientData, object)
    }

    func assert(
        challenge: [UInt8], origin: String, rpID: String, counter: UInt32, flags: UInt8 = 0x05, crossOrigin: Bool = false, type: String = "webauthn.get"
    ) -> RelyingParty.Assertion {
        let clientData = Self.clientData(type: type, challenge: challenge, origin: origin, crossOrigin: crossOrigin)
        let authData = Self.authenticatorData(rpID: rpID, flags: flags, counter: counter)
        return RelyingParty.Assertion(
            credentialID: self.credentialID, clientDataJSON: clientData, authenticatorData: authData,
            signature: self.sign(authData + Array(SHA256.hash(data: clientData))))
    }
}
