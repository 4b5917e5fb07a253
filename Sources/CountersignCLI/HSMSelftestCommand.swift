import ArgumentParser
import CanonicalJSON
import CountersignCore
import Crypto
import NIOPosix
import PKCS11

/// `countersign hsm selftest`: proves on the real token everything Countersign will ask of it, with
/// throw-away keys that are destroyed afterwards.
struct HSMSelftestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Generate a throw-away key pair on the token, sign, verify with swift-crypto, seal with AES, destroy the keys."
    )

    @OptionGroup var hsm: HSMOptions

    func run() async throws {
        let started = ContinuousClock.now
        var steps = StepPrinter()

        let module = try await steps.run("load module \(self.hsm.resolvedModulePath)") {
            let module = try self.hsm.loadModule()
            let info = try module.info()
            return (module, "\(info.manufacturer) \(info.libraryVersion), Cryptoki \(info.cryptokiVersion)")
        }
        let token = try await steps.run("find token") {
            let token = try self.hsm.findToken(on: module)
            return (token, "'\(token.info.label)' in slot \(token.slot)")
        }
        try await steps.run("check mechanisms") {
            let offered = try token.mechanisms()
            let missing = RequiredMechanisms.all.map(\.0).filter { !offered.contains($0) }
            guard missing.isEmpty else {
                throw ValidationError("missing \(missing.map(\.description).joined(separator: ", "))")
            }
            return ((), RequiredMechanisms.all.compactMap(\.0.name).joined(separator: ", "))
        }

        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let pool = PKCS11SessionPool(token: token, pin: try self.hsm.pin(), configuration: .init(maximumSessions: 1), threadPool: threadPool)
        let passed = await self.exercise(pool, steps: &steps)
        await pool.close()
        try? await threadPool.shutdownGracefully()
        try? module.finalize()
        guard passed else { throw ExitCode.failure }
        print("selftest passed in \(StepPrinter.milliseconds(ContinuousClock.now - started)) ms")
    }

    /// The steps that need a logged-in session; the keys they create are destroyed whatever happens.
    private func exercise(_ pool: PKCS11SessionPool, steps: inout StepPrinter) async -> Bool {

        var created: [ObjectHandle] = []
        do {
            try await steps.run("log in") {
                try await pool.withSession { _ in }
                return ((), "user PIN accepted")
            }
            let label = "countersign-selftest-" + HexDigits.string(randomBytes(4))
            let keyPair = try await steps.run("generate P-256 key pair") {
                let pair = try await pool.withSession { session in
                    try session.generateP256SigningKeyPair(label: label, id: randomBytes(16))
                }
                return (pair, "label '\(label)'")
            }
            created = [keyPair.privateKey, keyPair.publicKey]

            try await steps.run("check the private key cannot leave the token") {
                try await pool.withSession { session in
                    guard try session.boolAttribute(.sensitive, of: keyPair.privateKey),
                        try !session.boolAttribute(.extractable, of: keyPair.privateKey)
                    else {
                        throw ValidationError("the token did not mark the key sensitive and non-extractable")
                    }
                    do {
                        _ = try session.attribute(.value, of: keyPair.privateKey)
                        throw ValidationError("the token revealed the private key's value")
                    } catch let error as PKCS11Error where error.code == .attributeSensitive {
                        return ((), "CKA_SENSITIVE true, CKA_EXTRACTABLE false, CKA_VALUE unreadable")
                    }
                }
            }

            let message = Array("countersign selftest \(label)".utf8)
            let (publicKey, signature) = try await steps.run("sign a SHA-256 digest with CKM_ECDSA") {
                // swift-crypto's key and signature types are not Sendable: they cross the thread pool as bytes.
                let (point, rawSignature) = try await pool.withSession { session in
                    (
                        try session.p256PublicKey(keyPair.publicKey).x963Representation,
                        try session.signECDSA(digest: SHA256.hash(data: message), with: keyPair.privateKey).rawRepresentation
                    )
                }
                let result = (
                    try P256.Signing.PublicKey(x963Representation: point),
                    try P256.Signing.ECDSASignature(rawRepresentation: rawSignature)
                )
                return (result, "\(rawSignature.count)-byte r‖s signature")
            }
            try await steps.run("verify the signature with swift-crypto") {
                guard publicKey.isValidSignature(signature, for: message) else {
                    throw ValidationError("swift-crypto rejected the token's signature")
                }
                guard !publicKey.isValidSignature(signature, for: message + [0]) else {
                    throw ValidationError("swift-crypto accepted the signature for a different message")
                }
                return ((), "valid for the message, invalid for any other")
            }

            let aesKey = try await steps.run("generate AES-256 key") {
                let key = try await pool.withSession { session in
                    try session.generateAES256Key(label: label + "-aes", id: randomBytes(16), usage: .encryptDecrypt)
                }
                return (key, "non-extractable, encrypt/decrypt only")
            }
            created.append(aesKey)
            try await steps.run("seal and open with AES-256-GCM") {
                let secret = randomBytes(32)
                let context = Array(label.utf8)
                let opened = try await pool.withSession { session in
                    let sealed = try session.encryptAESGCM(secret, with: aesKey, authenticating: context)
                    return try session.decryptAESGCM(sealed, with: aesKey, authenticating: context)
                }
                guard opened == secret else { throw ValidationError("the opened bytes differ from the sealed ones") }
                return ((), "round trip of 32 bytes")
            }
        } catch {
            await Self.destroy(created, in: pool, steps: &steps)
            return false
        }
        await Self.destroy(created, in: pool, steps: &steps)
        return steps.failures == 0
    }

    private static func destroy(_ objects: [ObjectHandle], in pool: PKCS11SessionPool, steps: inout StepPrinter) async {
        guard !objects.isEmpty else { return }
        _ = try? await steps.run("destroy the throw-away keys") {
            try await pool.withSession { session in
                for object in objects {
                    try session.destroyObject(object)
                }
            }
            return ((), "\(objects.count) objects destroyed")
        }
    }
}

/// Prints one line per step: a mark, the step, its detail and how long it took.
struct StepPrinter {
    private(set) var failures = 0

    mutating func run<T>(_ name: String, _ body: () async throws -> (T, String)) async throws -> T {
        let start = ContinuousClock.now
        do {
            let (value, detail) = try await body()
            print("ok    \(name): \(detail) (\(Self.milliseconds(ContinuousClock.now - start)) ms)")
            return value
        } catch {
            self.failures += 1
            print("FAIL  \(name): \(error)")
            throw error
        }
    }

    static func milliseconds(_ duration: Duration) -> String {
        String(Int((duration.inSeconds * 1000).rounded()))
    }
}

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
}
