/// A stable, machine-readable code. Clients branch on these; they never change meaning.
///
/// Every code Countersign uses is declared here, once, with what it means for the one who receives it
/// (``isRetryable``, ``closesConnection``) and who may see it (``audience``). The protocol's codes are the
/// table in docs/protocol.md, and a test keeps the two the same. A code this build does not know (sent by a
/// newer server) still decodes: it is not retryable and closes nothing.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }
    public var description: String { self.rawValue }

    /// Who sees a code.
    public enum Audience: Sendable, Hashable {
        /// Sent to clients in ERROR frames and decisions; documented in docs/protocol.md.
        case wire
        /// Stays inside the server (its log); a client sees a wire code in its place.
        case server
        /// Reported by the offline verifier of authorizations (`countersign verify`, a merchant's check).
        case verifier
        /// Answered by the approvals console over HTTP (docs/console.md).
        case console
    }

    struct Traits: Sendable {
        var audience: Audience = .wire
        var retryable = false
        var closesConnection = false
    }

    /// Whether the same request may succeed later (after a backoff, on another connection or server).
    public var isRetryable: Bool { Self.traits[self]?.retryable ?? false }
    /// Whether the server closes the connection after sending it.
    public var closesConnection: Bool { Self.traits[self]?.closesConnection ?? false }
    /// Who sees it; `nil` for a code this build does not know.
    public var audience: Audience? { Self.traits[self]?.audience }

    /// Every code this build knows.
    public static var known: [ErrorCode] { Array(Self.traits.keys).sorted { $0.rawValue < $1.rawValue } }

    // Framing: the connection is closed after these, since the byte stream cannot be trusted any more.
    public static let frameTooLarge: ErrorCode = "FRAME_TOO_LARGE"
    public static let malformedFrame: ErrorCode = "MALFORMED_FRAME"
    public static let truncatedFrame: ErrorCode = "TRUNCATED_FRAME"
    public static let unsupportedVersion: ErrorCode = "UNSUPPORTED_VERSION"

    // Requests: the connection stays open.
    public static let unknownMessageType: ErrorCode = "UNKNOWN_MESSAGE_TYPE"
    public static let malformedJSON: ErrorCode = "MALFORMED_JSON"
    public static let invalidRequest: ErrorCode = "INVALID_REQUEST"

    // Handshake and identity.
    public static let handshakeRequired: ErrorCode = "HANDSHAKE_REQUIRED"
    public static let handshakeTimeout: ErrorCode = "HANDSHAKE_TIMEOUT"
    public static let authenticationFailed: ErrorCode = "AUTHENTICATION_FAILED"
    public static let forbidden: ErrorCode = "FORBIDDEN"
    public static let principalRevoked: ErrorCode = "PRINCIPAL_REVOKED"

    // Connection limits and lifecycle.
    public static let tooManyConnections: ErrorCode = "TOO_MANY_CONNECTIONS"
    public static let idleTimeout: ErrorCode = "IDLE_TIMEOUT"
    public static let shuttingDown: ErrorCode = "SHUTTING_DOWN"

    // Authorization.
    public static let amountAboveLimit: ErrorCode = "AMOUNT_ABOVE_LIMIT"
    public static let currencyNotAccepted: ErrorCode = "CURRENCY_NOT_ACCEPTED"
    public static let hsmUnavailable: ErrorCode = "HSM_UNAVAILABLE"
    public static let signingUnavailable: ErrorCode = "SIGNING_UNAVAILABLE"
    public static let idempotencyConflict: ErrorCode = "IDEMPOTENCY_CONFLICT"
    public static let budgetExceeded: ErrorCode = "BUDGET_EXCEEDED"
    public static let perAuthorizationLimit: ErrorCode = "PER_AUTHORIZATION_LIMIT"
    public static let tierNotAllowed: ErrorCode = "TIER_NOT_ALLOWED"
    public static let merchantNotAllowed: ErrorCode = "MERCHANT_NOT_ALLOWED"
    public static let categoryNotAllowed: ErrorCode = "CATEGORY_NOT_ALLOWED"
    public static let authorizationNotFound: ErrorCode = "AUTHORIZATION_NOT_FOUND"
    public static let authorizationExpired: ErrorCode = "AUTHORIZATION_EXPIRED"
    public static let storeUnavailable: ErrorCode = "STORE_UNAVAILABLE"
    public static let auditUnavailable: ErrorCode = "AUDIT_UNAVAILABLE"
    public static let rateLimited: ErrorCode = "RATE_LIMITED"
    public static let escalationAboveLimit: ErrorCode = "ESCALATION_ABOVE_LIMIT"
    /// The anomaly model's rules refuse the request: it is unlike the agent's usual payments.
    public static let anomalyRefused: ErrorCode = "ANOMALY_REFUSED"
    public static let intentRequired: ErrorCode = "INTENT_REQUIRED"
    public static let intentMismatch: ErrorCode = "INTENT_MISMATCH"

    // Approvals.
    public static let approvalDenied: ErrorCode = "APPROVAL_DENIED"
    public static let approvalExpired: ErrorCode = "APPROVAL_EXPIRED"
    public static let approvalClosed: ErrorCode = "APPROVAL_CLOSED"
    public static let alreadyDecided: ErrorCode = "ALREADY_DECIDED"

    // Administration.
    public static let principalExists: ErrorCode = "PRINCIPAL_EXISTS"
    public static let principalNotFound: ErrorCode = "PRINCIPAL_NOT_FOUND"
    public static let contextNotFound: ErrorCode = "CONTEXT_NOT_FOUND"
    public static let keyNotFound: ErrorCode = "KEY_NOT_FOUND"
    public static let keyStateConflict: ErrorCode = "KEY_STATE_CONFLICT"
    public static let keyInUse: ErrorCode = "KEY_IN_USE"
    public static let dualControl: ErrorCode = "DUAL_CONTROL"
    public static let keyNotAdoptable: ErrorCode = "KEY_NOT_ADOPTABLE"

    public static let internalError: ErrorCode = "INTERNAL_ERROR"

    // Inside the server only.
    /// A key version with this name and number is already stored.
    public static let keyVersionExists: ErrorCode = "KEY_VERSION_EXISTS"
    /// The stored log does not hash to the checkpoint it is checked against.
    public static let auditLogMismatch: ErrorCode = "AUDIT_LOG_MISMATCH"

    // The approvals console's (HTTP).
    /// An enrollment link that is unknown, used, or past its 15 minutes.
    public static let enrollmentInvalid: ErrorCode = "ENROLLMENT_INVALID"
    /// A passkey ceremony that does not verify (the reason is in the sentence).
    public static let passkeyRefused: ErrorCode = "PASSKEY_REFUSED"
    /// No session, or one that has ended: sign in again.
    public static let sessionRequired: ErrorCode = "SESSION_REQUIRED"
    /// A state change without this session's CSRF token, or from another origin.
    public static let csrfRefused: ErrorCode = "CSRF_REFUSED"

    // The offline verifier's findings about an authorization.
    public static let malformedToken: ErrorCode = "MALFORMED_TOKEN"
    public static let unknownKey: ErrorCode = "UNKNOWN_KEY"
    public static let badSignature: ErrorCode = "BAD_SIGNATURE"
    public static let expired: ErrorCode = "EXPIRED"
    public static let notYetValid: ErrorCode = "NOT_YET_VALID"
    public static let amountAboveKeyLimit: ErrorCode = "AMOUNT_ABOVE_KEY_LIMIT"

    /// What each known code means; the one place to say it.
    static let traits: [ErrorCode: Traits] = {
        let closes = Traits(closesConnection: true)
        let retryable = Traits(retryable: true)
        let refusal = Traits()
        let server = Traits(audience: .server)
        let verifier = Traits(audience: .verifier)
        let console = Traits(audience: .console)
        return [
            .frameTooLarge: closes, .malformedFrame: closes, .truncatedFrame: closes, .unsupportedVersion: closes,
            .unknownMessageType: refusal, .malformedJSON: refusal, .invalidRequest: refusal,
            .handshakeRequired: refusal, .handshakeTimeout: closes, .authenticationFailed: closes, .forbidden: refusal,
            .principalRevoked: closes,
            .tooManyConnections: Traits(retryable: true, closesConnection: true),
            .idleTimeout: Traits(retryable: true, closesConnection: true),
            .shuttingDown: retryable,
            .amountAboveLimit: refusal, .currencyNotAccepted: refusal, .hsmUnavailable: retryable, .signingUnavailable: retryable,
            .idempotencyConflict: refusal, .budgetExceeded: refusal, .perAuthorizationLimit: refusal, .tierNotAllowed: refusal,
            .merchantNotAllowed: refusal, .categoryNotAllowed: refusal, .authorizationNotFound: refusal, .authorizationExpired: refusal,
            .storeUnavailable: retryable, .auditUnavailable: retryable, .rateLimited: retryable, .escalationAboveLimit: refusal, .anomalyRefused: refusal,
            .intentRequired: refusal, .intentMismatch: refusal,
            .approvalDenied: refusal, .approvalExpired: refusal, .approvalClosed: refusal, .alreadyDecided: refusal,
            .principalExists: refusal, .principalNotFound: refusal, .contextNotFound: refusal, .keyNotFound: refusal,
            .keyStateConflict: refusal, .keyInUse: refusal, .dualControl: refusal, .keyNotAdoptable: refusal,
            .internalError: retryable,
            .keyVersionExists: server, .auditLogMismatch: server,
            .enrollmentInvalid: console, .passkeyRefused: console, .sessionRequired: console, .csrfRefused: console,
            .malformedToken: verifier, .unknownKey: verifier, .badSignature: verifier, .expired: verifier, .notYetValid: verifier,
            .amountAboveKeyLimit: verifier,
        ]
    }()
}
