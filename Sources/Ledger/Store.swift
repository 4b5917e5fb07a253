import Audit
import CountersignCore
import Foundation
import Policy

// The store as the server sees it: six narrow protocols, one per concern, and `Store`, all of them. The server
// depends on these only; `LedgerStore` (SQLite through GRDB, the embedded default) and `PostgresStore` (several
// servers on one PostgreSQL) implement them, and one conformance suite runs against both.
//
// Every failure is a ``LedgerError``: a refusal decided by the store (not found, a conflict) with its own code, a
// failure of the store itself as `STORE_UNAVAILABLE` (retryable). A method that writes returns only once the
// write is durable; one that throws wrote nothing.

/// Authorizations, their budget holds, refusals, voids and what is spent.
public protocol AuthorizationLedger: Sendable {
    /// Records an authorization (signed, or pending approval) durably with a hold at each of `scopes`, unless it
    /// would take a scope past one of `limits`; the check and the holds are one atomic step against every other
    /// writer of the store, whichever server it runs in.
    ///
    /// - Parameters:
    ///   - audit: its audit entry, at an index from ``AuditLedger/reserveAuditIndex()``; `nil` makes a plain one.
    ///   - alternatives: what the entry becomes if the record is not stored (over a limit, or a twin was first).
    /// - Returns: the record stored for the agent's idempotency key (`record`, or the one a concurrent request
    ///   with the same key stored first), or the limit it would pass.
    func recordAuthorization(
        _ record: AuthorizationRecord, scopes: [BudgetScope]?, limits: [BudgetCheck], audit: AuditEntry?, alternatives: AuditAlternatives?
    ) async throws -> RecordingOutcome

    /// Records a refused request's decision with its audit entry.
    func recordRefusal(_ refusal: RefusalRecord, audit: AuditEntry?) async throws

    func refusals(agent: String) async throws -> [RefusalRecord]

    /// Voids an agent's own authorization.
    /// - Returns: the record, with the time it was first voided.
    /// - Throws: `AUTHORIZATION_NOT_FOUND` (no such id, or another agent's, in the same words),
    ///   `AUTHORIZATION_EXPIRED` (nothing left to withdraw).
    func voidAuthorization(id: String, agent: String, at now: Int64) async throws -> AuthorizationRecord

    /// What counts against `scope`'s budget in `currency` since `windowStart`, at `now`.
    func spent(scope: BudgetScope, currency: String, since windowStart: Int64, now: Int64) async throws -> Int64

    /// A scope's spending in one window, with the part held for pending approvals.
    func spending(scope: BudgetScope, currency: String, since windowStart: Int64, now: Int64) async throws -> ScopeSpending

    /// The agent's history for escalation, in one read.
    func spendingFacts(
        agent: String, currency: String, merchant: String, historySince: Int64, splittingSince: Int64, now: Int64
    ) async throws
        -> SpendingFacts

    /// The authorization an agent obtained with an idempotency key, if any. An implementation may answer a key
    /// it has certainly never seen from memory unless `certain` (for a refusal that must not miss a twin).
    func authorization(agent: String, idempotencyKey: String, certain: Bool) async throws -> AuthorizationRecord?

    func authorization(id: String) async throws -> AuthorizationRecord?

    func authorizationCount() async throws -> Int

    /// The agent's authorizations created in `(after, upTo]` (seconds since 1970), oldest first: what the anomaly
    /// model learns from, once they can no longer be voided or approved.
    func authorizations(agent: String, createdAfter after: Int64, upTo: Int64) async throws -> [AuthorizationRecord]
}

extension AuthorizationLedger {
    public func recordAuthorization(
        _ record: AuthorizationRecord, scopes: [BudgetScope]? = nil, limits: [BudgetCheck] = [], audit: AuditEntry? = nil,
        alternatives: AuditAlternatives? = nil
    ) async throws -> RecordingOutcome {
        try await self.recordAuthorization(record, scopes: scopes, limits: limits, audit: audit, alternatives: alternatives)
    }

    public func recordRefusal(_ refusal: RefusalRecord) async throws {
        try await self.recordRefusal(refusal, audit: nil)
    }

    public func authorization(agent: String, idempotencyKey: String) async throws -> AuthorizationRecord? {
        try await self.authorization(agent: agent, idempotencyKey: idempotencyKey, certain: false)
    }

    /// What an agent spent in `currency` since `windowStart` (its own scope).
    public func spent(agent: String, currency: String, since windowStart: Int64, now: Int64 = .max - 1) async throws -> Int64 {
        try await self.spent(scope: .agent(agent), currency: currency, since: windowStart, now: now)
    }
}

/// Authorizations waiting for human approval.
public protocol ApprovalLedger: Sendable {
    /// Requests waiting for approval at `now`, oldest first.
    func pendingApprovals(now: Int64) async throws -> [AuthorizationRecord]

    /// The verdicts given on an authorization, in the order given.
    func approvals(of id: String) async throws -> [ApprovalRecord]

    /// Records one approver's verdict, atomically with its effect: a deny releases the holds; the approval that
    /// completes the quorum moves the record to `approved`, so exactly one caller (in any server) signs it.
    /// - Throws: `AUTHORIZATION_NOT_FOUND`; `FORBIDDEN` when the approver is the requesting agent;
    ///   `APPROVAL_EXPIRED`; `APPROVAL_CLOSED` when already decided or withdrawn; `ALREADY_DECIDED`.
    func decideApproval(id: String, approver: String, verdict: ApprovalRecord.Verdict, at now: Int64) async throws -> ApprovalStep

    /// Marks every pending approval past its deadline `expired` and releases its holds, each with its audit entry.
    /// - Returns: the records expired now (by this call; another server may expire others).
    func expirePendingApprovals(at now: Int64, entry: @escaping @Sendable (Int64, AuthorizationRecord) -> AuditEntry) async throws -> [AuthorizationRecord]

    /// Stores the signed answer of an approved authorization, with its audit entry; its holds now count like any
    /// authorization's.
    func completeApproval(id: String, response: Data, kid: String, expiresAt: Int64, audit: AuditEntry) async throws -> AuthorizationRecord
}

/// Principals: agents, admins, approvers and auditors, known by their public credential keys.
public protocol PrincipalLedger: Sendable {
    /// - Throws: `PRINCIPAL_EXISTS` when the id is taken, even by a revoked principal.
    func insertPrincipal(_ principal: PrincipalRecord) async throws
    func principal(id: String) async throws -> PrincipalRecord?
    func principals() async throws -> [PrincipalRecord]
    /// Replaces a principal's credential key; the old one is still accepted until `graceUntil`.
    /// - Throws: `PRINCIPAL_NOT_FOUND` (also for a revoked principal).
    func rotatePrincipalKey(id: String, algorithm: String, publicKey: Data, graceUntil: Int64) async throws -> PrincipalRecord
    /// Marks a principal revoked; it can never authenticate again.
    func revokePrincipal(id: String, at time: Int64) async throws -> PrincipalRecord
}

/// Signing key versions and their lifecycle.
public protocol KeyVersionLedger: Sendable {
    /// - Throws: `KEY_VERSION_EXISTS`: versions are never reused.
    func insertKeyVersion(_ key: KeyVersionRecord) async throws
    func keyVersions() async throws -> [KeyVersionRecord]
    func keyVersion(name: String, version: Int) async throws -> KeyVersionRecord?
    /// One above every version of `name` ever made, destroyed ones included.
    func nextKeyVersion(name: String) async throws -> Int
    /// Makes a pending version the active one; the active one before becomes verify-only. One transaction.
    /// - Returns: the versions changed, the new active one first.
    func activateKeyVersion(name: String, version: Int, at now: Int64) async throws -> [KeyVersionRecord]
    /// Retires a verify-only version. `KEY_IN_USE` while authorizations it signed are unexpired, unless `force`.
    func retireKeyVersion(name: String, version: Int, force: Bool, at now: Int64) async throws -> KeyVersionRecord
    /// One admin's request to destroy a retired version; a second, different admin confirms within `confirmWithin`.
    func requestDestruction(name: String, version: Int, by admin: String, at now: Int64, confirmWithin: Int64) async throws -> DestructionStep
    /// Records that a version's material is gone: the sealed software key is erased with it.
    func markDestroyed(name: String, version: Int, at now: Int64) async throws -> KeyVersionRecord
    /// Authorizations and checkpoints signed by each `kid`.
    func signatureCounts() async throws -> [String: Int]
}

/// The audit log: one sequence of indexes and one Merkle tree, whatever number of servers write it.
public protocol AuditLedger: Sendable {
    /// Reserves the next index of the log; the caller must write it (``AuthorizationLedger/recordAuthorization``,
    /// ``recordAudit(_:)``) or it becomes a `lost` entry.
    func reserveAuditIndex() async throws -> Int64

    /// Appends an entry (admin actions, server events) durably. - Returns: its index.
    @discardableResult
    func appendAudit(_ make: (Int64) -> AuditEntry) async throws -> Int64

    /// Writes the entry of an index reserved earlier.
    func recordAudit(_ entry: AuditEntry) async throws

    /// The size and root of the log's contiguous prefix, as the next checkpoint would state them.
    var auditHead: (size: Int, root: Merkle.Hash) { get }

    /// The number of entries in the log's contiguous prefix.
    var auditSize: Int { get }

    func storeCheckpoint(_ checkpoint: CheckpointRecord) async throws
    func latestCheckpoint() async throws -> CheckpointRecord?
    /// The latest checkpoint of exactly `size` entries.
    func checkpoint(size: Int) async throws -> CheckpointRecord?
    func checkpointCount() async throws -> Int
    /// Entries `[from, from + limit)`, in order.
    func auditEntries(from: Int64, limit: Int) async throws -> [(index: Int64, entry: Data)]
    /// The leaf hashes of the first `size` entries.
    func auditLeafHashes(size: Int) async throws -> [Merkle.Hash]
}

/// Small named values kept across restarts (the modes switched on, the witness's last cosigned size).
public protocol SettingsLedger: Sendable {
    /// The value stored under `name`, storing `proposed` first if there is none. Atomic: racing callers get one value.
    func setting(_ name: String, storingIfAbsent proposed: Data) async throws -> Data
    /// Stores `value` under `name`, replacing any value.
    func setSetting(_ name: String, to value: Data) async throws
    func setting(_ name: String) async throws -> Data?
}

/// The approvals console's passkeys and the one-time links that register them.
public protocol PasskeyLedger: Sendable {
    func insertEnrollment(_ enrollment: EnrollmentRecord) async throws
    func enrollment(tokenHash: Data) async throws -> EnrollmentRecord?
    /// Uses the enrollment link and stores its passkey, in one transaction: a link registers one passkey, once.
    /// - Throws: `ENROLLMENT_INVALID` (unknown, used, expired, or another principal's); `PRINCIPAL_EXISTS` when the
    ///   credential is already registered.
    func completeEnrollment(tokenHash: Data, passkey: PasskeyRecord, at now: Int64) async throws
    func passkeys(principal: String) async throws -> [PasskeyRecord]
    func passkey(credentialID: Data) async throws -> PasskeyRecord?
    /// Stores a newer signature counter, atomically against every server: `false` when the stored one is not below it
    /// (a replayed or cloned assertion raced this one), unless both are 0 (an authenticator without a counter).
    func advanceSignCount(credentialID: Data, to count: Int64, at now: Int64) async throws -> Bool
}

/// What another server changed in a shared store: the caches a server keeps (principals, modes, key versions, the
/// waiters of an approval) reload what changed.
public enum StoreChange: Sendable, Hashable {
    /// An authorization's status changed (a verdict, an approval completed, a void, an expiry).
    case authorization(id: String)
    /// A principal was registered, rotated or revoked.
    case principal(id: String)
    case setting(name: String)
    /// A key version was added or changed state.
    case keyVersions
    /// Changes may have been missed (the feed reconnected): reload everything.
    case everything
}

/// Every concern of the store, and its health.
public protocol Store: AuthorizationLedger, ApprovalLedger, PrincipalLedger, KeyVersionLedger, AuditLedger, SettingsLedger, PasskeyLedger {
    /// Where the store is, for logs and errors (a path, or `postgres://user@host:port/database`; never a password).
    var location: String { get }

    /// Store transactions that failed since it opened.
    var writeFailures: Int { get }

    /// Why the store is not fit to serve, or `nil`.
    func notReadyBecause() async -> String?

    /// How many transactions the group committer ran, and for how many records.
    var groupCommitStatistics: (transactions: Int, records: Int) { get }

    /// Whether this server signs the log's checkpoints now: always for a store of one server; in a cluster, the
    /// one server holding the lease.
    var leadsCheckpoints: Bool { get }

    /// Lets go of connections and background work; the store is not used after.
    func close() async

    /// What other servers change, as it happens (within a second). A store that only this server writes has
    /// nothing to say: its stream finishes at once.
    func changes() -> AsyncStream<StoreChange>
}
