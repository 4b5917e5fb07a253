import Crypto
import Foundation
import Ledger
import Logging
import NIOCore
import PKCS11
import Policy
import Signing
import Wire

/// Random bytes, injectable so tests can fix them.
public struct RandomSource: Sendable {
    private let generate: @Sendable (Int) -> [UInt8]

    public init(_ generate: @escaping @Sendable (Int) -> [UInt8]) {
        self.generate = generate
    }

    public func bytes(_ count: Int) -> [UInt8] { self.generate(count) }

    /// The system's generator, eight bytes per call (not one call per byte: each is a `getrandom`).
    public static let system = RandomSource { count in
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            var word = generator.next()
            for _ in 0..<min(8, count - index) {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return bytes
    }
}

/// Answers the requests of an authenticated principal: one frame in, one frame out, never a throw.
final class RequestHandler: Sendable {
    private let authorizer: Authorizer
    private let principals: PrincipalDirectory
    private let time: MonotonicTime
    private let metrics: ServerMetrics
    private let logger: Logger
    /// Reads of the audit log, shared fairly between principals.
    let logReads: FairShare
    /// The requests that read the audit log (their answers can be large).
    static let logReadTypes: Set<MessageType> = [.auditEntries, .auditProof, .auditConsistency]

    init(
        authorizer: Authorizer, principals: PrincipalDirectory, time: MonotonicTime, metrics: ServerMetrics, logger: Logger, logReaders: Int,
        logReadShare: Double = 1
    ) {
        self.logReads = FairShare(width: logReaders, share: logReadShare, time: time)
        self.authorizer = authorizer
        self.principals = principals
        self.time = time
        self.metrics = metrics
        self.logger = logger
    }

    private var store: LedgerStore { self.authorizer.store }
    private var keyRing: KeyRing { self.authorizer.keyRing }

    private func keyInfo(_ kid: String) -> KeyVersionInfo? {
        self.keyRing.list().first { $0.kid == kid }
    }

    private static func keyID(from body: ByteBuffer) throws(WireError) -> KeyID {
        let reference = try Self.decode(KeyReference.self, from: body)
        return reference.keyID!
    }
    private var now: Int64 { self.authorizer.wallClock.secondsSince1970 }

    func respond(to frame: Frame, from principal: String) async -> Frame {
        let started = self.time.now
        let type = frame.type.name ?? "unknown"
        let result: Result<ByteBuffer, WireError>
        do {
            result = .success(try await self.dispatch(frame, from: principal))
        } catch let error as any CountersignError {
            result = .failure(error.wireError)
        } catch is CancellationError {
            // Its connection is gone; reported as cancelled below, not as a failure.
            result = .failure(WireError(.internalError, "cancelled: the connection closed"))
        } catch let error as SessionPoolError {
            self.logger.error("HSM operation refused", metadata: ["type": "\(type)", "principal": "\(principal)", "error": "\(error)"])
            result = .failure(
                WireError(.hsmUnavailable, "the HSM cannot be used now (\(error.code.rawValue)); the server log has the details", retryable: true))
        } catch let error as PKCS11Error {
            self.logger.error("HSM operation failed", metadata: ["type": "\(type)", "principal": "\(principal)", "error": "\(error)"])
            result = .failure(WireError(.hsmUnavailable, "the HSM refused the operation: \(error)", retryable: true))
        } catch {
            self.logger.error("request failed", metadata: ["type": "\(type)", "principal": "\(principal)", "error": "\(error)"])
            result = .failure(WireError(.internalError, "the server failed to handle the request; the error is in its log", retryable: true))
        }
        if Task.isCancelled {
            // Its connection is gone (see ConnectionHandler): whatever the result, nobody is left to read it.
            self.metrics.requestAnswered(type: type, outcome: "cancelled", duration: self.time.now - started)
            return Frame(type: .error, requestID: frame.requestID, body: WireJSON.encode(WireError(.internalError, "cancelled: the connection closed")))
        }
        let outcome: String
        let response: Frame
        switch result {
        case .success(let body):
            outcome = "ok"
            response = Frame(type: frame.type.response, requestID: frame.requestID, body: body)
        case .failure(let error):
            outcome = error.code.rawValue
            response = Frame(type: .error, requestID: frame.requestID, body: WireJSON.encode(error))
        }
        self.metrics.requestAnswered(type: type, outcome: outcome, duration: self.time.now - started)
        return response
    }

    private func dispatch(_ frame: Frame, from principalID: String) async throws -> ByteBuffer {
        // The directory is consulted on every request so that a revocation also ends open connections' rights.
        guard let principal = self.principals.lookup(principalID), principal.record.revokedAt == nil else {
            throw WireError(.principalRevoked, "the credential of '\(principalID)' has been revoked")
        }
        let role = principal.role
        switch frame.type {
        case .ping:
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(Empty())
        case .getKeys:
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(self.keyRing.keySet)

        // Agents.
        case .authorize:
            try Self.require(.agent, role, for: frame.type)
            let request = try Self.decode(AuthorizeRequest.self, from: frame.body)
            return WireJSON.encode(try await self.authorizer.authorize(request, agent: principalID))
        case .fetchAuthorization:
            try Self.require(.agent, role, for: frame.type)
            let request = try Self.decode(FetchAuthorizationRequest.self, from: frame.body)
            return WireJSON.encode(try await self.authorizer.fetch(request, agent: principalID))
        case .void:
            try Self.require(.agent, role, for: frame.type)
            let request = try Self.decode(VoidRequest.self, from: frame.body)
            let record = try await self.store.voidAuthorization(id: request.authorizationID, agent: principalID, at: self.now)
            self.authorizer.notifier.changed(record.id)
            self.logger.info("authorization voided", metadata: ["agent": "\(principalID)", "authorization": "\(record.id)"])
            try await self.authorizer.logAction("voided", by: principalID, subject: record.id, kind: "decision")
            return WireJSON.encode(Voided(authorizationID: record.id, voidedAt: record.voidedAt ?? 0))
        case .budgetsShow:
            let request = try Self.decode(BudgetsShowRequest.self, from: frame.body)
            guard role.isAdministrative || request.agentID == principalID else {
                throw WireError(.forbidden, "an agent may see only its own budgets")
            }
            guard self.principals.lookup(request.agentID) != nil else {
                throw WireError(.principalNotFound, "no principal '\(request.agentID)': budgets show takes a registered agent's id")
            }
            return WireJSON.encode(try await self.authorizer.budgets(of: request.agentID))

        // Approvers.
        case .approvalsList:
            try Self.requireAdministrative(role, for: frame.type)
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(try await self.authorizer.pendingApprovals())
        case .approvalsShow:
            try Self.requireAdministrative(role, for: frame.type)
            let request = try Self.decode(AuthorizationReference.self, from: frame.body)
            return WireJSON.encode(try await self.authorizer.approvalDetail(request.authorizationID))
        case .approvalsApprove, .approvalsDeny:
            try Self.require(.approver, role, for: frame.type)
            let request = try Self.decode(AuthorizationReference.self, from: frame.body)
            let verdict: ApprovalRecord.Verdict = frame.type == .approvalsApprove ? .approve : .deny
            return WireJSON.encode(try await self.authorizer.decide(request.authorizationID, approver: principalID, verdict: verdict))

        // Admins.
        case .agentsAdd:
            try Self.requireAdministrative(role, for: frame.type)
            let request = try Self.decode(AgentsAddRequest.self, from: frame.body)
            let key = try CredentialPublicKey(algorithm: request.algorithm, base64URL: request.publicKey)
            let record = try await self.principals.add(id: request.agentID, role: request.role ?? .agent, key: key, at: self.now)
            self.logger.notice("principal added", metadata: ["by": "\(principalID)", "principal": "\(record.id)", "role": "\(record.role)"])
            try await self.authorizer.logAction(
                "agents.add", by: principalID, subject: record.id, details: ["role": record.role, "algorithm": record.algorithm])
            return WireJSON.encode(record.info)
        case .agentsList:
            try Self.requireAdministrative(role, for: frame.type)
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(AgentsList(agents: self.principals.all().compactMap(\.info)))
        case .agentsRevoke:
            try Self.requireAdministrative(role, for: frame.type)
            let request = try Self.decode(AgentsRevokeRequest.self, from: frame.body)
            let record = try await self.principals.revoke(id: request.agentID, at: self.now)
            self.logger.notice("principal revoked", metadata: ["by": "\(principalID)", "principal": "\(record.id)"])
            try await self.authorizer.logAction("agents.revoke", by: principalID, subject: record.id)
            return WireJSON.encode(record.info)
        case .agentsRotateCredential:
            try Self.requireAdministrative(role, for: frame.type)
            let request = try Self.decode(AgentsRotateCredentialRequest.self, from: frame.body)
            let key = try CredentialPublicKey(algorithm: request.algorithm, base64URL: request.publicKey)
            let grace = request.graceSeconds ?? 86_400
            let record = try await self.principals.rotateKey(id: request.agentID, key: key, graceSeconds: grace)
            self.logger.notice(
                "credential rotated", metadata: ["by": "\(principalID)", "principal": "\(record.id)", "old_key_until": "\(record.previousKeyExpiresAt ?? 0)"])
            try await self.authorizer.logAction(
                "agents.rotate_credential", by: principalID, subject: record.id, details: ["old_key_until": "\(record.previousKeyExpiresAt ?? 0)"])
            return WireJSON.encode(record.info)

        // Keys.
        case .keysList:
            try Self.requireAdministrative(role, for: frame.type)
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(KeysList(keys: self.keyRing.list()))
        case .keysRotate:
            try Self.requireAdministrative(role, for: frame.type)
            let request = try Self.decode(KeysRotateRequest.self, from: frame.body)
            let record = try await self.keyRing.rotate(
                name: request.name, stage: request.stage ?? false, backend: request.backend.flatMap(KeyBackend.init(rawValue:)), at: self.now
            )
            self.logger.notice("key rotated", metadata: ["by": "\(principalID)", "kid": "\(record.kid)", "state": "\(record.state.rawValue)"])
            try await self.authorizer.logAction(
                "keys.rotate", by: principalID, subject: record.kid, details: ["state": record.state.rawValue, "backend": record.backend])
            return WireJSON.encode(self.keyInfo(record.kid))
        case .keysActivate:
            try Self.requireAdministrative(role, for: frame.type)
            let keyID = try Self.keyID(from: frame.body)
            let record = try await self.keyRing.activate(keyID, at: self.now)
            self.logger.notice("key activated", metadata: ["by": "\(principalID)", "kid": "\(record.kid)"])
            try await self.authorizer.logAction("keys.activate", by: principalID, subject: record.kid)
            return WireJSON.encode(self.keyInfo(record.kid))
        case .keysRetire:
            try Self.requireAdministrative(role, for: frame.type)
            let request = try Self.decode(KeysRetireRequest.self, from: frame.body)
            let record = try await self.keyRing.retire(KeyID(kid: request.kid)!, force: request.force ?? false, at: self.now)
            self.logger.notice("key retired", metadata: ["by": "\(principalID)", "kid": "\(record.kid)"])
            try await self.authorizer.logAction("keys.retire", by: principalID, subject: record.kid, details: ["forced": "\(request.force ?? false)"])
            return WireJSON.encode(self.keyInfo(record.kid))
        case .keysDestroy:
            try Self.requireAdministrative(role, for: frame.type)
            let destruction = try await self.keyRing.destroy(try Self.keyID(from: frame.body), by: principalID, at: self.now)
            try await self.authorizer.logAction(
                destruction.state == "destroyed" ? "keys.destroy" : "keys.destroy_requested", by: principalID, subject: destruction.kid)
            return WireJSON.encode(destruction)
        case .keysAdopt:
            try Self.requireAdministrative(role, for: frame.type)
            let request = try Self.decode(KeysAdoptRequest.self, from: frame.body)
            let record = try await self.keyRing.adopt(name: request.name, label: request.label, id: request.idBytes, at: self.now)
            self.logger.notice("key adopted", metadata: ["by": "\(principalID)", "kid": "\(record.kid)"])
            try await self.authorizer.logAction(
                "keys.adopt", by: principalID, subject: record.kid, details: ["label": request.label ?? "", "id": request.id ?? ""])
            return WireJSON.encode(self.keyInfo(record.kid))

        case .contextsList:
            try Self.requireAdministrative(role, for: frame.type)
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(self.contexts())
        case .contextsSet:
            try Self.requireAdministrative(role, for: frame.type)
            let request = try Self.decode(ContextsSetRequest.self, from: frame.body)
            guard let context = self.authorizer.policy.contexts.first(where: { $0.name == request.name }), context.isMode else {
                let modes = self.authorizer.policy.contexts.filter(\.isMode).map(\.name)
                throw WireError(.contextNotFound, "no mode named '\(request.name)'; the modes are: \(modes.isEmpty ? "none" : modes.joined(separator: ", "))")
            }
            let active = self.authorizer.modes.set(context.name, active: request.active)
            try await self.store.setSetting(ContextModes.setting, to: Data(WireJSON.encode(active.sorted()).readableBytesView))
            self.logger.notice("context switched", metadata: ["by": "\(principalID)", "context": "\(context.name)", "active": "\(request.active)"])
            try await self.authorizer.logAction("contexts.set", by: principalID, subject: context.name, details: ["active": "\(request.active)"])
            return WireJSON.encode(self.contexts().contexts.first { $0.name == context.name }!)

        // The audit log.
        case .auditCheckpoint:
            try Self.requireAuditReader(role, for: frame.type)
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(try await self.authorizer.auditCheckpoint())
        case .auditProof:
            try Self.requireAuditReader(role, for: frame.type)
            let request = try Self.decode(AuditProofRequest.self, from: frame.body)
            return try await self.logReads.run(for: principalID) { WireJSON.encode(try await self.authorizer.auditProof(request)) }
        case .auditConsistency:
            try Self.requireAuditReader(role, for: frame.type)
            let request = try Self.decode(AuditConsistencyRequest.self, from: frame.body)
            return try await self.logReads.run(for: principalID) { WireJSON.encode(try await self.authorizer.auditConsistency(request)) }
        case .auditEntries:
            try Self.requireAuditReader(role, for: frame.type)
            let request = try Self.decode(AuditEntriesRequest.self, from: frame.body)
            return try await self.logReads.run(for: principalID) { WireJSON.encode(try await self.authorizer.auditEntries(request)) }

        case .hello, .auth:
            throw WireError(.invalidRequest, "the handshake is already complete on this connection")
        default:
            throw WireError(.unknownMessageType, "message type \(frame.type) is not a request this server knows")
        }
    }

    private func contexts() -> ContextsList {
        let now = self.now
        let modes = self.authorizer.modes.current
        return ContextsList(
            contexts: self.authorizer.policy.contexts.map { context in
                let inForce: Bool
                let when: String
                switch context.activation {
                case .mode:
                    inForce = modes.contains(context.name)
                    when = "while switched on"
                case .schedule(let schedule):
                    inForce = schedule.covers(now)
                    when = "during \(schedule)"
                }
                var changes: [String] = []
                if let tier = context.highestTier { changes.append("highest tier \(tier)") }
                if !context.maximumPerAuthorization.isEmpty {
                    changes.append("at most " + Money.text(context.maximumPerAuthorization) + " per authorization")
                }
                let whom = (context.agents.sorted().map { "agent \($0)" } + context.profiles.sorted().map { "profile \($0)" }).joined(separator: ", ")
                return ContextInfo(
                    name: context.name, kind: context.isMode ? "mode" : "schedule", inForce: inForce,
                    summary: "\(changes.joined(separator: "; ")) for \(whom), \(when)"
                )
            }
        )
    }

    private static func require(_ role: Role, _ actual: Role, for type: MessageType) throws(WireError) {
        guard role == actual else {
            throw WireError(.forbidden, "\(type.name ?? "this request") is for \(role.rawValue)s; this credential is an \(actual.rawValue)'s")
        }
    }

    private static func requireAuditReader(_ actual: Role, for type: MessageType) throws(WireError) {
        guard actual.readsAudit else {
            throw WireError(.forbidden, "\(type.name ?? "this request") is for auditors and admins; this credential is an \(actual.rawValue)'s")
        }
    }

    private static func requireAdministrative(_ actual: Role, for type: MessageType) throws(WireError) {
        guard actual.isAdministrative else {
            throw WireError(.forbidden, "\(type.name ?? "this request") is for admins; this credential is an \(actual.rawValue)'s")
        }
    }

    private static func decode<Request: ValidatedRequest>(_ type: Request.Type, from body: ByteBuffer) throws(WireError) -> Request {
        let request = try WireJSON.decode(type, from: body)
        try request.validate()
        return request
    }
}
