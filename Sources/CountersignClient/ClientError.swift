import Wire

/// The connection failed rather than the server refusing.
public enum ClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The connection closed before the request's answer came, or before the request was sent.
    case connectionClosed
    /// No connection could be made: nothing listens there, the name does not resolve, ….
    case unreachable(server: String, reason: String)
    /// The peer closed before answering HELLO: not a Countersign framed listener (often the HTTP port).
    case closedDuringHandshake(server: String)
    /// The server's answer does not fit the protocol: a frame of the wrong type, or a body that does not decode or make sense.
    case unexpectedResponse(String)
    /// A frame was sent with a request id that is still waiting for its answer (see ``CountersignClient/send(_:)``).
    case duplicateRequestID(UInt32)
    /// ``CountersignClient/authorize(_:)`` got a pending approval instead of a signature.
    case pendingApproval(PendingAuthorization)
    /// No answer within the attempt's deadline (``ClusterClient/RetryPolicy/attemptTimeout``): the connection was
    /// given up as stuck. The request may have been recorded; asking again with the same idempotency key is safe.
    case timedOut(String)
    /// Every server's breaker is open after repeated connection failures: nothing was sent, and nothing will be
    /// for `retryAfter` (see ``CircuitBreaker``).
    case circuitOpen(retryAfter: Duration)

    /// Whether trying again, on a new connection, may succeed.
    public var isConnectionFailure: Bool {
        switch self {
        case .connectionClosed, .unreachable, .timedOut: true
        case .closedDuringHandshake, .unexpectedResponse, .duplicateRequestID, .pendingApproval, .circuitOpen: false
        }
    }

    /// `CODE: explanation`, in the style of the server's refusals, e.g. `UNREACHABLE: cannot connect to countersignd at …`.
    public var description: String {
        switch self {
        case .connectionClosed: "CONNECTION_CLOSED: the server closed the connection"
        case .unreachable(let server, let reason):
            "UNREACHABLE: cannot connect to countersignd at \(server): \(reason); is it running, and is this its framed port (default 7600)?"
        case .closedDuringHandshake(let server):
            "CONNECTION_CLOSED: \(server) closed the connection before the handshake; is it countersignd's framed port (default 7600), not its HTTP port (default 7680)?"
        case .unexpectedResponse(let reason): "UNEXPECTED_RESPONSE: \(reason)"
        case .duplicateRequestID(let id): "DUPLICATE_REQUEST_ID: request id \(id) is already waiting for its answer"
        case .pendingApproval(let pending):
            "PENDING_APPROVAL: authorization \(pending.authorizationID) needs \(pending.approvalsRequired) approval(s) before \(pending.approvalExpiresAt)"
        case .timedOut(let reason): "TIMEOUT: \(reason); the connection was given up"
        case .circuitOpen(let retryAfter):
            "CIRCUIT_OPEN: every server failed repeatedly; nothing is sent for \(retryAfter.components.seconds + (retryAfter.components.attoseconds > 0 ? 1 : 0)) s"
        }
    }
}
