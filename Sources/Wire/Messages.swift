import Policy
import Signing

// The JSON bodies of every message. Field names are snake_case on the wire; docs/protocol.md lists them.

/// `HELLO` (client → server): who is connecting.
public struct Hello: Codable, Sendable, Hashable, ValidatedRequest {
    public var principal: String
    /// Free text naming the client software, for logs.
    public var client: String?

    public init(principal: String, client: String? = nil) {
        self.principal = principal
        self.client = client
    }

    public func validate() throws(WireError) {
        try PrincipalID.validate(self.principal, field: "principal")
        if let client = self.client {
            try TextRules.identifier(client, field: "client", maximumBytes: 256)
        }
    }
}

/// `HELLO_RESPONSE` (server → client): a fresh random challenge to sign.
public struct Challenge: Codable, Sendable, Hashable {
    /// 32 random bytes, base64url without padding.
    public var challenge: String
    public var algorithms: [CredentialAlgorithm]

    public init(challenge: String, algorithms: [CredentialAlgorithm]) {
        self.challenge = challenge
        self.algorithms = algorithms
    }
}

/// `AUTH` (client → server): the signature of the handshake transcript (see ``Handshake``).
public struct Auth: Codable, Sendable, Hashable {
    public var algorithm: CredentialAlgorithm
    /// base64url without padding: 64 bytes r‖s for ES256, 64 bytes for Ed25519.
    public var signature: String

    public init(algorithm: CredentialAlgorithm, signature: String) {
        self.algorithm = algorithm
        self.signature = signature
    }
}

/// `AUTH_RESPONSE` (server → client): the handshake succeeded.
public struct Welcome: Codable, Sendable, Hashable {
    public var principal: String
    public var role: Role

    public init(principal: String, role: Role) {
        self.principal = principal
        self.role = role
    }
}

/// What a principal may do.
public enum Role: String, Codable, Sendable, Hashable, CaseIterable {
    /// Requests authorizations.
    case agent
    /// Manages agents, contexts and keys, reads approvals and budgets. Cannot request authorizations.
    case admin
    /// An admin who may also approve or deny payments waiting for approval.
    case approver
    /// Reads and exports the audit log; nothing else.
    case auditor

    /// Whether this role may do what admins do.
    public var isAdministrative: Bool { self == .admin || self == .approver }

    /// Whether this role may read the audit log.
    public var readsAudit: Bool { self != .agent }
}

/// An empty body (`{}`), for requests and responses that carry nothing.
public struct Empty: Codable, Sendable, Hashable, ValidatedRequest {
    public func validate() {}

    public init() {}

    /// An object with no members: `[]`, `1` or `null` is not an empty body, and a member is an unknown one.
    public init(from decoder: any Decoder) throws {
        _ = try decoder.container(keyedBy: NoMembers.self)
    }

    private struct NoMembers: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// `AUTHORIZE` (agent → server): may I pay?
extension AuthorizeRequest {
    /// What the policy judges of this request from `agent`; `nil` when the currency is no ISO 4217 code.
    public func policyRequest(agent: String) -> PolicyRequest? {
        guard let currency = Currency(code: self.currency) else { return nil }
        return PolicyRequest(
            agent: agent, amount: Money(minorUnits: self.amount, currency: currency), merchant: self.merchantID,
            merchantCategoryCode: self.merchantCategoryCode,
            lineItems: self.intent.lineItems?.map { PolicyRequest.LineItem(quantity: $0.quantity, unitAmount: $0.unitAmount, category: $0.category) }
        )
    }
}

public struct AuthorizeRequest: Codable, Sendable, Hashable, ValidatedRequest {
    /// Chosen by the agent, unique per intended payment; 1 to 200 printable ASCII characters.
    public var idempotencyKey: String
    /// Integer minor units (cents for USD, yen for JPY).
    public var amount: Int64
    /// ISO 4217 alphabetic code, e.g. `USD`.
    public var currency: String
    public var merchantID: String
    /// ISO 18245 merchant category code: four digits.
    public var merchantCategoryCode: String
    public var intent: Intent

    enum CodingKeys: String, CodingKey {
        case idempotencyKey = "idempotency_key"
        case amount, currency
        case merchantID = "merchant_id"
        case merchantCategoryCode = "merchant_category_code"
        case intent
    }

    public init(idempotencyKey: String, amount: Int64, currency: String, merchantID: String, merchantCategoryCode: String, intent: Intent) {
        self.idempotencyKey = idempotencyKey
        self.amount = amount
        self.currency = currency
        self.merchantID = merchantID
        self.merchantCategoryCode = merchantCategoryCode
        self.intent = intent
    }

    public func validate() throws(WireError) {
        guard (1...200).contains(self.idempotencyKey.utf8.count), self.idempotencyKey.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw WireError(.invalidRequest, "field 'idempotency_key' must be 1 to 200 printable ASCII characters without spaces")
        }
        guard self.amount > 0, self.amount <= 1_000_000_000_000_000 else {
            throw WireError(.invalidRequest, "field 'amount' must be a positive integer number of minor units (at most 10^15)")
        }
        guard self.currency.utf8.count == 3, self.currency.utf8.allSatisfy({ (0x41...0x5A).contains($0) }) else {
            throw WireError(.invalidRequest, "field 'currency' must be an ISO 4217 code of three capital letters, e.g. USD")
        }
        try TextRules.identifier(self.merchantID, field: "merchant_id", maximumBytes: 128)
        guard self.merchantCategoryCode.utf8.count == 4, self.merchantCategoryCode.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else {
            throw WireError(.invalidRequest, "field 'merchant_category_code' must be four digits (ISO 18245), e.g. 5734")
        }
        try self.intent.validate()
    }
}

/// What the agent says it is buying. Its SHA-256 (of the canonical JSON) is bound into the authorization.
public struct Intent: Codable, Sendable, Hashable {
    public var description: String
    public var lineItems: [LineItem]?
    /// The merchant's order or cart hash, when the agent has one instead of line items.
    public var orderHash: String?

    enum CodingKeys: String, CodingKey {
        case description
        case lineItems = "line_items"
        case orderHash = "order_hash"
    }

    public init(description: String, lineItems: [LineItem]? = nil, orderHash: String? = nil) {
        self.description = description
        self.lineItems = lineItems
        self.orderHash = orderHash
    }

    func validate() throws(WireError) {
        try TextRules.text(self.description, field: "intent.description", maximumBytes: 1000)
        if self.lineItems == nil, self.orderHash == nil {
            throw WireError(.invalidRequest, "field 'intent' needs 'line_items' or 'order_hash'")
        }
        if let lineItems = self.lineItems {
            guard (1...100).contains(lineItems.count) else {
                throw WireError(.invalidRequest, "field 'intent.line_items' must hold 1 to 100 items")
            }
            for (index, item) in lineItems.enumerated() {
                let field = "intent.line_items[\(index)]"
                try TextRules.text(item.description, field: "\(field).description", maximumBytes: 500)
                guard item.quantity > 0, item.quantity <= 1_000_000 else {
                    throw WireError(.invalidRequest, "field '\(field).quantity' must be 1 to 1000000")
                }
                guard item.unitAmount >= 0, item.unitAmount <= 1_000_000_000_000_000 else {
                    throw WireError(.invalidRequest, "field '\(field).unit_amount' must be 0 to 10^15 minor units")
                }
                if let category = item.category {
                    try TextRules.identifier(category, field: "\(field).category", maximumBytes: 64)
                }
            }
        }
        if let orderHash = self.orderHash {
            try TextRules.identifier(orderHash, field: "intent.order_hash", maximumBytes: 128)
        }
    }
}

public struct LineItem: Codable, Sendable, Hashable {
    public var description: String
    public var quantity: Int64
    /// Integer minor units per item.
    public var unitAmount: Int64
    /// Optional category, e.g. an MCC or the merchant's own product category.
    public var category: String?

    enum CodingKeys: String, CodingKey {
        case description, quantity
        case unitAmount = "unit_amount"
        case category
    }

    public init(description: String, quantity: Int64, unitAmount: Int64, category: String? = nil) {
        self.description = description
        self.quantity = quantity
        self.unitAmount = unitAmount
        self.category = category
    }
}

/// `AUTHORIZE_RESPONSE` when signed: the signed authorization.
public struct Authorization: Codable, Sendable, Hashable {
    /// Always `authorized`.
    public var status: String = "authorized"
    /// The compact JWS (ES256) to hand to the merchant.
    public var jws: String
    /// The `jti` claim: base64url of the issue time in seconds (4 bytes) and its millisecond (2 bytes), then 80 random bits.
    public var authorizationID: String
    public var tier: String
    /// `<key name>/v<version>`, the JWS header's `kid`.
    public var kid: String
    public var keyName: String
    public var keyVersion: Int
    /// `software` or `hsm`.
    public var keyBackend: String
    /// The `exp` claim, seconds since 1970.
    public var expiresAt: Int64
    /// Who approved it, when its tier needs approval (also in the signed claims).
    public var approvers: [String]?

    enum CodingKeys: String, CodingKey {
        case status, approvers
        case jws
        case authorizationID = "authorization_id"
        case tier, kid
        case keyName = "key_name"
        case keyVersion = "key_version"
        case keyBackend = "key_backend"
        case expiresAt = "expires_at"
    }

    public init(
        jws: String, authorizationID: String, tier: String, kid: String, keyName: String, keyVersion: Int, keyBackend: String, expiresAt: Int64,
        approvers: [String]? = nil
    ) {
        self.approvers = approvers
        self.jws = jws
        self.authorizationID = authorizationID
        self.tier = tier
        self.kid = kid
        self.keyName = keyName
        self.keyVersion = keyVersion
        self.keyBackend = keyBackend
        self.expiresAt = expiresAt
    }
}

/// `GET_KEYS_RESPONSE` is the ``JWKSet`` itself.
public typealias KeysResponse = JWKSet

/// `VOID` (agent → server): withdraw one of the agent's own unexpired authorizations; its amount no longer
/// counts against the agent's budgets. The JWS stays cryptographically valid until its `exp`.
public typealias VoidRequest = AuthorizationReference

/// Names one authorization: the body of `VOID`, `APPROVALS_SHOW`, `APPROVALS_APPROVE` and `APPROVALS_DENY`.
public struct AuthorizationReference: Codable, Sendable, Hashable, ValidatedRequest {
    public var authorizationID: String

    enum CodingKeys: String, CodingKey {
        case authorizationID = "authorization_id"
    }

    public init(authorizationID: String) {
        self.authorizationID = authorizationID
    }

    public func validate() throws(WireError) {
        // Ids are base64url (22 characters today); anything else can name no authorization.
        guard (1...64).contains(self.authorizationID.utf8.count), self.authorizationID.utf8.allSatisfy(Base64URL.isAlphabet) else {
            throw WireError(.invalidRequest, "field 'authorization_id' must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'")
        }
    }
}

/// `VOID_RESPONSE`.
public struct Voided: Codable, Sendable, Hashable {
    public var authorizationID: String
    /// Seconds since 1970; a repeated VOID returns the first time.
    public var voidedAt: Int64

    enum CodingKeys: String, CodingKey {
        case authorizationID = "authorization_id"
        case voidedAt = "voided_at"
    }

    public init(authorizationID: String, voidedAt: Int64) {
        self.authorizationID = authorizationID
        self.voidedAt = voidedAt
    }
}
