import Foundation
import Signing
import Wire

// The requests of security teams: keys and credentials (admins), and the audit log (auditors, admins, approvers).
extension CountersignClient {
    // MARK: Keys (admins)

    /// Every key version with its state, backend, times and signature count.
    public func listKeys() async throws -> [KeyVersionInfo] {
        try await self.request(.keysList, Empty(), expecting: KeysList.self).keys
    }

    /// Creates version N+1 of a key and (unless `stage`) makes it the active one.
    public func rotateKey(name: String, stage: Bool = false, backend: String? = nil) async throws -> KeyVersionInfo {
        try await self.request(.keysRotate, KeysRotateRequest(name: name, stage: stage, backend: backend), expecting: KeyVersionInfo.self)
    }

    /// Makes a pending key version the active one of its name (admins and approvers); the version it replaces becomes
    /// verify-only and stays published.
    ///
    /// - Parameter kid: `<name>/v<version>`, e.g. `standard/v2`.
    /// - Throws: ``WireError`` `KEY_NOT_FOUND`, or `KEY_STATE_CONFLICT` when the version is not pending.
    public func activateKey(kid: String) async throws -> KeyVersionInfo {
        try await self.request(.keysActivate, KeyReference(kid: kid), expecting: KeyVersionInfo.self)
    }

    /// Retires a verify-only key version (admins and approvers): it is no longer published in the key set.
    ///
    /// - Parameters:
    ///   - kid: `<name>/v<version>`, e.g. `standard/v2`.
    ///   - force: retire even though authorizations it signed are unexpired (they stop verifying); also retires a
    ///     pending version.
    /// - Throws: ``WireError`` `KEY_IN_USE` while authorizations it signed are unexpired (without `force`),
    ///   `KEY_STATE_CONFLICT` when the version is in another state, `KEY_NOT_FOUND`.
    public func retireKey(kid: String, force: Bool = false) async throws -> KeyVersionInfo {
        try await self.request(.keysRetire, KeysRetireRequest(kid: kid, force: force), expecting: KeyVersionInfo.self)
    }

    /// Asks to destroy a retired version; a second, different admin's call destroys it.
    public func destroyKey(kid: String) async throws -> KeyDestruction {
        try await self.request(.keysDestroy, KeyReference(kid: kid), expecting: KeyDestruction.self)
    }

    /// Adopts a key pair made on the token (by `label` or hex `id`) as the next, active version of `name`.
    public func adoptKey(name: String, label: String? = nil, id: String? = nil) async throws -> KeyVersionInfo {
        try await self.request(.keysAdopt, KeysAdoptRequest(name: name, label: label, id: id), expecting: KeyVersionInfo.self)
    }

    /// Gives a principal a new credential key; the old one keeps working for `graceSeconds` (default 1 day).
    public func rotateCredential(id: String, publicKey: CredentialPublicKey, graceSeconds: Int64? = nil) async throws -> PrincipalInfo {
        let request = AgentsRotateCredentialRequest(
            agentID: id, algorithm: publicKey.algorithm, publicKey: Base64URL.encode(publicKey.rawRepresentation), graceSeconds: graceSeconds
        )
        return try await self.request(.agentsRotateCredential, request, expecting: PrincipalInfo.self)
    }

    /// A one-time link (15 minutes) for `principal` to register a passkey in the approvals console; a principal not yet
    /// registered is created with `role` (approver unless given), able to sign in with its passkeys only.
    public func enrollApprover(_ principal: String, role: Role? = nil) async throws -> EnrollmentLink {
        try await self.request(.approversEnroll, ApproversEnrollRequest(principal: principal, role: role), expecting: EnrollmentLink.self)
    }

    // MARK: Audit log (auditors and admins)

    /// The audit log's latest signed checkpoint (auditors, admins and approvers); if the log grew since the last
    /// checkpoint, the server signs a new one first.
    ///
    /// - Throws: ``WireError`` `AUDIT_UNAVAILABLE` when the server keeps no audit log or cannot sign a checkpoint.
    public func auditCheckpoint() async throws -> AuditCheckpoint {
        try await self.request(.auditCheckpoint, Empty(), expecting: AuditCheckpoint.self)
    }

    /// A self-contained inclusion proof of an entry, by index or by the authorization it decided.
    public func auditProof(index: Int64? = nil, authorizationID: String? = nil) async throws -> AuditInclusionProof {
        try await self.request(.auditProof, AuditProofRequest(index: index, authorizationID: authorizationID), expecting: AuditInclusionProof.self)
    }

    /// An RFC 6962 proof that the log at the checkpoint of `newSize` entries extends the one at the checkpoint of
    /// `oldSize` entries, with both signed checkpoints (auditors, admins and approvers).
    ///
    /// - Parameters:
    ///   - oldSize: the size of an earlier checkpoint, e.g. the last one this auditor kept; at least 1.
    ///   - newSize: the size of a later checkpoint; `nil` for the latest.
    /// - Throws: ``WireError`` `INVALID_REQUEST` when `oldSize` is below 1 or above `newSize`, or no checkpoint has exactly that many entries.
    public func auditConsistency(oldSize: Int, newSize: Int? = nil) async throws -> AuditConsistencyProof {
        try await self.request(.auditConsistency, AuditConsistencyRequest(oldSize: oldSize, newSize: newSize), expecting: AuditConsistencyProof.self)
    }

    /// One page of the audit log's entries, in order (auditors, admins and approvers).
    ///
    /// - Parameters:
    ///   - from: the index of the first entry; 0 is the log's first.
    ///   - limit: the most entries to return, 1 to 1000.
    /// - Returns: the entries (fewer than `limit`, or none, at the end of the log) and the log's size now.
    /// - Throws: ``WireError`` `INVALID_REQUEST` when `from` is negative or `limit` is out of range.
    public func auditEntries(from: Int64, limit: Int = 100) async throws -> AuditEntries {
        try await self.request(.auditEntries, AuditEntriesRequest(from: from, limit: limit), expecting: AuditEntries.self)
    }
}
