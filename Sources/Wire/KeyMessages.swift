import CanonicalJSON
import Signing

// Key lifecycle and credential rotation (admins). Field names are snake_case on the wire.

/// One key version as `KEYS_LIST` shows it.
public struct KeyVersionInfo: Codable, Sendable, Hashable {
    public var kid: String
    public var name: String
    public var version: Int
    /// `software` or `hsm`.
    public var backend: String
    /// `pending`, `active`, `verify-only`, `retired` or `destroyed`.
    public var state: String
    /// The tier the key name signs for (`audit` for the audit log's key); absent for a name no tier uses.
    public var tier: String?
    public var createdAt: Int64
    public var activatedAt: Int64?
    public var rotatedAt: Int64?
    public var retiredAt: Int64?
    public var destroyedAt: Int64?
    /// Authorizations this version signed.
    public var signatures: Int
    /// Made by the security team on the token and adopted.
    public var adopted: Bool

    enum CodingKeys: String, CodingKey {
        case kid, name, version, backend, state, tier
        case createdAt = "created_at"
        case activatedAt = "activated_at"
        case rotatedAt = "rotated_at"
        case retiredAt = "retired_at"
        case destroyedAt = "destroyed_at"
        case signatures, adopted
    }

    public init(
        kid: String, name: String, version: Int, backend: String, state: String, tier: String?, createdAt: Int64, activatedAt: Int64?, rotatedAt: Int64?,
        retiredAt: Int64?, destroyedAt: Int64?, signatures: Int, adopted: Bool
    ) {
        self.kid = kid
        self.name = name
        self.version = version
        self.backend = backend
        self.state = state
        self.tier = tier
        self.createdAt = createdAt
        self.activatedAt = activatedAt
        self.rotatedAt = rotatedAt
        self.retiredAt = retiredAt
        self.destroyedAt = destroyedAt
        self.signatures = signatures
        self.adopted = adopted
    }
}

/// `KEYS_LIST_RESPONSE`.
public struct KeysList: Codable, Sendable, Hashable {
    public var keys: [KeyVersionInfo]

    public init(keys: [KeyVersionInfo]) {
        self.keys = keys
    }
}

/// Key names: 1 to 32 characters, a-z, 0-9 and '-', starting with a letter.
enum KeyName {
    static func validate(_ name: String, field: String) throws(WireError) {
        let bytes = Array(name.utf8)
        guard (1...32).contains(bytes.count), (0x61...0x7A).contains(bytes[0]),
            bytes.allSatisfy({ (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D })
        else {
            throw WireError(.invalidRequest, "field '\(field)' must be a key name: 1 to 32 characters from a-z, 0-9 and '-', starting with a letter")
        }
    }
}

/// `KEYS_ROTATE`: make version N+1 of a key, publish it, and (unless `stage`) make it the active one.
public struct KeysRotateRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var name: String
    /// Publish the new version as `pending` only; `KEYS_ACTIVATE` makes it active later.
    public var stage: Bool?
    /// `software` or `hsm`; default: the tier's configured backend. An HSM tier never takes a software key.
    public var backend: String?

    public init(name: String, stage: Bool? = nil, backend: String? = nil) {
        self.name = name
        self.stage = stage
        self.backend = backend
    }

    public func validate() throws(WireError) {
        try KeyName.validate(self.name, field: "name")
        if let backend = self.backend, backend != "software", backend != "hsm" {
            throw WireError(.invalidRequest, "field 'backend' must be software or hsm")
        }
    }
}

/// Names one key version: the body of `KEYS_ACTIVATE` and `KEYS_DESTROY`.
public struct KeyReference: Codable, Sendable, Hashable, ValidatedRequest {
    public var kid: String

    public init(kid: String) {
        self.kid = kid
    }

    public var keyID: KeyID? { KeyID(kid: self.kid) }

    public func validate() throws(WireError) {
        guard let keyID = self.keyID else { throw WireError(.invalidRequest, "field 'kid' must be <name>/v<version>, e.g. standard/v2") }
        try KeyName.validate(keyID.name, field: "kid")
    }
}

/// `KEYS_RETIRE`: stop publishing a verify-only version.
public struct KeysRetireRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var kid: String
    /// Retire even though authorizations it signed are unexpired (they will no longer verify).
    public var force: Bool?

    public init(kid: String, force: Bool? = nil) {
        self.kid = kid
        self.force = force
    }

    public func validate() throws(WireError) {
        try KeyReference(kid: self.kid).validate()
    }
}

/// `KEYS_DESTROY_RESPONSE`.
public struct KeyDestruction: Codable, Sendable, Hashable {
    public var kid: String
    /// `awaiting_confirmation` after the first admin; `destroyed` after a second, different one.
    public var state: String
    public var requestedBy: String
    public var confirmedBy: String?
    /// Until when a second admin may confirm.
    public var confirmBefore: Int64?

    enum CodingKeys: String, CodingKey {
        case kid, state
        case requestedBy = "requested_by"
        case confirmedBy = "confirmed_by"
        case confirmBefore = "confirm_before"
    }

    public init(kid: String, state: String, requestedBy: String, confirmedBy: String? = nil, confirmBefore: Int64? = nil) {
        self.kid = kid
        self.state = state
        self.requestedBy = requestedBy
        self.confirmedBy = confirmedBy
        self.confirmBefore = confirmBefore
    }
}

/// `KEYS_ADOPT`: make a P-256 key pair that the security team generated on the token the next version of a key.
public struct KeysAdoptRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var name: String
    /// The pair's `CKA_LABEL`…
    public var label: String?
    /// …or its `CKA_ID`, in hex.
    public var id: String?

    public init(name: String, label: String? = nil, id: String? = nil) {
        self.name = name
        self.label = label
        self.id = id
    }

    /// The `id` as bytes: pairs of hex digits and nothing else (no sign, no prefix), so one id has one spelling
    /// up to letter case.
    public var idBytes: [UInt8]? {
        self.id.flatMap(HexDigits.bytes)
    }

    public func validate() throws(WireError) {
        try KeyName.validate(self.name, field: "name")
        switch (self.label, self.id) {
        case (let label?, nil):
            try TextRules.identifier(label, field: "label", maximumBytes: 128)
        case (nil, _?):
            guard let bytes = self.idBytes, (1...64).contains(bytes.count) else {
                throw WireError(.invalidRequest, "field 'id' must be 1 to 64 bytes in hex")
            }
        default:
            throw WireError(.invalidRequest, "give exactly one of 'label' and 'id'")
        }
    }
}

/// `AGENTS_ROTATE_CREDENTIAL`: a principal's new public key; the old one keeps working for `grace_seconds`.
public struct AgentsRotateCredentialRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var agentID: String
    public var algorithm: CredentialAlgorithm
    public var publicKey: String
    /// 0 to 30 days; default 1 day.
    public var graceSeconds: Int64?

    enum CodingKeys: String, CodingKey {
        case agentID = "agent_id"
        case algorithm
        case publicKey = "public_key"
        case graceSeconds = "grace_seconds"
    }

    public init(agentID: String, algorithm: CredentialAlgorithm, publicKey: String, graceSeconds: Int64? = nil) {
        self.agentID = agentID
        self.algorithm = algorithm
        self.publicKey = publicKey
        self.graceSeconds = graceSeconds
    }

    public func validate() throws(WireError) {
        try AgentsAddRequest(agentID: self.agentID, algorithm: self.algorithm, publicKey: self.publicKey).validate()
        if let grace = self.graceSeconds, !(0...30 * 86_400).contains(grace) {
            throw WireError(.invalidRequest, "field 'grace_seconds' must be 0 to 2592000 (30 days)")
        }
    }
}
