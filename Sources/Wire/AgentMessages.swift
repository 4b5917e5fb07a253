// The bodies of the messages that register, list and revoke principals; docs/protocol.md lists them.

/// `AGENTS_ADD` (admin → server): register a principal by its public key.
public struct AgentsAddRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var agentID: String
    public var algorithm: CredentialAlgorithm
    /// base64url: the X9.62 uncompressed point for ES256, the 32 raw bytes for Ed25519.
    public var publicKey: String
    /// `agent` unless given.
    public var role: Role?

    enum CodingKeys: String, CodingKey {
        case agentID = "agent_id"
        case algorithm
        case publicKey = "public_key"
        case role
    }

    public init(agentID: String, algorithm: CredentialAlgorithm, publicKey: String, role: Role? = nil) {
        self.agentID = agentID
        self.algorithm = algorithm
        self.publicKey = publicKey
        self.role = role
    }

    public func validate() throws(WireError) {
        try PrincipalID.validate(self.agentID, field: "agent_id")
        do {
            _ = try CredentialPublicKey(algorithm: self.algorithm, base64URL: self.publicKey)
        } catch {
            throw WireError(.invalidRequest, "field 'public_key' is not a valid \(self.algorithm.rawValue) public key")
        }
    }
}

/// `AGENTS_REVOKE` (admin → server) names the principal.
public typealias AgentsRevokeRequest = AgentReference

/// Names one principal: `{"agent_id"}`.
public struct AgentReference: Codable, Sendable, Hashable, ValidatedRequest {
    public var agentID: String

    enum CodingKeys: String, CodingKey {
        case agentID = "agent_id"
    }

    public init(agentID: String) {
        self.agentID = agentID
    }

    public func validate() throws(WireError) {
        try PrincipalID.validate(self.agentID, field: "agent_id")
    }
}

/// A registered principal, as admins see it. Never holds a secret.
public struct PrincipalInfo: Codable, Sendable, Hashable {
    public var id: String
    public var role: Role
    public var algorithm: CredentialAlgorithm
    public var createdAt: Int64
    public var revokedAt: Int64?

    enum CodingKeys: String, CodingKey {
        case id, role, algorithm
        case createdAt = "created_at"
        case revokedAt = "revoked_at"
    }

    public init(id: String, role: Role, algorithm: CredentialAlgorithm, createdAt: Int64, revokedAt: Int64?) {
        self.id = id
        self.role = role
        self.algorithm = algorithm
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}

/// `AGENTS_LIST_RESPONSE`.
public struct AgentsList: Codable, Sendable, Hashable {
    public var agents: [PrincipalInfo]

    public init(agents: [PrincipalInfo]) {
        self.agents = agents
    }
}

/// Principal ids: 1 to 64 characters from `[A-Za-z0-9._-]`.
public enum PrincipalID {
    public static func validate(_ id: String, field: String) throws(WireError) {
        let allowed = id.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
        guard (1...64).contains(id.utf8.count), allowed else {
            throw WireError(.invalidRequest, "field '\(field)' must be 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'")
        }
    }
}
