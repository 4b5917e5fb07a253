import Crypto
import Foundation
import Ledger
import Logging
import NIOCore
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

    public static let system = RandomSource { count in
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}

/// Answers the requests of an authenticated principal: one frame in, one frame out, never a throw.
final class RequestHandler: Sendable {
    private let store: LedgerStore
    private let keyRing: KeyRing
    private let policy: PolicyEngine
    private let budgets: BudgetTable
    private let principals: PrincipalDirectory
    private let issuer: String
    private let wallClock: WallClock
    private let time: MonotonicTime
    private let random: RandomSource
    private let metrics: ServerMetrics
    private let logger: Logger

    init(
        store: LedgerStore, keyRing: KeyRing, policy: PolicyEngine, budgets: BudgetTable, principals: PrincipalDirectory, issuer: String, wallClock: WallClock, time: MonotonicTime, random: RandomSource,
        metrics: ServerMetrics, logger: Logger
    ) {
        self.store = store
        self.keyRing = keyRing
        self.policy = policy
        self.budgets = budgets
        self.principals = principals
        self.issuer = issuer
        self.wallClock = wallClock
        self.time = time
        self.random = random
        self.metrics = metrics
        self.logger = logger
    }

    func respond(to frame: Frame, from principal: String) async -> Frame {
        let started = self.time.now
        let type = frame.type.name ?? "unknown"
        let result: Result<ByteBuffer, WireError>
        do {
            result = .success(try await self.dispatch(frame, from: principal))
        } catch let error as WireError {
            result = .failure(error)
        } catch {
            self.logger.error("request failed", metadata: ["type": "\(type)", "principal": "\(principal)", "error": "\(error)"])
            result = .failure(WireError(.internalError, "the server failed to handle the request; the error is in its log", retryable: true))
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
        switch frame.type {
        case .ping:
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(Empty())
        case .getKeys:
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(self.keyRing.keySet)
        case .authorize:
            try Self.require(.agent, principal.role, for: frame.type)
            let request = try Self.decode(AuthorizeRequest.self, from: frame.body)
            return WireJSON.encode(try await self.authorize(request, agent: principalID))
        case .void:
            try Self.require(.agent, principal.role, for: frame.type)
            let request = try Self.decode(VoidRequest.self, from: frame.body)
            do {
                let record = try await self.store.voidAuthorization(id: request.authorizationID, agent: principalID, at: self.wallClock.secondsSince1970)
                self.logger.info("authorization voided", metadata: ["agent": "\(principalID)", "authorization": "\(record.id)"])
                return WireJSON.encode(Voided(authorizationID: record.id, voidedAt: record.voidedAt ?? 0))
            } catch let error as LedgerError {
                switch error.code {
                case .authorizationNotFound: throw WireError(.authorizationNotFound, error.reason)
                case .authorizationExpired: throw WireError(.authorizationExpired, error.reason)
                case .notYours: throw WireError(.forbidden, "an agent may void only its own authorizations")
                default: throw WireError(.storeUnavailable, "the store does not answer", retryable: true)
                }
            }
        case .agentsAdd:
            try Self.require(.admin, principal.role, for: frame.type)
            let request = try Self.decode(AgentsAddRequest.self, from: frame.body)
            let key = try CredentialPublicKey(algorithm: request.algorithm, base64URL: request.publicKey)
            let record: PrincipalRecord
            do {
                record = try await self.principals.add(id: request.agentID, role: request.role ?? .agent, key: key, at: self.wallClock.secondsSince1970)
            } catch let error as LedgerError where error.code == .principalExists {
                throw WireError(.principalExists, error.reason)
            }
            self.logger.notice("principal added", metadata: ["by": "\(principalID)", "principal": "\(record.id)", "role": "\(record.role)"])
            return WireJSON.encode(record.info)
        case .agentsList:
            try Self.require(.admin, principal.role, for: frame.type)
            _ = try WireJSON.decode(Empty.self, from: frame.body)
            return WireJSON.encode(AgentsList(agents: self.principals.all().compactMap(\.info)))
        case .agentsRevoke:
            try Self.require(.admin, principal.role, for: frame.type)
            let request = try Self.decode(AgentsRevokeRequest.self, from: frame.body)
            let record: PrincipalRecord
            do {
                record = try await self.principals.revoke(id: request.agentID, at: self.wallClock.secondsSince1970)
            } catch let error as LedgerError where error.code == .principalNotFound {
                throw WireError(.principalNotFound, error.reason)
            }
            self.logger.notice("principal revoked", metadata: ["by": "\(principalID)", "principal": "\(record.id)"])
            return WireJSON.encode(record.info)
        case .hello, .auth:
            throw WireError(.invalidRequest, "the handshake is already complete on this connection")
        default:
            throw WireError(.unknownMessageType, "message type \(frame.type) is not a request this server knows")
        }
    }

    private static func require(_ role: Role, _ actual: Role, for type: MessageType) throws(WireError) {
        guard role == actual else {
            throw WireError(.forbidden, "\(type.name ?? "this request") is for \(role.rawValue)s; this credential is an \(actual.rawValue)'s")
        }
    }

    private static func decode<Request: ValidatedRequest>(_ type: Request.Type, from body: ByteBuffer) throws(WireError) -> Request {
        let request = try WireJSON.decode(type, from: body)
        try request.validate()
        return request
    }

    // MARK: Authorization

    private func authorize(_ request: AuthorizeRequest, agent: String) async throws -> Authorization {
        let started = self.time.now
        var tierName = "none"
        do {
            let authorization = try await self.decide(request, agent: agent, tierName: &tierName)
            self.metrics.authorizationDecided(tier: tierName, outcome: "authorized", duration: self.time.now - started)
            return authorization
        } catch let error as WireError {
            self.metrics.authorizationDecided(tier: tierName, outcome: error.code.rawValue, duration: self.time.now - started)
            throw error
        }
    }

    private func decide(_ request: AuthorizeRequest, agent: String, tierName: inout String) async throws -> Authorization {
        // A retry with the same idempotency key and body gets the original answer; nothing is signed again.
        let requestHash = Data(SHA256.hash(data: Data(WireJSON.encode(request).readableBytesView)))
        if let earlier = try await self.storedAuthorization(agent: agent, idempotencyKey: request.idempotencyKey) {
            return try Self.replay(earlier, for: requestHash)
        }
        guard let currency = Currency(code: request.currency) else {
            throw WireError(.currencyNotAccepted, "'\(request.currency)' is not an ISO 4217 currency")
        }
        let amount = Money(minorUnits: request.amount, currency: currency)
        let decision = self.policy.evaluate(
            PolicyRequest(agent: agent, amount: amount, merchant: request.merchantID, merchantCategoryCode: request.merchantCategoryCode)
        )
        let tier: Tier
        switch decision.outcome {
        case .authorized(let decided):
            tier = decided
        case .denied(let code, let reason):
            self.logger.info(
                "authorization denied",
                metadata: ["agent": "\(agent)", "code": "\(code)", "checks": "\(decision.checks.map { "\($0.name)=\($0.passed)" })"]
            )
            throw WireError(ErrorCode(rawValue: code), reason)
        }
        tierName = tier.name
        let now = self.wallClock.secondsSince1970
        let limits = self.budgets.checks(agent: agent, currency: currency.code, now: now)
        // A cheap early refusal, so an agent over its budget cannot make the HSM sign for nothing; the atomic
        // check at the commit below is the one that counts.
        for limit in limits {
            let spent = (try? await self.store.spent(agent: agent, currency: currency.code, since: limit.windowStart)) ?? 0
            if spent > limit.limit - amount.minorUnits {
                throw Self.budgetExceeded(amount, agent: agent, limit: limit, spent: spent)
            }
        }
        guard let key = self.keyRing.key(for: tier) else {
            throw WireError(.signingUnavailable, "no active key for tier '\(tier.name)'", retryable: true)
        }
        let claims = AuthorizationClaims(
            iss: self.issuer,
            sub: agent,
            aud: request.merchantID,
            jti: Base64URL.encode(self.random.bytes(16)),
            iat: now,
            nbf: now,
            exp: now + tier.lifetimeSeconds,
            amount: request.amount,
            currency: currency.code,
            mcc: request.merchantCategoryCode,
            intentHash: IntentHash.of(request.intent),
            tier: tier.name,
            policyVersion: decision.policyVersion
        )
        let jws: String
        do {
            jws = try await CompactJWS.sign(claims, with: key)
        } catch let error as SigningError {
            switch error.code {
            case .hsmUnavailable: throw WireError(.hsmUnavailable, error.reason, retryable: true)
            case .keyUnavailable: throw WireError(.signingUnavailable, error.reason, retryable: true)
            }
        }
        let authorization = Authorization(
            jws: jws, authorizationID: claims.jti, tier: tier.name, kid: key.keyID.kid, keyName: key.keyID.name, keyVersion: key.keyID.version,
            keyBackend: key.backend.rawValue, expiresAt: claims.exp
        )
        // Durable before the answer leaves: if the record cannot be written, the JWS is never sent.
        let record = AuthorizationRecord(
            id: claims.jti, agent: agent, idempotencyKey: request.idempotencyKey, requestHash: requestHash,
            response: Data(WireJSON.encode(authorization).readableBytesView), amount: request.amount, currency: currency.code, tier: tier.name,
            kid: key.keyID.kid, expiresAt: claims.exp, createdAt: now
        )
        // The budget check and the record are one step of one transaction: concurrent requests cannot overspend.
        let stored: AuthorizationRecord
        do {
            switch try await self.store.recordAuthorization(record, limits: limits) {
            case .recorded(let recorded):
                stored = recorded
            case .overLimit(let limit, let spent):
                // The signature is discarded unsent.
                throw Self.budgetExceeded(amount, agent: agent, limit: limit, spent: spent)
            }
        } catch let error as WireError {
            throw error
        } catch {
            self.logger.error("authorization not recorded; not sent", metadata: ["agent": "\(agent)", "error": "\(error)"])
            throw WireError(.storeUnavailable, "the authorization could not be recorded durably, so it was not issued", retryable: true)
        }
        if stored.id != record.id {
            // A concurrent request with the same key was recorded first; this signature is discarded unsent.
            return try Self.replay(stored, for: requestHash)
        }
        return authorization
    }

    private static func budgetExceeded(_ amount: Money, agent: String, limit: BudgetCheck, spent: Int64) -> WireError {
        let currency = amount.currency
        return WireError(
            .budgetExceeded,
            "\(amount) would exceed \(agent)'s \(limit.window) budget of \(Money(minorUnits: limit.limit, currency: currency)); \(Money(minorUnits: spent, currency: currency)) already spent"
        )
    }

    private func storedAuthorization(agent: String, idempotencyKey: String) async throws -> AuthorizationRecord? {
        do {
            return try await self.store.authorization(agent: agent, idempotencyKey: idempotencyKey)
        } catch {
            throw WireError(.storeUnavailable, "the store does not answer", retryable: true)
        }
    }

    private static func replay(_ record: AuthorizationRecord, for requestHash: Data) throws -> Authorization {
        guard record.requestHash == requestHash else {
            throw WireError(
                .idempotencyConflict,
                "idempotency key '\(record.idempotencyKey)' was used for a different request; use a new key for a new payment"
            )
        }
        return try WireJSON.decode(Authorization.self, from: ByteBuffer(bytes: record.response))
    }
}

/// The hash of an agent's stated intent, bound into its authorization.
public enum IntentHash {
    /// base64url of SHA-256 over the intent's canonical JSON (sorted keys, no whitespace, no escaped '/').
    public static func of(_ intent: Intent) -> String {
        let canonical = WireJSON.encode(intent)
        return Base64URL.encode(Array(SHA256.hash(data: Data(canonical.readableBytesView))))
    }
}
