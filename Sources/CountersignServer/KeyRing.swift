import CountersignConfiguration
import CountersignCore
import Crypto
import Foundation
import HSMSigning
import Ledger
import Logging
import PKCS11
import Policy
import Signing
import Synchronization

/// Every key version the server knows: the active one of each key name signs, pending and verify-only ones
/// are published beside it, and the lifecycle operations (in KeyLifecycle.swift) move versions between
/// states while requests keep flowing.
public final class KeyRing: Sendable {
    /// The HSM key that signs the audit log's checkpoints.
    public static let auditKeyName = ServerConfiguration.AuditLog.keyName

    struct State {
        /// By kid.
        var records: [String: KeyVersionRecord] = [:]
        /// By kid: the versions that may sign (pending and active).
        var signingKeys: [String: any AuthorizationSigningKey] = [:]
        /// Key name → the kid of its active version.
        var active: [String: String] = [:]
        /// By kid: authorizations signed, from the store at start plus those signed since.
        var signatures: [String: Int] = [:]
    }

    public let tiers: TierTable
    let store: any Store
    let hsm: HSMRuntime
    let random: RandomSource
    let logger: Logger
    let policies: [String: KeyRotationPolicy]
    /// Lifecycle operations never interleave.
    let lifecycle = SerialQueue()
    let state: Mutex<State>

    init(
        tiers: TierTable, store: any Store, hsm: HSMRuntime, random: RandomSource, logger: Logger, policies: [String: KeyRotationPolicy], state: State
    ) {
        self.tiers = tiers
        self.store = store
        self.hsm = hsm
        self.random = random
        self.logger = logger
        self.policies = policies
        self.state = Mutex(state)
    }

    /// The key that signs `tier`'s authorizations now.
    public func key(for tier: Tier) -> (any AuthorizationSigningKey)? {
        self.activeKey(named: tier.keyName)
    }

    /// The key that signs the audit log's checkpoints.
    public var auditKey: (any AuthorizationSigningKey)? {
        self.activeKey(named: Self.auditKeyName)
    }

    func activeKey(named name: String) -> (any AuthorizationSigningKey)? {
        self.state.withLock { state in state.active[name].flatMap { state.signingKeys[$0] } }
    }

    /// Every published version (pending, active, verify-only), each with its tier and the highest amount that
    /// tier may sign; the audit key with tier `audit` and no amount.
    public var keySet: JWKSet {
        let records = self.state.withLock { Array($0.records.values) }
        return JWKSet(
            keys: records.filter(\.state.isPublished).sorted { ($0.name, $0.version) < ($1.name, $1.version) }.map { record in
                let tier = self.tier(ofKey: record.name)
                return JWK(
                    keyID: KeyID(name: record.name, version: record.version), publicKeyX963: record.publicKey,
                    backend: KeyBackend(rawValue: record.backend) ?? .software, tier: tier?.name ?? Self.auditKeyName, maxAmount: tier?.maximumAmounts ?? [:]
                )
            }
        )
    }

    /// The private keys on the token of the active versions: what the token must hold to sign now.
    var tokenKeys: [TokenKeyReference] {
        self.state.withLock { state in state.active.values.compactMap { (state.signingKeys[$0] as? HSMSigningKey)?.privateKey } }
    }

    func tier(ofKey name: String) -> Tier? {
        self.tiers.tiers.first { $0.keyName == name }
    }

    /// The key names this configuration needs: each tier's and the audit key.
    var requiredNames: [String] { self.tiers.tiers.map(\.keyName) + [Self.auditKeyName] }

    /// The backend a key name must have: its tier's, or the HSM for the audit key.
    func configuredBackend(of name: String) -> KeyBackend? {
        name == Self.auditKeyName ? .hsm : self.tier(ofKey: name)?.backend
    }

    /// Counts a signature by `kid`; returns whether the key's `max_signatures` is now reached.
    func countSignature(_ keyID: KeyID) -> Bool {
        let count = self.state.withLock { state -> Int in
            state.signatures[keyID.kid, default: 0] += 1
            return state.signatures[keyID.kid]!
        }
        guard let maximum = self.policies[keyID.name]?.maximumSignatures else { return false }
        return count == maximum
    }

    // MARK: Loading

    /// Loads every key version: the signing keys of pending and active ones (software keys unsealed by the
    /// HSM, HSM keys found on the token), the public halves of the others.
    /// - Throws: ``StartupError`` when a needed key is missing (run `countersignd init`), does not match the
    ///   store, or is a software key where an HSM key is needed.
    static func load(
        tiers: TierTable, store: any Store, hsm: HSMRuntime, random: RandomSource, logger: Logger, policies: [String: KeyRotationPolicy] = [:]
    ) async throws -> KeyRing {
        var state = State()
        let records = try await store.keyVersions()
        let ring = KeyRing(tiers: tiers, store: store, hsm: hsm, random: random, logger: logger, policies: policies, state: State())
        for record in records {
            state.records[record.kid] = record
            if record.state == .active { state.active[record.name] = record.kid }
            if record.state == .active || record.state == .pending {
                state.signingKeys[record.kid] = try await ring.open(record)
            }
        }
        for name in ring.requiredNames {
            guard let kid = state.active[name], let record = state.records[kid] else {
                throw StartupError("no active key '\(name)' in the store; run 'countersignd init' first")
            }
            if ring.configuredBackend(of: name) == .hsm, record.backend != KeyBackend.hsm.rawValue {
                throw StartupError("key '\(record.kid)' is a \(record.backend) key but '\(name)' must be signed inside the HSM; rotate it with --backend hsm")
            }
        }
        state.signatures = try await store.signatureCounts()
        ring.state.withLock { $0 = state }
        return ring
    }

    /// Reads the key versions again after another server of the cluster changed them (a rotation, a retirement, a
    /// destruction): new pending and active versions are opened, versions no longer signing are let go. A version
    /// that cannot be opened keeps the previous state for its name (and is logged): this server goes on signing with
    /// what it has rather than not at all.
    func refresh() async throws {
        try await self.lifecycle.run {
            let records = try await self.store.keyVersions()
            let (current, opened) = self.state.withLock { ($0.records, $0.signingKeys) }
            var signingKeys: [String: any AuthorizationSigningKey] = [:]
            var active: [String: String] = [:]
            for record in records where record.state == .active || record.state == .pending {
                if let key = opened[record.kid] {
                    signingKeys[record.kid] = key
                } else {
                    do {
                        signingKeys[record.kid] = try await self.open(record)
                    } catch {
                        self.logger.error("a key version another server made cannot be opened here", metadata: ["kid": "\(record.kid)", "error": "\(error)"])
                        continue
                    }
                }
                if record.state == .active { active[record.name] = record.kid }
            }
            let changed = records.filter { current[$0.kid] != $0 }.map(\.kid)
            self.state.withLock { state in
                for record in records { state.records[record.kid] = record }
                state.signingKeys = signingKeys
                for (name, kid) in active { state.active[name] = kid }
            }
            if !changed.isEmpty { self.logger.notice("key versions changed by another server", metadata: ["kids": "\(changed.sorted())"]) }
        }
    }

    /// The signing key of a stored version.
    func open(_ record: KeyVersionRecord) async throws -> any AuthorizationSigningKey {
        let keyID = KeyID(name: record.name, version: record.version)
        switch KeyBackend(rawValue: record.backend) {
        case .software:
            guard let sealed = record.sealedPrivateKey else {
                throw StartupError("software key '\(keyID)' has no sealed private key in the store")
            }
            guard let sealingKeyID = try await self.store.setting(Self.sealingKeySetting) else {
                throw StartupError("the store names no sealing key; run 'countersignd init' first")
            }
            let context = Self.sealingContext(keyID)
            let scalar: [UInt8]
            do {
                scalar = try await self.hsm.sessions.withSession { session in
                    let sealingKey = try session.findKey(.secretKey, id: Array(sealingKeyID))
                    return try session.decryptAESGCM(AESGCMSealedData(combined: Array(sealed)), with: sealingKey, authenticating: context)
                }
            } catch {
                throw StartupError("software key '\(keyID)' cannot be unsealed by this token (\(error)); it was sealed by another token's key")
            }
            let key = try SoftwareSigningKey(keyID: keyID, rawRepresentation: scalar)
            guard key.publicKeyX963 == record.publicKey else {
                throw StartupError("software key '\(keyID)' does not match its stored public key")
            }
            return key
        case .hsm:
            guard let id = record.hsmID else { throw StartupError("HSM key '\(keyID)' has no CKA_ID in the store") }
            let (privateKey, point) = try await self.hsm.sessions.withSession { session in
                let privateKey = try session.findKey(.privateKey, id: Array(id))
                let publicKey = try session.findKey(.publicKey, id: Array(id))
                return (TokenKeyReference(id: Array(id), handle: privateKey, foundIn: session), try session.p256PublicKey(publicKey).x963Representation)
            }
            guard point == record.publicKey else {
                throw StartupError("HSM key '\(keyID)' on the token does not match its stored public key")
            }
            return HSMSigningKey(keyID: keyID, publicKeyX963: point, privateKey: privateKey, signer: self.hsm.signer)
        case nil:
            throw StartupError("key '\(keyID)' has an unknown backend '\(record.backend)'")
        }
    }

    /// The store setting naming the token's AES key that seals software keys.
    static let sealingKeySetting = "hsm.sealing_key_id"
    /// The store setting holding this installation's random id, from which HSM keys' `CKA_ID`s are derived.
    static let installationSetting = "hsm.installation_id"

    /// The additional data bound to a sealed software key, so a sealed blob only opens as the key it was made for.
    static func sealingContext(_ keyID: KeyID) -> [UInt8] {
        Array("countersign-software-key:\(keyID.kid)".utf8)
    }
}
