import CountersignConfiguration
import Foundation
import Ledger
import Logging
import NIOCore
import Policy
import Signing
import Wire

/// Who sent a request: an authenticated principal whose credential is not revoked.
struct Caller: Sendable {
    let id: String
    let role: Role
}

/// An admin's or approver's action, written to the audit log after it succeeded (the request fails with
/// `AUDIT_UNAVAILABLE` if it cannot be).
struct AuditedAction: Sendable {
    var name: String
    var subject: String?
    var details: [String: String]? = nil
    var kind = "admin"
}

/// What a route answers: the response body, and the action to audit.
struct Answer: Sendable {
    var body: ByteBuffer
    var action: AuditedAction?

    init(_ value: some Encodable, audit action: AuditedAction? = nil) {
        self.body = WireJSON.encode(value)
        self.action = action
    }

    /// A body encoded already (AUTHORIZE's: the bytes its record stores).
    init(encoded body: ByteBuffer) {
        self.body = body
        self.action = nil
    }
}

/// One request type's handling. Who may send it comes from its ``MessageDescriptor`` (checked by the
/// ``RequestHandler`` before anything else); the body is decoded and validated by ``prepare`` at once, so a bad
/// body is refused before any wait; the work runs after.
struct Route: Sendable {
    let descriptor: MessageDescriptor
    let prepare: @Sendable (ByteBuffer, Caller) throws -> @Sendable () async throws -> Answer

    static func on<Request: ValidatedRequest>(
        _ type: MessageType, _ body: Request.Type, _ handle: @escaping @Sendable (Request, Caller) async throws -> Answer
    ) -> Route {
        guard let descriptor = type.descriptor else { preconditionFailure("\(type) is not in MessageType.catalog") }
        return Route(descriptor: descriptor) { bytes, caller in
            let request = try WireJSON.decode(Request.self, from: bytes)
            try request.validate()
            return { try await handle(request, caller) }
        }
    }
}

/// What the routes use: each concern's own service, nothing reached through another.
struct Services: Sendable {
    let authorizer: Authorizer
    let approvals: ApprovalDesk
    let budgets: BudgetReports
    let audit: AuditDesk
    let principals: PrincipalDirectory
    let keyRing: KeyRing
    let contexts: ContextDesk
    /// The console's passkeys, when `console:` is configured.
    let passkeys: PasskeyDesk?
    let notifier: ApprovalNotifier
    let store: any Store
    let wallClock: WallClock
    let random: RandomSource
    let logger: Logger

    /// Every request the server answers after the handshake: the one dispatch table. A test checks that it
    /// covers ``MessageType/catalog``, and another that the catalog is docs/protocol.md's table.
    var routes: [MessageType: Route] {
        let table: [Route] = [
            .on(.ping, Empty.self) { _, _ in Answer(Empty()) },
            .on(.getKeys, Empty.self) { _, _ in Answer(self.keyRing.keySet) },
            // Agents.
            .on(.authorize, AuthorizeRequest.self) { request, caller in Answer(encoded: try await self.authorizer.authorize(request, agent: caller.id).body) },
            .on(.fetchAuthorization, FetchAuthorizationRequest.self) { request, caller in
                Answer(try await self.approvals.fetch(request, agent: caller.id))
            },
            .on(.void, VoidRequest.self) { request, caller in
                let record = try await self.approvals.void(request.authorizationID, agent: caller.id, at: self.now)
                return Answer(
                    Voided(authorizationID: record.id, voidedAt: record.voidedAt ?? 0),
                    audit: AuditedAction(name: "voided", subject: record.id, kind: "decision"))
            },
            .on(.budgetsShow, BudgetsShowRequest.self) { request, caller in
                guard caller.role.isAdministrative || request.agentID == caller.id else {
                    throw WireError(.forbidden, "an agent may see only its own budgets")
                }
                guard self.principals.lookup(request.agentID) != nil else {
                    throw WireError(.principalNotFound, "no principal '\(request.agentID)': budgets show takes a registered agent's id")
                }
                return Answer(try await self.budgets.budgets(of: request.agentID))
            },
            // Approvers.
            .on(.approvalsList, Empty.self) { _, _ in Answer(try await self.approvals.pendingApprovals()) },
            .on(.approvalsShow, AuthorizationReference.self) { request, _ in Answer(try await self.approvals.approvalDetail(request.authorizationID)) },
            .on(.approvalsApprove, AuthorizationReference.self) { request, caller in
                Answer(try await self.approvals.decide(request.authorizationID, approver: caller.id, verdict: .approve))
            },
            .on(.approvalsDeny, AuthorizationReference.self) { request, caller in
                Answer(try await self.approvals.decide(request.authorizationID, approver: caller.id, verdict: .deny))
            },
            // Principals.
            .on(.agentsAdd, AgentsAddRequest.self) { request, caller in
                let key = try CredentialPublicKey(algorithm: request.algorithm, base64URL: request.publicKey)
                let record = try await self.principals.add(id: request.agentID, role: request.role ?? .agent, key: key, at: self.now)
                self.logger.notice("principal added", metadata: ["by": "\(caller.id)", "principal": "\(record.id)", "role": "\(record.role)"])
                return Answer(
                    record.info, audit: AuditedAction(name: "agents.add", subject: record.id, details: ["role": record.role, "algorithm": record.algorithm]))
            },
            .on(.agentsList, Empty.self) { _, _ in Answer(AgentsList(agents: self.principals.all().compactMap(\.info))) },
            .on(.agentsRevoke, AgentsRevokeRequest.self) { request, caller in
                let record = try await self.principals.revoke(id: request.agentID, at: self.now)
                self.logger.notice("principal revoked", metadata: ["by": "\(caller.id)", "principal": "\(record.id)"])
                return Answer(record.info, audit: AuditedAction(name: "agents.revoke", subject: record.id))
            },
            .on(.approversEnroll, ApproversEnrollRequest.self) { request, caller in
                guard let passkeys = self.passkeys else {
                    throw WireError(.invalidRequest, "the approvals console is not configured on this server (console: in its configuration)")
                }
                let link = try await passkeys.enroll(request, by: caller.id)
                self.logger.notice("enrollment link issued", metadata: ["by": "\(caller.id)", "principal": "\(link.principal)"])
                // The audit entry never holds the link's token.
                return Answer(
                    link,
                    audit: AuditedAction(
                        name: "approvers.enroll", subject: link.principal, details: ["role": link.role.rawValue, "expires_at": "\(link.expiresAt)"]))
            },
            .on(.agentsRotateCredential, AgentsRotateCredentialRequest.self) { request, caller in
                let key = try CredentialPublicKey(algorithm: request.algorithm, base64URL: request.publicKey)
                let record = try await self.principals.rotateKey(id: request.agentID, key: key, graceSeconds: request.graceSeconds ?? 86_400)
                let until = "\(record.previousKeyExpiresAt ?? 0)"
                self.logger.notice("credential rotated", metadata: ["by": "\(caller.id)", "principal": "\(record.id)", "old_key_until": "\(until)"])
                return Answer(record.info, audit: AuditedAction(name: "agents.rotate_credential", subject: record.id, details: ["old_key_until": until]))
            },
            // Keys.
            .on(.keysList, Empty.self) { _, _ in Answer(KeysList(keys: self.keyRing.list())) },
            .on(.keysRotate, KeysRotateRequest.self) { request, caller in
                let record = try await self.keyRing.rotate(
                    name: request.name, stage: request.stage ?? false, backend: request.backend.flatMap(KeyBackend.init(rawValue:)), at: self.now)
                self.logger.notice("key rotated", metadata: ["by": "\(caller.id)", "kid": "\(record.kid)", "state": "\(record.state.rawValue)"])
                return Answer(
                    self.keyInfo(record.kid),
                    audit: AuditedAction(name: "keys.rotate", subject: record.kid, details: ["state": record.state.rawValue, "backend": record.backend]))
            },
            .on(.keysActivate, KeyReference.self) { request, caller in
                let record = try await self.keyRing.activate(request.keyID!, at: self.now)
                self.logger.notice("key activated", metadata: ["by": "\(caller.id)", "kid": "\(record.kid)"])
                return Answer(self.keyInfo(record.kid), audit: AuditedAction(name: "keys.activate", subject: record.kid))
            },
            .on(.keysRetire, KeysRetireRequest.self) { request, caller in
                let record = try await self.keyRing.retire(KeyID(kid: request.kid)!, force: request.force ?? false, at: self.now)
                self.logger.notice("key retired", metadata: ["by": "\(caller.id)", "kid": "\(record.kid)"])
                return Answer(
                    self.keyInfo(record.kid), audit: AuditedAction(name: "keys.retire", subject: record.kid, details: ["forced": "\(request.force ?? false)"]))
            },
            .on(.keysDestroy, KeyReference.self) { request, caller in
                let destruction = try await self.keyRing.destroy(request.keyID!, by: caller.id, at: self.now)
                let action = destruction.state == "destroyed" ? "keys.destroy" : "keys.destroy_requested"
                return Answer(destruction, audit: AuditedAction(name: action, subject: destruction.kid))
            },
            .on(.keysAdopt, KeysAdoptRequest.self) { request, caller in
                let record = try await self.keyRing.adopt(name: request.name, label: request.label, id: request.idBytes, at: self.now)
                self.logger.notice("key adopted", metadata: ["by": "\(caller.id)", "kid": "\(record.kid)"])
                return Answer(
                    self.keyInfo(record.kid),
                    audit: AuditedAction(name: "keys.adopt", subject: record.kid, details: ["label": request.label ?? "", "id": request.id ?? ""]))
            },
            // Contexts.
            .on(.contextsList, Empty.self) { _, _ in Answer(self.contexts.list()) },
            .on(.contextsSet, ContextsSetRequest.self) { request, caller in
                let context = try await self.contexts.set(request.name, active: request.active)
                self.logger.notice("context switched", metadata: ["by": "\(caller.id)", "context": "\(context.name)", "active": "\(request.active)"])
                return Answer(context, audit: AuditedAction(name: "contexts.set", subject: context.name, details: ["active": "\(request.active)"]))
            },
            // The audit log.
            .on(.auditCheckpoint, Empty.self) { _, _ in Answer(try await self.audit.auditCheckpoint()) },
            .on(.auditProof, AuditProofRequest.self) { request, _ in Answer(try await self.audit.auditProof(request)) },
            .on(.auditConsistency, AuditConsistencyRequest.self) { request, _ in Answer(try await self.audit.auditConsistency(request)) },
            .on(.auditEntries, AuditEntriesRequest.self) { request, _ in Answer(try await self.audit.auditEntries(request)) },
        ]
        return Dictionary(uniqueKeysWithValues: table.map { ($0.descriptor.type, $0) })
    }

    private var now: Int64 { self.wallClock.secondsSince1970 }

    /// The approvals console over these services, when configured.
    var console: Console? {
        self.passkeys.map {
            Console(
                passkeys: $0, approvals: self.approvals, budgets: self.budgets, audit: self.audit, principals: self.principals, keyRing: self.keyRing,
                store: self.store, notifier: self.notifier, wallClock: self.wallClock, random: self.random, logger: self.logger)
        }
    }

    private func keyInfo(_ kid: String) -> KeyVersionInfo? {
        self.keyRing.list().first { $0.kid == kid }
    }
}

extension Services {
    /// The request path's services, each given what it uses; and the notifier that wakes waiting agents (closed at
    /// the stop).
    static func assemble(
        store: any Store, keyRing: KeyRing, principals: PrincipalDirectory, modes: ContextModes, checkpoints: Checkpointer?,
        configuration: ServerConfiguration, environment: ServerEnvironment, metrics: ServerMetrics
    ) -> (Services, ApprovalNotifier) {
        let (wallClock, time, logger) = (environment.wallClock, environment.time, environment.logger)
        let audit = AuditDesk(store: store, checkpoints: checkpoints, wallClock: wallClock, logger: logger)
        let signer = AuthorizationSigner(keyRing: keyRing, issuer: configuration.issuer, wallClock: wallClock, logger: logger)
        let notifier = ApprovalNotifier()
        let approvals = ApprovalDesk(
            store: store, signer: signer, policy: configuration.policy, audit: audit, notifier: notifier, wallClock: wallClock, time: time, metrics: metrics,
            logger: logger
        )
        let authorizer = Authorizer(
            store: store, policy: configuration.policy, modes: modes, signer: signer, approvals: approvals, checkpoints: checkpoints, wallClock: wallClock,
            time: time, random: environment.random, metrics: metrics, logger: logger
        )
        let passkeys = configuration.console.map {
            PasskeyDesk(console: $0, store: store, principals: principals, audit: audit, wallClock: wallClock, random: environment.random, logger: logger)
        }
        let services = Services(
            authorizer: authorizer, approvals: approvals, budgets: BudgetReports(store: store, policy: configuration.policy, wallClock: wallClock),
            audit: audit, principals: principals, keyRing: keyRing,
            contexts: ContextDesk(policy: configuration.policy, modes: modes, store: store, wallClock: wallClock), passkeys: passkeys, notifier: notifier,
            store: store, wallClock: wallClock, random: environment.random, logger: logger
        )
        return (services, notifier)
    }
}
