import PKCS11
import TestSupport
import Testing

@Suite("AES-256 keys on the token")
struct AESTests {
    @Test("AES-GCM seals and opens on the token; the key's value cannot be read")
    func roundTrip() async throws {
        try await withFixturePool { pool in
            let label = SoftHSMFixture.uniqueLabel("aes")
            let key = try await pool.withSession { try $0.generateAES256Key(label: label, id: Array(label.utf8), usage: .encryptDecrypt) }
            let secret: [UInt8] = (0..<32).map { UInt8($0) }
            let context = Array("key micro/v1".utf8)
            try await pool.withSession { (session: borrowing PKCS11Session) throws in
                let sealed = try session.encryptAESGCM(secret, with: key, authenticating: context)
                #expect(sealed.combined.count == 12 + 32 + 16)
                #expect(!sealed.combined.contains(subsequence: secret))
                #expect(try session.decryptAESGCM(sealed, with: key, authenticating: context) == secret)

                let again = try session.encryptAESGCM(secret, with: key, authenticating: context)
                #expect(again.nonce != sealed.nonce, "every seal takes a fresh nonce")

                #expect(try session.boolAttribute(.sensitive, of: key))
                #expect(try !session.boolAttribute(.extractable, of: key))
                #expect(try session.boolAttribute(.encrypt, of: key))
                #expect(try !session.boolAttribute(.wrap, of: key))
                #expect(try !session.boolAttribute(.sign, of: key))
                let error = #expect(throws: PKCS11Error.self) { try session.attribute(.value, of: key) }
                #expect(error?.code == .attributeSensitive)
                try session.destroyObject(key)
            }
        }
    }

    @Test("a changed ciphertext, nonce or context does not open")
    func tamperingIsDetected() async throws {
        try await withFixturePool { pool in
            let label = SoftHSMFixture.uniqueLabel("aes-tamper")
            let key = try await pool.withSession { try $0.generateAES256Key(label: label, id: Array(label.utf8), usage: .encryptDecrypt) }
            try await pool.withSession { (session: borrowing PKCS11Session) throws in
                let context = Array("key micro/v1".utf8)
                let sealed = try session.encryptAESGCM(Array(repeating: 7, count: 32), with: key, authenticating: context)
                for position in [0, 12, sealed.combined.count - 1] {
                    var bytes = sealed.combined
                    bytes[position] ^= 0x80
                    #expect(throws: PKCS11Error.self) {
                        try session.decryptAESGCM(AESGCMSealedData(combined: bytes), with: key, authenticating: context)
                    }
                }
                #expect(throws: PKCS11Error.self) {
                    try session.decryptAESGCM(sealed, with: key, authenticating: Array("key micro/v2".utf8))
                }
                let short = #expect(throws: KeyError.self) { try AESGCMSealedData(combined: [1, 2, 3]) }
                #expect(short?.code == .malformedCiphertext)
                // The session is still usable after failed decryptions.
                #expect(try session.decryptAESGCM(sealed, with: key, authenticating: context) == Array(repeating: 7, count: 32))
                try session.destroyObject(key)
            }
        }
    }

    @Test("a wrap-only key cannot encrypt")
    func usageIsEnforcedByTheToken() async throws {
        try await withFixturePool { pool in
            let label = SoftHSMFixture.uniqueLabel("aes-wrap")
            let key = try await pool.withSession { try $0.generateAES256Key(label: label, id: Array(label.utf8), usage: .wrapUnwrap) }
            try await pool.withSession { (session: borrowing PKCS11Session) throws in
                #expect(try session.boolAttribute(.wrap, of: key))
                #expect(try !session.boolAttribute(.encrypt, of: key))
                let error = #expect(throws: PKCS11Error.self) { try session.encryptAESGCM([1, 2, 3], with: key, authenticating: []) }
                #expect(error?.function == "C_EncryptInit")
                try session.destroyObject(key)
            }
        }
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence: [UInt8]) -> Bool {
        guard subsequence.count <= self.count else { return false }
        return (0...(self.count - subsequence.count)).contains { Array(self[$0..<($0 + subsequence.count)]) == subsequence }
    }
}
