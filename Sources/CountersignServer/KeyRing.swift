import Crypto
import Foundation
import HSMSigning
import Ledger
import Logging
import PKCS11
import Policy
import Signing

/// The active signing key of every tier, and the JWK Set that publishes them.
public final class KeyRing: Sendable {
    public let tiers: TierTable
    private let keys: [String: any AuthorizationSigningKey]

    init(tiers: TierTable, keys: [String: any AuthorizationSigningKey]) {
        self.tiers = tiers
        self.keys = keys
    }

    /// The key that signs `tier`'s authorizations.
    public func key(for tier: Tier) -> (any AuthorizationSigningKey)? {
        self.keys[tier.keyName]
    }

    /// Every published key, each with its tier and the highest amount that tier may sign.
    public var keySet: JWKSet {
        JWKSet(keys: self.tiers.tiers.compactMap { tier in self.keys[tier.keyName].map { JWK(key: $0, tier: tier) } })
    }

    /// The additional data bound to a sealed software key, so a sealed blob only opens as the key it was made for.
    static let sealingKeySetting = "hsm.sealing_key_id"

    static func sealingContext(_ keyID: KeyID) -> [UInt8] {
        Array("countersign-software-key:\(keyID.kid)".utf8)
    }

    /// Loads the active version of every tier's key: software keys are opened by the HSM, HSM keys are found
    /// on the token.
    /// - Throws: ``StartupError`` when a key is missing (run `countersignd init`) or does not match the store.
    static func load(tiers: TierTable, store: LedgerStore, hsm: HSMRuntime) async throws -> KeyRing {
        let versions = try await store.keyVersions()
        var keys: [String: any AuthorizationSigningKey] = [:]
        for tier in tiers.tiers {
            guard let record = versions.filter({ $0.name == tier.keyName && $0.state == "active" }).max(by: { $0.version < $1.version }) else {
                throw StartupError("no active key '\(tier.keyName)' for tier '\(tier.name)' in the store; run 'countersignd init' first")
            }
            guard record.backend == tier.backend.rawValue else {
                throw StartupError("key '\(tier.keyName)' is a \(record.backend) key but tier '\(tier.name)' asks for \(tier.backend.rawValue)")
            }
            let keyID = KeyID(name: record.name, version: record.version)
            switch tier.backend {
            case .software:
                guard let sealed = record.sealedPrivateKey else {
                    throw StartupError("software key '\(keyID)' has no sealed private key in the store")
                }
                let context = Self.sealingContext(keyID)
                guard let sealingKeyID = try await store.setting(Self.sealingKeySetting) else {
                    throw StartupError("the store names no sealing key; run 'countersignd init' first")
                }
                let scalar = try await hsm.pool.withSession { session in
                    let sealingKey = try session.findKey(.secretKey, id: Array(sealingKeyID))
                    return try session.decryptAESGCM(AESGCMSealedData(combined: Array(sealed)), with: sealingKey, authenticating: context)
                }
                let key = try SoftwareSigningKey(keyID: keyID, rawRepresentation: scalar)
                guard key.publicKeyX963 == record.publicKey else {
                    throw StartupError("software key '\(keyID)' does not match its stored public key")
                }
                keys[tier.keyName] = key
            case .hsm:
                guard let id = record.hsmID else { throw StartupError("HSM key '\(keyID)' has no CKA_ID in the store") }
                let (privateKey, point) = try await hsm.pool.withSession { session in
                    let privateKey = try session.findKey(.privateKey, id: Array(id))
                    let publicKey = try session.findKey(.publicKey, id: Array(id))
                    return (privateKey, try session.p256PublicKey(publicKey).x963Representation)
                }
                guard point == record.publicKey else {
                    throw StartupError("HSM key '\(keyID)' on the token does not match its stored public key")
                }
                keys[tier.keyName] = HSMSigningKey(
                    keyID: keyID, publicKeyX963: point, privateKey: TokenKeyReference(id: Array(id), handle: privateKey), signer: hsm.signer
                )
            }
        }
        return KeyRing(tiers: tiers, keys: keys)
    }

    /// Creates what is missing: the sealing key on the token, and version 1 of every tier's key.
    /// Idempotent: existing keys are kept.
    /// - Returns: one line per key created.
    static func provision(tiers: TierTable, store: LedgerStore, hsm: HSMRuntime, now: Int64, random: RandomSource) async throws -> [String] {
        var created: [String] = []
        // Objects are found by a random CKA_ID that the store remembers, so several installations (or test
        // servers) can share one token without ever picking up each other's keys.
        let sealingKeyID = Array(try await store.setting(Self.sealingKeySetting, storingIfAbsent: Data(random.bytes(16))))
        let sealingKeyCreated = try await hsm.pool.withSession { session -> Bool in
            let existing = try session.findObjects(matching: [.objectClass(.secretKey), .bytes(.id, sealingKeyID)])
            guard existing.isEmpty else { return false }
            _ = try session.generateAES256Key(label: HSMRuntime.sealingKeyLabel, id: sealingKeyID, usage: .encryptDecrypt)
            return true
        }
        if sealingKeyCreated { created.append("sealing key '\(HSMRuntime.sealingKeyLabel)' (AES-256, on the token)") }

        let versions = try await store.keyVersions()
        for tier in tiers.tiers where !versions.contains(where: { $0.name == tier.keyName }) {
            let keyID = KeyID(name: tier.keyName, version: 1)
            let record: KeyVersionRecord
            switch tier.backend {
            case .software:
                let privateKey = P256.Signing.PrivateKey()
                var scalar = Array(privateKey.rawRepresentation)
                let context = Self.sealingContext(keyID)
                let sealed = try await hsm.pool.withSession { [scalar] session in
                    let sealingKey = try session.findKey(.secretKey, id: sealingKeyID)
                    return try session.encryptAESGCM(scalar, with: sealingKey, authenticating: context).combined
                }
                scalar.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) }
                record = KeyVersionRecord(
                    name: keyID.name, version: 1, backend: "software", state: "active", publicKey: privateKey.publicKey.x963Representation,
                    sealedPrivateKey: Data(sealed), hsmLabel: nil, hsmID: nil, createdAt: now
                )
            case .hsm:
                let label = "countersign:\(keyID.kid)"
                let id = random.bytes(16)
                let point = try await hsm.pool.withSession { session in
                    let pair = try session.generateP256SigningKeyPair(label: label, id: id)
                    return try session.p256PublicKey(pair.publicKey).x963Representation
                }
                record = KeyVersionRecord(
                    name: keyID.name, version: 1, backend: "hsm", state: "active", publicKey: point, sealedPrivateKey: nil, hsmLabel: label,
                    hsmID: Data(id), createdAt: now
                )
            }
            try await store.insertKeyVersion(record)
            created.append("key '\(keyID)' (\(tier.backend.rawValue), tier \(tier.name))")
        }
        return created
    }
}

/// The server cannot start; the reason says what to do.
public struct StartupError: Error, CustomStringConvertible, Sendable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { self.reason }
}
