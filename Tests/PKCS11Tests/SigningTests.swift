import Crypto
import Foundation
import NIOPosix
import PKCS11
import TestSupport
import Testing

@Suite("EC P-256 keys on the token")
struct SigningTests {
    @Test("a token key signs a SHA-256 digest and swift-crypto verifies it")
    func signAndVerify() async throws {
        try await withFixturePool { pool in
            let label = SoftHSMFixture.uniqueLabel("sign")
            let pair = try await pool.withSession { try $0.generateP256SigningKeyPair(label: label, id: Array(label.utf8)) }
            let message = Array("pay merchant m-42 1250 USD".utf8)
            let (point, raw) = try await pool.withSession { (session: borrowing PKCS11Session) throws in
                (
                    try session.p256PublicKey(pair.publicKey).x963Representation,
                    try session.signECDSA(digest: SHA256.hash(data: message), with: pair.privateKey).rawRepresentation
                )
            }
            #expect(raw.count == 64)
            let publicKey = try P256.Signing.PublicKey(x963Representation: point)
            let signature = try P256.Signing.ECDSASignature(rawRepresentation: raw)
            #expect(publicKey.isValidSignature(signature, for: message))
            #expect(!publicKey.isValidSignature(signature, for: message + [0x00]))
            var tampered = Array(raw)
            tampered[10] ^= 0x01
            #expect(!publicKey.isValidSignature(try P256.Signing.ECDSASignature(rawRepresentation: tampered), for: message))
        }
    }

    @Test("a buffer too small is grown to the length the token names, and the session is left with no operation open")
    func bufferTooSmall() async throws {
        try await withFixturePool(maximumSessions: 1) { pool in
            let label = SoftHSMFixture.uniqueLabel("small")
            let pair = try await pool.withSession { try $0.generateP256SigningKeyPair(label: label, id: Array(label.utf8)) }
            let point = try await pool.withSession { try $0.p256PublicKey(pair.publicKey).x963Representation }
            let publicKey = try P256.Signing.PublicKey(x963Representation: point)
            let digest = SHA256.hash(data: Array("a small buffer".utf8))
            // One session: the second signature runs on the session the first one used.
            let raw = try await pool.withSession { try $0.sign(mechanism: .ecdsa, data: Array(digest), with: pair.privateKey, maximumLength: 8) }
            #expect(raw.count == 64)
            #expect(publicKey.isValidSignature(try P256.Signing.ECDSASignature(rawRepresentation: raw), for: digest))
            let next = try await pool.withSession { try $0.signECDSA(digest: digest, with: pair.privateKey) }
            #expect(publicKey.isValidSignature(next, for: digest))
        }
    }

    @Test("8 concurrent tasks × 250 signatures through the pool all verify")
    func concurrentSignatures() async throws {
        try await withFixturePool(maximumSessions: 4) { pool in
            let label = SoftHSMFixture.uniqueLabel("concurrent")
            let pair = try await pool.withSession { try $0.generateP256SigningKeyPair(label: label, id: Array(label.utf8)) }
            let point = try await pool.withSession { try $0.p256PublicKey(pair.publicKey).x963Representation }
            let publicKey = try P256.Signing.PublicKey(x963Representation: point)

            let signed = try await withThrowingTaskGroup(of: [Signed].self) { group in
                for task in 0..<8 {
                    group.addTask {
                        var results: [Signed] = []
                        for index in 0..<250 {
                            let message = Array("task \(task) signature \(index)".utf8)
                            let signature = try await pool.withSession { (session: borrowing PKCS11Session) throws in
                                try session.signECDSA(digest: SHA256.hash(data: message), with: pair.privateKey).rawRepresentation
                            }
                            results.append(Signed(message: message, signature: signature))
                        }
                        return results
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(signed.count == 2000)
            let valid = try signed.filter { try publicKey.isValidSignature(P256.Signing.ECDSASignature(rawRepresentation: $0.signature), for: $0.message) }
            #expect(valid.count == 2000)
            #expect(Set(signed.map(\.signature)).count == 2000, "ECDSA signatures are randomized")
            #expect(pool.statistics.open <= 4)
            #expect(pool.statistics.inUse == 0)
        }
    }

    @Test("the private key is sensitive, never extractable, sign-only, and its value cannot be read")
    func privateKeyStaysOnTheToken() async throws {
        try await withFixturePool { pool in
            let label = SoftHSMFixture.uniqueLabel("sensitive")
            let pair = try await pool.withSession { try $0.generateP256SigningKeyPair(label: label, id: Array(label.utf8)) }
            try await pool.withSession { (session: borrowing PKCS11Session) throws in
                let key = pair.privateKey
                #expect(try session.boolAttribute(.sensitive, of: key))
                #expect(try !session.boolAttribute(.extractable, of: key))
                #expect(try session.boolAttribute(.alwaysSensitive, of: key))
                #expect(try session.boolAttribute(.neverExtractable, of: key))
                #expect(try session.boolAttribute(.token, of: key))
                #expect(try session.boolAttribute(.private, of: key))
                #expect(try session.boolAttribute(.sign, of: key))
                #expect(try !session.boolAttribute(.decrypt, of: key))
                #expect(try !session.boolAttribute(.derive, of: key))
                #expect(try !session.boolAttribute(.unwrap, of: key))
                let error = #expect(throws: PKCS11Error.self) { try session.attribute(.value, of: key) }
                #expect(error?.code == .attributeSensitive)
                #expect(error?.function == "C_GetAttributeValue")
            }
        }
    }

    @Test("keys are found by label and by id; a destroyed key is gone")
    func findAndDestroy() async throws {
        try await withFixturePool { pool in
            let label = SoftHSMFixture.uniqueLabel("find")
            let id: [UInt8] = Array("id-\(label)".utf8)
            let pair = try await pool.withSession { try $0.generateP256SigningKeyPair(label: label, id: id) }
            try await pool.withSession { (session: borrowing PKCS11Session) throws in
                #expect(try session.findKey(.privateKey, label: label) == pair.privateKey)
                #expect(try session.findKey(.privateKey, id: id) == pair.privateKey)
                #expect(try session.findKey(.publicKey, label: label, id: id) == pair.publicKey)
                try session.destroyObject(pair.privateKey)
                let missing = #expect(throws: KeyError.self) { try session.findKey(.privateKey, label: label) }
                #expect(missing?.code == .keyNotFound)
                let signing = #expect(throws: PKCS11Error.self) {
                    try session.signECDSA(digest: SHA256.hash(data: [1, 2, 3]), with: pair.privateKey)
                }
                #expect(signing?.function == "C_SignInit")
                try session.destroyObject(pair.publicKey)
            }
        }
    }

    @Test("a key that is not on P-256 is refused when its public key is read")
    func publicKeyOfWrongObject() async throws {
        try await withFixturePool { pool in
            let label = SoftHSMFixture.uniqueLabel("aes-not-ec")
            let key = try await pool.withSession { try $0.generateAES256Key(label: label, id: Array(label.utf8), usage: .encryptDecrypt) }
            try await pool.withSession { (session: borrowing PKCS11Session) throws in
                #expect(throws: PKCS11Error.self) { try session.p256PublicKey(key) }
                try session.destroyObject(key)
            }
        }
    }
}

struct Signed: Sendable {
    var message: [UInt8]
    var signature: Data
}

/// Runs `body` with a pool on the fixture token and a thread pool of its own, and closes both.
func withFixturePool(
    maximumSessions: Int = 2,
    timers: PKCS11SessionPool.Timers = .shared,
    _ body: (PKCS11SessionPool) async throws -> Void
) async throws {
    let fixture = try SoftHSMFixture.shared()
    let threadPool = NIOThreadPool(numberOfThreads: 2)
    threadPool.start()
    let pool = PKCS11SessionPool(
        token: try fixture.token(),
        pin: fixture.pin(),
        configuration: .init(maximumSessions: maximumSessions, acquireTimeout: .seconds(30)),
        threadPool: threadPool,
        timers: timers
    )
    do {
        try await body(pool)
    } catch {
        await pool.close()
        try await threadPool.shutdownGracefully()
        throw error
    }
    await pool.close()
    try await threadPool.shutdownGracefully()
}
