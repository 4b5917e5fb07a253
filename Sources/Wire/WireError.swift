/// A stable, machine-readable refusal code. Clients branch on these; they never change meaning.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }
    public var description: String { self.rawValue }

    // Framing: the connection is closed after these, since the byte stream cannot be trusted any more.
    public static let frameTooLarge: ErrorCode = "FRAME_TOO_LARGE"
    public static let malformedFrame: ErrorCode = "MALFORMED_FRAME"
    public static let truncatedFrame: ErrorCode = "TRUNCATED_FRAME"
    public static let unsupportedVersion: ErrorCode = "UNSUPPORTED_VERSION"

    // Requests: the connection stays open.
    public static let unknownMessageType: ErrorCode = "UNKNOWN_MESSAGE_TYPE"
    public static let malformedJSON: ErrorCode = "MALFORMED_JSON"
    public static let invalidRequest: ErrorCode = "INVALID_REQUEST"
    public static let tooManyInFlight: ErrorCode = "TOO_MANY_IN_FLIGHT"

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
}

/// A refusal: a stable code, a sentence for people, and whether trying again can help.
///
/// It travels as the body of an ``MessageType/error`` frame: `{"code": "…", "message": "…", "retryable": false}`.
public struct WireError: Error, Hashable, Sendable, Codable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public var retryable: Bool

    public init(_ code: ErrorCode, _ message: String, retryable: Bool = false) {
        self.code = code
        self.message = message
        self.retryable = retryable
    }

    public var description: String { "\(self.code): \(self.message)" }

    /// Whether the server closes the connection after sending this error.
    public var closesConnection: Bool {
        [
            .frameTooLarge, .malformedFrame, .truncatedFrame, .unsupportedVersion, .handshakeTimeout,
            .authenticationFailed, .principalRevoked, .tooManyConnections, .idleTimeout,
        ].contains(self.code)
    }

    public static func frameTooLarge(length: UInt64, maximum: Int) -> WireError {
        WireError(.frameTooLarge, "the frame announces \(length) bytes; the limit is \(maximum)")
    }

    public static func frameTooShort(length: Int) -> WireError {
        WireError(.malformedFrame, "the frame announces \(length) bytes, fewer than the \(WireProtocol.headerLength)-byte header")
    }

    public static func truncatedFrame(expected: Int, received: Int) -> WireError {
        WireError(.truncatedFrame, "the connection ended \(received) bytes into a frame of \(expected)")
    }
}
