/// A failure with a stable ``ErrorCode`` and a sentence for people, printed as `CODE: reason`.
///
/// Every layer throws its own type (the store's, the signer's, the verifier's) so a `catch` can tell where a
/// failure came from, but they all speak this one vocabulary: a code from ``ErrorCode``, whether trying again can
/// help, and a reason. The server answers any of them through ``wireError``, without a table of translations.
public protocol CountersignError: Error, CustomStringConvertible, Sendable {
    var code: ErrorCode { get }
    /// A sentence for people. It may name the request's own values, never a secret.
    var reason: String { get }
    /// Whether the same request may succeed later; by default what the code says.
    var retryable: Bool { get }
    /// What a client is told: the code and reason themselves, unless the code stays inside the server.
    var wireError: WireError { get }
}

extension CountersignError {
    public var retryable: Bool { self.code.isRetryable }
    public var description: String { "\(self.code.rawValue): \(self.reason)" }
    public var wireError: WireError { WireError(self.code, self.reason, retryable: self.retryable) }
}

/// A refusal as a client receives it: a stable code, a sentence for people, and whether trying again can help.
///
/// It travels as the body of an ERROR frame: `{"code": "…", "message": "…", "retryable": false}`.
public struct WireError: CountersignError, Hashable, Codable {
    public var code: ErrorCode
    public var message: String
    public var retryable: Bool

    /// - Parameter retryable: what the code says (``ErrorCode/isRetryable``) unless given.
    public init(_ code: ErrorCode, _ message: String, retryable: Bool? = nil) {
        self.code = code
        self.message = message
        self.retryable = retryable ?? code.isRetryable
    }

    public var reason: String { self.message }
    public var description: String { "\(self.code): \(self.message)" }
    public var wireError: WireError { self }

    /// Whether the server closes the connection after sending this error.
    public var closesConnection: Bool { self.code.closesConnection }
}

/// Where a ``LayerError`` comes from, and how that layer's failures are told to a client.
public protocol ErrorLayer {
    /// What a client is told of `error`; by default its code and reason.
    static func wireError(for error: LayerError<Self>) -> WireError
}

extension ErrorLayer {
    public static func wireError(for error: LayerError<Self>) -> WireError {
        WireError(error.code, error.reason, retryable: error.retryable)
    }
}

/// A failure of one layer: a code and a reason. Each layer names its own (`LedgerError`, `SigningError`,
/// `VerificationError` are `LayerError`s of their layers), so a `catch` can tell them apart, while the shape and the
/// vocabulary are this one.
public struct LayerError<Layer: ErrorLayer>: CountersignError, Hashable {
    public typealias Code = ErrorCode

    public var code: ErrorCode
    public var reason: String

    public init(_ code: ErrorCode, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var wireError: WireError { Layer.wireError(for: self) }
}
