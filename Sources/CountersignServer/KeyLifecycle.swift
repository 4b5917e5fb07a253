import Audit
import CanonicalJSON
import CountersignConfiguration
import Crypto
import Foundation
import HSMSigning
import Ledger
import Logging
import PKCS11
import Policy
import Signing
import Synchronization
import Wire

/// Rotation, activation, retirement, two-admin destruction and adoption of key versions. Each runs alone
/// (``KeyRing/lifecycle``); requests keep signing throughout with whatever version is active when they sign.
extension KeyRing {
    /// Creates version N+1 of `name`, publishes it as pending, and unless `stage` makes it active (version N
    /// becomes verify-only, still published).
    func rotate(name: String, stage: Bool, backend requested: KeyBackend?, at now: Int64) async throws -> KeyVersionRecord {
        try await self.lifecycle.run {
            guard let configured = self.configuredBackend(of: name) else {
                throw WireError(.keyNotFound, "no tier uses a key named '\(name)' (the keys are \(self.requiredNames.joined(separator: ", ")))")
            }
            let backend = requested ?? configured
            if configured == .hsm, backend != .hsm {
                throw WireError(.keyStateConflict, "'\(name)' must be signed inside the HSM; it cannot get a software version")
            }
            let version = try await self.store.nextKeyVersion(name: name)
            let (record, key) = try await Self.makeVersion(
                name: name, version: version, backend: backend, state: .pending, at: now, store: self.store, hsm: self.hsm, random: self.random)
            try await self.store.insertKeyVersion(record)
            self.state.withLock { state in
                state.records[record.kid] = record
                state.signingKeys[record.kid] = key
            }
            self.logger.notice("key version created", metadata: ["kid": "\(record.kid)", "backend": "\(backend.rawValue)", "state": "pending"])
            return stage ? record : try await self.activateAlone(KeyID(name: name, version: version), at: now)
        }
    }

    /// Makes a pending version active.
    func activate(_ keyID: KeyID, at now: Int64) async throws -> KeyVersionRecord {
        try await self.lifecycle.run { try await self.activateAlone(keyID, at: now) }
    }

    private func activateAlone(_ keyID: KeyID, at now: Int64) async throws -> KeyVersionRecord {
        let changed = try await self.store.activateKeyVersion(name: keyID.name, version: keyID.version, at: now)
        self.state.withLock { state in
            for record in changed { state.records[record.kid] = record }
            let previous = state.active.updateValue(keyID.kid, forKey: keyID.name)
            // A request that took the previous key before the switch still holds it and signs with it; its
            // authorization verifies, since the version stays published as verify-only.
            if let previous, previous != keyID.kid { state.signingKeys[previous] = nil }
        }
        self.logger.notice("key version activated", metadata: ["kid": "\(keyID)", "previous": "\(changed.dropFirst().map(\.kid))"])
        return changed[0]
    }

    /// Stops publishing a verify-only version.
    func retire(_ keyID: KeyID, force: Bool, at now: Int64) async throws -> KeyVersionRecord {
        try await self.lifecycle.run {
            let record = try await self.store.retireKeyVersion(name: keyID.name, version: keyID.version, force: force, at: now)
            self.state.withLock { state in
                state.records[record.kid] = record
                state.signingKeys[record.kid] = nil
            }
            self.logger.notice("key version retired", metadata: ["kid": "\(keyID)", "forced": "\(force)"])
            return record
        }
    }

    /// One admin's request to destroy a retired version; the second, different admin's confirmation destroys
    /// the material: `C_DestroyObject` for an HSM key pair, the sealed blob for a software key.
    func destroy(_ keyID: KeyID, by admin: String, at now: Int64) async throws -> KeyDestruction {
        try await self.lifecycle.run {
            let step = try await self.store.requestDestruction(name: keyID.name, version: keyID.version, by: admin, at: now, confirmWithin: 3600)
            switch step {
            case .awaitingConfirmation(let requestedBy, let expiresAt):
                self.logger.notice("key destruction requested", metadata: ["kid": "\(keyID)", "by": "\(requestedBy)", "confirm_before": "\(expiresAt)"])
                return KeyDestruction(kid: keyID.kid, state: "awaiting_confirmation", requestedBy: requestedBy, confirmBefore: expiresAt)
            case .confirmed(let record, let requestedBy):
                if record.backend == KeyBackend.hsm.rawValue, let id = record.hsmID {
                    try await self.hsm.sessions.withSession { session in
                        for object in try session.findObjects(matching: [.bytes(.id, Array(id))]) {
                            try session.destroyObject(object)
                        }
                    }
                }
                let destroyed = try await self.store.markDestroyed(name: keyID.name, version: keyID.version, at: now)
                self.state.withLock { state in
                    state.records[destroyed.kid] = destroyed
                    state.signingKeys[destroyed.kid] = nil
                }
                self.logger.notice("key version destroyed", metadata: ["kid": "\(keyID)", "requested_by": "\(requestedBy)", "confirmed_by": "\(admin)"])
                return KeyDestruction(kid: keyID.kid, state: "destroyed", requestedBy: requestedBy, confirmedBy: admin)
            }
        }
    }

    /// Makes a P-256 key pair that the security team generated on the token the next version of `name`, and
    /// activates it. Refused unless its private half is sensitive, not extractable and may sign.
    func adopt(name: String, label: String?, id: [UInt8]?, at now: Int64) async throws -> KeyVersionRecord {
        try await self.lifecycle.run {
            guard self.configuredBackend(of: name) != nil else {
                throw WireError(.keyNotFound, "no tier uses a key named '\(name)' (the keys are \(self.requiredNames.joined(separator: ", ")))")
            }
            let known = self.state.withLock { state in Set(state.records.values.compactMap(\.hsmID)) }
            let (objectID, objectLabel, point) = try await self.hsm.sessions.withSession { session -> ([UInt8], String, Data) in
                var template: Template = [.objectClass(.privateKey)]
                if let label { template.append(.string(.label, label)) }
                if let id { template.append(.bytes(.id, id)) }
                let found = try session.findObjects(matching: template)
                let what = label.map { "label '\($0)'" } ?? "CKA_ID \(id.map(HexDigits.string) ?? "")"
                guard found.count == 1, let privateKey = found.first else {
                    throw WireError(
                        .keyNotAdoptable,
                        found.isEmpty ? "no private key with \(what) on the token" : "\(found.count) private keys have \(what); name one by its CKA_ID")
                }
                var refusals: [String] = []
                if try !session.boolAttribute(.sensitive, of: privateKey) { refusals.append("it is not sensitive (CKA_SENSITIVE)") }
                if try session.boolAttribute(.extractable, of: privateKey) { refusals.append("it is extractable (CKA_EXTRACTABLE)") }
                if try !session.boolAttribute(.sign, of: privateKey) { refusals.append("it may not sign (CKA_SIGN)") }
                guard refusals.isEmpty else {
                    throw WireError(.keyNotAdoptable, "the private key with \(what) cannot be adopted: " + refusals.joined(separator: ", "))
                }
                let objectID = try session.attribute(.id, of: privateKey)
                guard !objectID.isEmpty, !known.contains(Data(objectID)) else {
                    throw WireError(
                        .keyNotAdoptable, objectID.isEmpty ? "the private key has no CKA_ID to find it by" : "that key pair is already a version of a key")
                }
                let publicKeys = try session.findObjects(matching: [.objectClass(.publicKey), .bytes(.id, objectID)])
                guard let publicKey = publicKeys.first else {
                    throw WireError(.keyNotAdoptable, "no public key on the token has the private key's CKA_ID")
                }
                let point: P256.Signing.PublicKey
                do {
                    point = try session.p256PublicKey(publicKey)
                } catch {
                    throw WireError(.keyNotAdoptable, "the key pair is not on P-256: \(error)")
                }
                // The halves must belong together: sign with one, verify with the other.
                let digest = SHA256.hash(data: Array("countersign adoption check".utf8))
                guard point.isValidSignature(try session.signECDSA(digest: digest, with: privateKey), for: digest) else {
                    throw WireError(.keyNotAdoptable, "the public key with that CKA_ID does not verify the private key's signatures")
                }
                return (objectID, String(decoding: try session.attribute(.label, of: privateKey), as: UTF8.self), point.x963Representation)
            }
            let version = try await self.store.nextKeyVersion(name: name)
            let record = KeyVersionRecord(
                name: name, version: version, backend: KeyBackend.hsm.rawValue, state: .pending, publicKey: point, sealedPrivateKey: nil,
                hsmLabel: objectLabel, hsmID: Data(objectID), createdAt: now, adopted: true
            )
            let key = try await self.open(record)
            try await self.store.insertKeyVersion(record)
            self.state.withLock { state in
                state.records[record.kid] = record
                state.signingKeys[record.kid] = key
            }
            self.logger.notice("key pair adopted", metadata: ["kid": "\(record.kid)", "label": "\(objectLabel)"])
            return try await self.activateAlone(KeyID(name: name, version: version), at: now)
        }
    }

    /// Rotates a key because its policy says so (age or signature count), and logs it in the audit trail as
    /// the server's action.
    func rotateByPolicy(name: String, reason: String, at now: Int64) async throws -> KeyVersionRecord {
        let record = try await self.rotate(name: name, stage: false, backend: nil, at: now)
        try await self.store.appendAudit { index in
            AuditEntry(
                index: index, time: now, kind: "admin", action: "keys.rotate", actor: "server", subject: record.kid,
                details: ["reason": reason, "backend": record.backend, "state": record.state.rawValue]
            )
        }
        return record
    }

    /// Every version with its state, backend, times and signature count.
    public func list() -> [KeyVersionInfo] {
        let (records, signatures) = self.state.withLock { (Array($0.records.values), $0.signatures) }
        return records.sorted { ($0.name, $0.version) < ($1.name, $1.version) }.map { record in
            KeyVersionInfo(
                kid: record.kid, name: record.name, version: record.version, backend: record.backend, state: record.state.rawValue,
                tier: record.name == Self.auditKeyName ? Self.auditKeyName : self.tier(ofKey: record.name)?.name, createdAt: record.createdAt,
                activatedAt: record.activatedAt, rotatedAt: record.rotatedAt, retiredAt: record.retiredAt, destroyedAt: record.destroyedAt,
                signatures: signatures[record.kid] ?? 0, adopted: record.adopted
            )
        }
    }

    /// The active versions whose policy says they are due to rotate at `now`.
    func dueForRotation(at now: Int64) -> [String] {
        self.state.withLock { state in
            self.policies.compactMap { name, policy in
                guard let kid = state.active[name], let record = state.records[kid] else { return nil }
                if let every = policy.rotateEverySeconds, now - (record.activatedAt ?? record.createdAt) >= every { return name }
                if let maximum = policy.maximumSignatures, state.signatures[kid, default: 0] >= maximum { return name }
                return nil
            }.sorted()
        }
    }

    // MARK: Material

    /// Creates what is missing: the sealing key on the token, and version 1 of every key the configuration
    /// needs. Idempotent: existing keys are kept.
    /// - Returns: one line per key created.
    static func provision(tiers: TierTable, store: any Store, hsm: HSMRuntime, now: Int64, random: RandomSource) async throws -> [String] {
        var created: [String] = []
        // Objects are found by a CKA_ID that the store remembers, so several installations (or test servers)
        // can share one token without ever picking up each other's keys.
        let sealingKeyID = Array(try await store.setting(Self.sealingKeySetting, storingIfAbsent: Data(random.bytes(16))))
        let sealingKeyCreated = try await hsm.sessions.withSession { session -> Bool in
            let existing = try session.findObjects(matching: [.objectClass(.secretKey), .bytes(.id, sealingKeyID)])
            guard existing.isEmpty else { return false }
            _ = try session.generateAES256Key(label: HSMRuntime.sealingKeyLabel, id: sealingKeyID, usage: .encryptDecrypt)
            return true
        }
        if sealingKeyCreated { created.append("sealing key '\(HSMRuntime.sealingKeyLabel)' (AES-256, on the token)") }

        let versions = try await store.keyVersions()
        let needed = tiers.tiers.map { ($0.keyName, $0.backend, "tier \($0.name)") } + [(Self.auditKeyName, KeyBackend.hsm, "the audit log")]
        for (name, backend, purpose) in needed where !versions.contains(where: { $0.name == name }) {
            let (record, _) = try await Self.makeVersion(
                name: name, version: 1, backend: backend, state: .active, at: now, store: store, hsm: hsm, random: random)
            try await store.insertKeyVersion(record)
            created.append("key '\(record.kid)' (\(backend.rawValue), \(purpose))")
        }
        return created
    }

    /// Countersign key pairs on the token that this store does not know: what an earlier installation (a
    /// removed data directory, another server) left there. Found by their `countersign:` labels.
    static func foreignKeys(store: any Store, hsm: HSMRuntime) async throws -> [String] {
        let known = Set(try await store.keyVersions().compactMap(\.hsmLabel))
        let labels = try await hsm.sessions.withSession { session -> [String] in
            // Objects can vanish between the search and the read (another installation destroying a key): skipped.
            try session.findObjects(matching: [.objectClass(.privateKey)]).compactMap { object in
                (try? session.attribute(.label, of: object)).map { String(decoding: $0, as: UTF8.self) }
            }
        }
        return labels.filter { $0.hasPrefix("countersign:") && !known.contains($0) }.sorted()
    }

    /// Makes a key version's material: a software key generated in memory and stored only sealed by the
    /// token's AES key, or a key pair generated inside the token with a label and `CKA_ID` derived from this
    /// installation, the name and the version.
    static func makeVersion(
        name: String, version: Int, backend: KeyBackend, state: KeyVersionRecord.State, at now: Int64, store: any Store, hsm: HSMRuntime,
        random: RandomSource
    ) async throws -> (KeyVersionRecord, any AuthorizationSigningKey) {
        let keyID = KeyID(name: name, version: version)
        let activatedAt = state == .active ? now : nil
        switch backend {
        case .software:
            guard let sealingKeyID = try await store.setting(Self.sealingKeySetting) else {
                throw StartupError("the store names no sealing key; run 'countersignd init' first")
            }
            let privateKey = P256.Signing.PrivateKey()
            var scalar = Array(privateKey.rawRepresentation)
            let context = Self.sealingContext(keyID)
            let sealed = try await hsm.sessions.withSession { [scalar] session in
                let sealingKey = try session.findKey(.secretKey, id: Array(sealingKeyID))
                return try session.encryptAESGCM(scalar, with: sealingKey, authenticating: context).combined
            }
            scalar.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) }
            let record = KeyVersionRecord(
                name: name, version: version, backend: backend.rawValue, state: state, publicKey: privateKey.publicKey.x963Representation,
                sealedPrivateKey: Data(sealed), hsmLabel: nil, hsmID: nil, createdAt: now, activatedAt: activatedAt
            )
            return (record, SoftwareSigningKey(keyID: keyID, privateKey: privateKey))
        case .hsm:
            let installation = try await store.setting(Self.installationSetting, storingIfAbsent: Data(random.bytes(16)))
            let label = "countersign:\(keyID.kid)"
            let id = Array(SHA256.hash(data: Data("countersign-cka-id\0".utf8) + installation + Data(keyID.kid.utf8)).prefix(16))
            let (privateKey, point) = try await hsm.sessions.withSession { session in
                let pair = try session.generateP256SigningKeyPair(label: label, id: id)
                return (TokenKeyReference(id: id, handle: pair.privateKey, foundIn: session), try session.p256PublicKey(pair.publicKey).x963Representation)
            }
            let record = KeyVersionRecord(
                name: name, version: version, backend: backend.rawValue, state: state, publicKey: point, sealedPrivateKey: nil, hsmLabel: label,
                hsmID: Data(id), createdAt: now, activatedAt: activatedAt
            )
            return (record, HSMSigningKey(keyID: keyID, publicKeyX963: point, privateKey: privateKey, signer: hsm.signer))
        }
    }
}
