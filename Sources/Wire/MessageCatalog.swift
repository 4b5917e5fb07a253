/// Who may send a request.
public enum Senders: Sendable, Hashable {
    /// Only before the handshake completes (HELLO, AUTH).
    case handshake
    /// Any authenticated principal.
    case anyPrincipal
    case agents
    /// Admins and approvers.
    case administrative
    case approvers
    /// Auditors, admins and approvers.
    case auditReaders
    /// Admins and approvers, and an agent asking about itself (the handler checks which agent).
    case administrativeOrAgentItself

    /// Whether a principal of `role` may send it (after the handshake).
    public func admit(_ role: Role) -> Bool {
        switch self {
        case .handshake: false
        case .anyPrincipal, .administrativeOrAgentItself: true
        case .agents: role == .agent
        case .administrative: role.isAdministrative
        case .approvers: role == .approver
        case .auditReaders: role.readsAudit
        }
    }

    /// Who it is for, in the words of the FORBIDDEN message: "… is for admins; this credential is an agent's".
    var forWhom: String {
        switch self {
        case .handshake: "the handshake"
        case .anyPrincipal, .administrativeOrAgentItself: "everyone"
        case .agents: "agents"
        case .administrative: "admins"
        case .approvers: "approvers"
        case .auditReaders: "auditors and admins"
        }
    }

    /// - Throws: ``WireError`` `FORBIDDEN` when `role` may not send `type`.
    public func check(_ role: Role, sending type: MessageType) throws(WireError) {
        guard self.admit(role) else {
            throw WireError(.forbidden, "\(type.name ?? "this request") is for \(self.forWhom); this credential is an \(role.rawValue)'s")
        }
    }
}

/// One request of the protocol: its type, its name, who may send it. The server's routes, the handshake's
/// checks, the metrics' labels and docs/protocol.md's message table all come from (or are tested against)
/// ``MessageType/catalog``.
public struct MessageDescriptor: Sendable, Hashable {
    public let type: MessageType
    public let name: String
    public let senders: Senders
    /// It reads the audit log, whose answers can be large: served in fair turns between principals, and at
    /// most a few in flight per connection.
    public let readsLog: Bool
    /// It only reads or waits, so its work stops when its connection goes (nobody is left to read the answer, e.g. a
    /// page of the audit log, or a FETCH_AUTHORIZATION waiting for approvers). The others always run to their end,
    /// also for a client that left: an authorization stopped half-way would leave a reserved audit index and maybe a
    /// hold behind. A FETCH_AUTHORIZATION that finds its approval complete signs it outside this cancellation.
    public let cancellable: Bool

    init(_ type: MessageType, _ name: String, _ senders: Senders, readsLog: Bool = false, cancellable: Bool = false) {
        self.type = type
        self.name = name
        self.senders = senders
        self.readsLog = readsLog
        self.cancellable = cancellable
    }
}

extension MessageType {
    /// Every request, in the order of docs/protocol.md's table. The one place a new message is declared.
    public static let catalog: [MessageDescriptor] = [
        .init(.hello, "HELLO", .handshake),
        .init(.auth, "AUTH", .handshake),
        .init(.ping, "PING", .anyPrincipal, cancellable: true),
        .init(.authorize, "AUTHORIZE", .agents),
        .init(.getKeys, "GET_KEYS", .anyPrincipal, cancellable: true),
        .init(.void, "VOID", .agents),
        .init(.fetchAuthorization, "FETCH_AUTHORIZATION", .agents, cancellable: true),
        .init(.agentsAdd, "AGENTS_ADD", .administrative),
        .init(.agentsList, "AGENTS_LIST", .administrative, cancellable: true),
        .init(.agentsRevoke, "AGENTS_REVOKE", .administrative),
        .init(.approvalsList, "APPROVALS_LIST", .administrative, cancellable: true),
        .init(.approvalsShow, "APPROVALS_SHOW", .administrative, cancellable: true),
        .init(.approvalsApprove, "APPROVALS_APPROVE", .approvers),
        .init(.approvalsDeny, "APPROVALS_DENY", .approvers),
        .init(.budgetsShow, "BUDGETS_SHOW", .administrativeOrAgentItself, cancellable: true),
        .init(.contextsList, "CONTEXTS_LIST", .administrative, cancellable: true),
        .init(.contextsSet, "CONTEXTS_SET", .administrative),
        .init(.keysList, "KEYS_LIST", .administrative, cancellable: true),
        .init(.keysRotate, "KEYS_ROTATE", .administrative),
        .init(.keysActivate, "KEYS_ACTIVATE", .administrative),
        .init(.keysRetire, "KEYS_RETIRE", .administrative),
        .init(.keysDestroy, "KEYS_DESTROY", .administrative),
        .init(.keysAdopt, "KEYS_ADOPT", .administrative),
        .init(.auditCheckpoint, "AUDIT_CHECKPOINT", .auditReaders),
        .init(.auditProof, "AUDIT_PROOF", .auditReaders, readsLog: true),
        .init(.auditConsistency, "AUDIT_CONSISTENCY", .auditReaders, readsLog: true),
        .init(.auditEntries, "AUDIT_ENTRIES", .auditReaders, readsLog: true, cancellable: true),
        .init(.agentsRotateCredential, "AGENTS_ROTATE_CREDENTIAL", .administrative),
        .init(.approversEnroll, "APPROVERS_ENROLL", .administrative),
    ]

    static let descriptors: [MessageType: MessageDescriptor] = Dictionary(uniqueKeysWithValues: Self.catalog.map { ($0.type, $0) })

    /// This request's entry in ``catalog``; `nil` for anything else.
    public var descriptor: MessageDescriptor? { Self.descriptors[self] }
}
