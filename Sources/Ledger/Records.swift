import Foundation
import GRDB
import Policy

/// An authorization as the store keeps it, issued or awaiting approval: enough to answer a retry with the
/// very same response, and for approvers to see exactly what was asked.
public struct AuthorizationRecord: Codable, Sendable, Hashable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "authorization"

    public enum Status: String, Codable, Sendable, Hashable {
        /// Signed and sent.
        case authorized
        /// Waiting for its approvers' quorum; its budget is held until the approval deadline.
        case pendingApproval = "pending_approval"
        /// The quorum approved; being signed.
        case approved
        /// An approver denied it; its hold is released.
        case denied
        /// The approval deadline passed; its hold is released.
        case expired
    }

    /// The `jti`.
    public var id: String
    public var agent: String
    public var idempotencyKey: String
    /// SHA-256 of the request's canonical JSON: a retry must match it.
    public var requestHash: Data
    /// The response sent, as JSON; a retry gets these bytes back.
    public var response: Data
    public var amount: Int64
    public var currency: String
    public var merchant: String
    public var tier: String
    /// Empty until signed.
    public var kid: String
    /// The JWS's `exp` once signed; the approval deadline while pending.
    public var expiresAt: Int64
    public var createdAt: Int64
    /// When the agent voided it; a voided authorization no longer counts against budgets.
    public var voidedAt: Int64?
    public var status: Status
    /// The policy's decision record (canonical JSON).
    public var decision: Data?
    /// The request as the agent sent it (canonical JSON), for approvers to read.
    public var request: Data?
    /// Distinct approvals needed; `nil` when the tier needs none.
    public var quorum: Int?
    public var approvalExpiresAt: Int64?
    /// The index of its decision's audit entry (the `audit_log_index` claim).
    public var auditIndex: Int64?

    public init(
        id: String, agent: String, idempotencyKey: String, requestHash: Data, response: Data, amount: Int64, currency: String, merchant: String = "",
        tier: String, kid: String, expiresAt: Int64, createdAt: Int64, voidedAt: Int64? = nil, status: Status = .authorized, decision: Data? = nil,
        request: Data? = nil, quorum: Int? = nil, approvalExpiresAt: Int64? = nil
    ) {
        self.id = id
        self.agent = agent
        self.idempotencyKey = idempotencyKey
        self.requestHash = requestHash
        self.response = response
        self.amount = amount
        self.currency = currency
        self.merchant = merchant
        self.tier = tier
        self.kid = kid
        self.expiresAt = expiresAt
        self.createdAt = createdAt
        self.voidedAt = voidedAt
        self.status = status
        self.decision = decision
        self.request = request
        self.quorum = quorum
        self.approvalExpiresAt = approvalExpiresAt
    }

    /// The status at `now`: a pending approval past its deadline is expired even before anyone looks.
    public func status(at now: Int64) -> Status {
        if self.status == .pendingApproval, let deadline = self.approvalExpiresAt, now >= deadline { return .expired }
        return self.status
    }
}

/// A budget hold: an authorization's amount counted at one scope (agent, team or organization) from the
/// moment it was decided, until it is released (void, deny) or, while pending, its approval deadline passes.
public struct HoldRecord: Codable, Sendable, Hashable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "hold"

    public var authorizationID: String
    /// `agent:<id>`, `team:<name>` or `org:<name>`.
    public var scope: String
    public var currency: String
    public var amount: Int64
    public var createdAt: Int64
    /// For a pending approval's hold: the deadline after which it no longer counts.
    public var expiresAt: Int64?
    public var releasedAt: Int64?

    public init(authorizationID: String, scope: String, currency: String, amount: Int64, createdAt: Int64, expiresAt: Int64?, releasedAt: Int64?) {
        self.authorizationID = authorizationID
        self.scope = scope
        self.currency = currency
        self.amount = amount
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.releasedAt = releasedAt
    }

    /// Whether it counts at `now`: not released by then, and (while pending) not past its deadline.
    public func counts(at now: Int64) -> Bool {
        (self.releasedAt.map { $0 > now } ?? true) && (self.expiresAt.map { $0 > now } ?? true)
    }
}

/// One approver's decision on a pending authorization.
public struct ApprovalRecord: Codable, Sendable, Hashable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "approval"

    public enum Verdict: String, Codable, Sendable, Hashable {
        case approve
        case deny
    }

    public var authorizationID: String
    public var approver: String
    public var verdict: Verdict
    public var decidedAt: Int64

    public init(authorizationID: String, approver: String, verdict: Verdict, decidedAt: Int64) {
        self.authorizationID = authorizationID
        self.approver = approver
        self.verdict = verdict
        self.decidedAt = decidedAt
    }
}

/// A refused request and the decision that refused it.
public struct RefusalRecord: Codable, Sendable, Hashable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "refusal"

    public var id: Int64?
    public var agent: String
    public var idempotencyKey: String
    public var code: String
    public var decision: Data
    public var createdAt: Int64
    public var auditIndex: Int64?
    /// The request as the agent sent it (canonical JSON), for `countersign policy replay`; `nil` for refusals
    /// recorded before requests were kept, and for requests refused before they could be read.
    public var request: Data?

    public init(agent: String, idempotencyKey: String, code: String, decision: Data, createdAt: Int64, request: Data? = nil) {
        self.agent = agent
        self.idempotencyKey = idempotencyKey
        self.code = code
        self.decision = decision
        self.createdAt = createdAt
        self.request = request
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) {
        self.id = inserted.rowID
    }
}

/// What the policy may want to know of an agent's past, read in one transaction.
public struct SpendingFacts: Sendable, Hashable {
    public var historyCount: Int
    public var historyMeanAmount: Int64
    public var merchantPaidBefore: Bool
    public var recentSpendAtMerchant: Int64

    public init(historyCount: Int, historyMeanAmount: Int64, merchantPaidBefore: Bool, recentSpendAtMerchant: Int64) {
        self.historyCount = historyCount
        self.historyMeanAmount = historyMeanAmount
        self.merchantPaidBefore = merchantPaidBefore
        self.recentSpendAtMerchant = recentSpendAtMerchant
    }
}

/// A scope's spending in one budget window.
public struct ScopeSpending: Sendable, Hashable {
    /// Everything counted: authorized plus held for pending approvals.
    public var counted: Int64
    /// The part held for pending approvals.
    public var pending: Int64

    public init(counted: Int64, pending: Int64) {
        self.counted = counted
        self.pending = pending
    }
}

// Every decision inserts these rows; one cached statement each costs a fraction of GRDB's record encoding.
// Their columns are the records' own (IdempotencyTests read rows written this way back as records).

extension AuthorizationRecord {
    func insertRow(_ db: Database) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO authorization (id, agent, idempotencyKey, requestHash, response, amount, currency, merchant, tier, kid, expiresAt,
                    createdAt, voidedAt, status, decision, request, quorum, approvalExpiresAt, auditIndex)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [
                self.id, self.agent, self.idempotencyKey, self.requestHash, self.response, self.amount, self.currency, self.merchant, self.tier, self.kid,
                self.expiresAt, self.createdAt, self.voidedAt, self.status.rawValue, self.decision, self.request, self.quorum, self.approvalExpiresAt,
                self.auditIndex,
            ]
        )
    }
}

extension HoldRecord {
    func insertRow(_ db: Database) throws {
        try db.cachedStatement(
            sql: "INSERT INTO hold (authorizationID, scope, currency, amount, createdAt, expiresAt, releasedAt) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ).execute(arguments: [self.authorizationID, self.scope, self.currency, self.amount, self.createdAt, self.expiresAt, self.releasedAt])
    }
}

extension RefusalRecord {
    func insertRow(_ db: Database) throws {
        try db.cachedStatement(sql: "INSERT INTO refusal (agent, idempotencyKey, code, decision, createdAt, auditIndex, request) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .execute(arguments: [self.agent, self.idempotencyKey, self.code, self.decision, self.createdAt, self.auditIndex, self.request])
    }
}
