import Policy

// Approvals, budgets and contexts. Field names are snake_case on the wire; docs/protocol.md lists them.

/// `AUTHORIZE_RESPONSE` when the tier needs people to approve: the budget is held until `approval_expires_at`.
public struct PendingAuthorization: Codable, Sendable, Hashable {
    /// Always `pending_approval`.
    public var status: String = "pending_approval"
    public var authorizationID: String
    public var tier: String
    public var approvalsRequired: Int
    /// Approvers who approved so far.
    public var approvers: [String]
    public var approvalExpiresAt: Int64

    enum CodingKeys: String, CodingKey {
        case status
        case authorizationID = "authorization_id"
        case tier
        case approvalsRequired = "approvals_required"
        case approvers
        case approvalExpiresAt = "approval_expires_at"
    }

    public init(authorizationID: String, tier: String, approvalsRequired: Int, approvers: [String], approvalExpiresAt: Int64) {
        self.authorizationID = authorizationID
        self.tier = tier
        self.approvalsRequired = approvalsRequired
        self.approvers = approvers
        self.approvalExpiresAt = approvalExpiresAt
    }
}

/// The body of `AUTHORIZE_RESPONSE` and `FETCH_AUTHORIZATION_RESPONSE`: told apart by `status`.
public enum AuthorizeOutcome: Codable, Sendable, Hashable {
    case authorized(Authorization)
    case pendingApproval(PendingAuthorization)

    private enum CodingKeys: String, CodingKey { case status }

    public init(from decoder: any Decoder) throws {
        let status = try decoder.container(keyedBy: CodingKeys.self).decode(String.self, forKey: .status)
        switch status {
        case "authorized": self = .authorized(try Authorization(from: decoder))
        case "pending_approval": self = .pendingApproval(try PendingAuthorization(from: decoder))
        default:
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.status], debugDescription: "unknown status '\(status)'"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .authorized(let authorization): try authorization.encode(to: encoder)
        case .pendingApproval(let pending): try pending.encode(to: encoder)
        }
    }

    public var authorizationID: String {
        switch self {
        case .authorized(let authorization): authorization.authorizationID
        case .pendingApproval(let pending): pending.authorizationID
        }
    }
}

/// `FETCH_AUTHORIZATION` (agent → server): the current state of one of the agent's authorizations. With
/// `wait_seconds`, the server holds the answer until the approval is decided, or that many seconds pass.
public struct FetchAuthorizationRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var authorizationID: String
    /// 0 to ``longestWaitSeconds``; the answer comes as soon as the approval is decided.
    public var waitSeconds: Int?

    /// The longest `wait_seconds` a request may ask for; `limits.idle_timeout` must be longer.
    public static let longestWaitSeconds = 60

    enum CodingKeys: String, CodingKey {
        case authorizationID = "authorization_id"
        case waitSeconds = "wait_seconds"
    }

    public init(authorizationID: String, waitSeconds: Int? = nil) {
        self.authorizationID = authorizationID
        self.waitSeconds = waitSeconds
    }

    public func validate() throws(WireError) {
        try AuthorizationReference(authorizationID: self.authorizationID).validate()
        if let wait = self.waitSeconds, !(0...Self.longestWaitSeconds).contains(wait) {
            throw WireError(.invalidRequest, "field 'wait_seconds' must be 0 to \(Self.longestWaitSeconds)")
        }
    }
}

/// A request waiting for approval, as approvers see it in a list.
public struct ApprovalSummary: Codable, Sendable, Hashable {
    public var authorizationID: String
    public var agent: String
    public var amount: Int64
    public var currency: String
    public var merchantID: String
    public var tier: String
    public var approvalsRequired: Int
    public var approvers: [String]
    public var requestedAt: Int64
    public var approvalExpiresAt: Int64
    /// `pending_approval`, `approved`, `authorized`, `denied` or `expired`.
    public var status: String
    /// One readable sentence: who wants to pay whom how much, for what.
    public var summary: String

    enum CodingKeys: String, CodingKey {
        case authorizationID = "authorization_id"
        case agent, amount, currency
        case merchantID = "merchant_id"
        case tier
        case approvalsRequired = "approvals_required"
        case approvers
        case requestedAt = "requested_at"
        case approvalExpiresAt = "approval_expires_at"
        case status, summary
    }

    public init(
        authorizationID: String, agent: String, amount: Int64, currency: String, merchantID: String, tier: String, approvalsRequired: Int,
        approvers: [String], requestedAt: Int64, approvalExpiresAt: Int64, status: String, summary: String
    ) {
        self.authorizationID = authorizationID
        self.agent = agent
        self.amount = amount
        self.currency = currency
        self.merchantID = merchantID
        self.tier = tier
        self.approvalsRequired = approvalsRequired
        self.approvers = approvers
        self.requestedAt = requestedAt
        self.approvalExpiresAt = approvalExpiresAt
        self.status = status
        self.summary = summary
    }
}

/// `APPROVALS_LIST_RESPONSE`: every request waiting for approval.
public struct ApprovalsList: Codable, Sendable, Hashable {
    public var approvals: [ApprovalSummary]

    public init(approvals: [ApprovalSummary]) {
        self.approvals = approvals
    }
}

/// One approver's verdict.
public struct ApprovalVerdict: Codable, Sendable, Hashable {
    public var approver: String
    /// `approve` or `deny`.
    public var verdict: String
    public var decidedAt: Int64

    enum CodingKeys: String, CodingKey {
        case approver, verdict
        case decidedAt = "decided_at"
    }

    public init(approver: String, verdict: String, decidedAt: Int64) {
        self.approver = approver
        self.verdict = verdict
        self.decidedAt = decidedAt
    }
}

/// `APPROVALS_SHOW_RESPONSE`, and the answer to `APPROVALS_APPROVE` / `APPROVALS_DENY`: the exact request the
/// agent sent, the policy's decision record, and the verdicts so far.
public struct ApprovalDetail: Codable, Sendable, Hashable {
    public var approval: ApprovalSummary
    public var request: AuthorizeRequest
    public var decision: DecisionRecord?
    public var verdicts: [ApprovalVerdict]

    public init(approval: ApprovalSummary, request: AuthorizeRequest, decision: DecisionRecord?, verdicts: [ApprovalVerdict]) {
        self.approval = approval
        self.request = request
        self.decision = decision
        self.verdicts = verdicts
    }
}

/// `BUDGETS_SHOW` (admin, or an agent for itself) names the agent.
public typealias BudgetsShowRequest = AgentReference

/// One budget of one scope in one currency, in its current window.
public struct BudgetLine: Codable, Sendable, Hashable {
    /// `agent:<id>`, `team:<name>` or `org:<name>`.
    public var scope: String
    public var window: String
    public var windowStart: Int64
    public var currency: String
    public var limit: Int64
    /// Authorized plus held for pending approvals.
    public var spent: Int64
    /// The part of `spent` held for pending approvals.
    public var pending: Int64
    public var remaining: Int64

    enum CodingKeys: String, CodingKey {
        case scope, window
        case windowStart = "window_start"
        case currency, limit, spent, pending, remaining
    }

    public init(scope: String, window: String, windowStart: Int64, currency: String, limit: Int64, spent: Int64, pending: Int64, remaining: Int64) {
        self.scope = scope
        self.window = window
        self.windowStart = windowStart
        self.currency = currency
        self.limit = limit
        self.spent = spent
        self.pending = pending
        self.remaining = remaining
    }
}

/// `BUDGETS_SHOW_RESPONSE`: every budget the agent's spending counts against (its own, its team's, its
/// organization's).
public struct BudgetsReport: Codable, Sendable, Hashable {
    public var agentID: String
    public var scopes: [String]
    public var budgets: [BudgetLine]

    enum CodingKeys: String, CodingKey {
        case agentID = "agent_id"
        case scopes, budgets
    }

    public init(agentID: String, scopes: [String], budgets: [BudgetLine]) {
        self.agentID = agentID
        self.scopes = scopes
        self.budgets = budgets
    }
}

/// A context as admins see it.
public struct ContextInfo: Codable, Sendable, Hashable {
    public var name: String
    /// `mode` (switched by admins) or `schedule`.
    public var kind: String
    public var inForce: Bool
    /// What it changes, for whom and when.
    public var summary: String

    enum CodingKeys: String, CodingKey {
        case name, kind
        case inForce = "in_force"
        case summary
    }

    public init(name: String, kind: String, inForce: Bool, summary: String) {
        self.name = name
        self.kind = kind
        self.inForce = inForce
        self.summary = summary
    }
}

/// `CONTEXTS_LIST_RESPONSE`.
public struct ContextsList: Codable, Sendable, Hashable {
    public var contexts: [ContextInfo]

    public init(contexts: [ContextInfo]) {
        self.contexts = contexts
    }
}

/// `CONTEXTS_SET` (admin): switch a mode on or off.
public struct ContextsSetRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var name: String
    public var active: Bool

    public init(name: String, active: Bool) {
        self.name = name
        self.active = active
    }

    public func validate() throws(WireError) {
        try TextRules.identifier(self.name, field: "name", maximumBytes: 64)
    }
}

/// `APPROVERS_ENROLL`: a one-time link for a person to register a passkey in the approvals console.
public struct ApproversEnrollRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var principal: String
    /// For a principal not yet registered: `approver` (the default), `admin` or `auditor`.
    public var role: Role?

    public init(principal: String, role: Role? = nil) {
        self.principal = principal
        self.role = role
    }

    public func validate() throws(WireError) {
        try PrincipalID.validate(self.principal, field: "principal")
        if self.role == .agent { throw WireError(.invalidRequest, "field 'role': agents do not use the console; give approver, admin or auditor") }
    }
}

/// The link, valid once until `expires_at`: the token is in its fragment, so it never reaches a log or a referrer.
public struct EnrollmentLink: Codable, Sendable, Hashable {
    public var principal: String
    public var role: Role
    public var url: String
    public var expiresAt: Int64

    enum CodingKeys: String, CodingKey {
        case principal, role, url
        case expiresAt = "expires_at"
    }

    public init(principal: String, role: Role, url: String, expiresAt: Int64) {
        self.principal = principal
        self.role = role
        self.url = url
        self.expiresAt = expiresAt
    }
}
