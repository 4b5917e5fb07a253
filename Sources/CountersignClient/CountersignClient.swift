import NIOCore
import NIOPosix
import NIOSSL
import Signing
import Synchronization
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// An async client for `countersignd`: connect, prove who you are, then send requests, as many at once as
/// you like (they are pipelined on one connection and answered in any order).
///
/// ```swift
/// let client = try await CountersignClient.connect(host: "127.0.0.1", port: 7600, credential: credential)
/// let authorization = try await client.authorize(request)
/// ```
///
/// Refusals throw ``WireError`` with the server's stable `code`; a dropped connection throws
/// ``ClientError``.
public final class CountersignClient: Sendable {
    private let channel: any Channel
    private let router: ResponseRouter
    private let nextRequestID = Atomic<UInt32>(1)
    /// The principal this connection authenticated as, and its role.
    public let welcome: Welcome

    private init(channel: any Channel, router: ResponseRouter, welcome: Welcome) {
        self.channel = channel
        self.router = router
        self.welcome = welcome
    }

    /// Connects and completes the handshake.
    ///
    /// - Parameters:
    ///   - host: the server's host name or IP address.
    ///   - port: its framed-protocol port (countersignd listens on 7600 by default).
    ///   - principal: the id the server knows this client by.
    ///   - key: the principal's credential key; it signs the server's challenge, and only the signature is sent.
    ///   - tls: TLS settings for a server that listens with TLS; `nil` for plaintext (loopback).
    ///   - serverHostname: the name to check the server's certificate against, when it differs from `host`.
    ///   - maximumFrameLength: the largest frame accepted from the server, in bytes, header included (at least 6); a
    ///     larger one closes the connection.
    ///   - eventLoopGroup: where the connection's I/O runs.
    ///   - handshakeTimeout: how long connecting and the handshake may take together: a server that accepts and
    ///     then says nothing (frozen, or not a server at all) is given up, as ``ClientError/unreachable(server:reason:)``.
    /// - Throws: ``WireError`` (`AUTHENTICATION_FAILED`, `PRINCIPAL_REVOKED`, …) or ``ClientError``.
    public static func connect(
        host: String,
        port: Int,
        principal: String,
        key: CredentialPrivateKey,
        tls: TLSConfiguration? = nil,
        serverHostname: String? = nil,
        maximumFrameLength: Int = 16 * 1024 * 1024,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        handshakeTimeout: Duration = .seconds(15)
    ) async throws -> CountersignClient {
        guard maximumFrameLength >= WireProtocol.headerLength else {
            throw WireError(.invalidRequest, "maximumFrameLength must be at least \(WireProtocol.headerLength), a frame's header; it is \(maximumFrameLength)")
        }
        let sslContext = try tls.map { try NIOSSLContext(configuration: $0) }
        let router = ResponseRouter()
        let channel: any Channel
        do {
            channel = try await Self.open(
                host: host, port: port, sslContext: sslContext, serverHostname: serverHostname, router: router, maximumFrameLength: maximumFrameLength,
                eventLoopGroup: eventLoopGroup, connectTimeout: .nanoseconds(Int64(handshakeTimeout / .nanoseconds(1))))
        } catch {
            throw ClientError.unreachable(server: "\(host):\(port)", reason: Self.reason(error))
        }
        // The handshake's deadline: closing the channel fails the waiting frame, and the catch below says why.
        let expired = Atomic<Bool>(false)
        let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(handshakeTimeout / .nanoseconds(1)))) {
            expired.store(true, ordering: .relaxed)
            channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        do {
            let challengeFrame = try await router.send(
                Frame(
                    type: .hello, requestID: 1, body: WireJSON.encode(Hello(principal: principal, client: "countersign-swift/\(CountersignVersion.current)"))),
                on: channel)
            let challenge = try Self.decode(Challenge.self, from: challengeFrame, expecting: .challenge)
            guard let challengeBytes = Base64URL.decode(challenge.challenge) else {
                throw ClientError.unexpectedResponse("the challenge is not base64url")
            }
            let transcript = Handshake.transcript(version: WireProtocol.version, principal: principal, challenge: challengeBytes)
            let auth = Auth(algorithm: key.algorithm, signature: Base64URL.encode(try key.signature(for: transcript)))
            let welcomeFrame = try await router.send(Frame(type: .auth, requestID: 2, body: WireJSON.encode(auth)), on: channel)
            let welcome = try Self.decode(Welcome.self, from: welcomeFrame, expecting: .welcome)
            let client = CountersignClient(channel: channel, router: router, welcome: welcome)
            client.nextRequestID.store(3, ordering: .relaxed)
            return client
        } catch ClientError.connectionClosed {
            try? await channel.close()
            if expired.load(ordering: .relaxed) {
                throw ClientError.unreachable(server: "\(host):\(port)", reason: "no answer to the handshake within \(handshakeTimeout)")
            }
            // Closed before a single frame came back: not a Countersign listener (the HTTP port, a proxy).
            throw ClientError.closedDuringHandshake(server: "\(host):\(port)")
        } catch {
            try? await channel.close()
            throw error
        }
    }

    private static func open(
        host: String, port: Int, sslContext: NIOSSLContext?, serverHostname: String?, router: ResponseRouter, maximumFrameLength: Int,
        eventLoopGroup: any EventLoopGroup, connectTimeout: TimeAmount
    ) async throws -> any Channel {
        try await ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: sslContext, serverHostname: serverHostname ?? (host.first?.isNumber == true ? nil : host))
                        )
                    }
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maximumFrameLength: maximumFrameLength)))
                    try channel.pipeline.syncOperations.addHandler(router)
                }
            }
            .connect(host: host, port: port)
            .get()
    }

    /// Why a connection could not be made, in words: `connection refused`, `the name does not resolve`, ….
    static func reason(_ error: any Error) -> String {
        if let connection = error as? NIOConnectionError {
            if let first = connection.connectionErrors.first { return Self.reason(first.error) }
            if connection.dnsAError != nil || connection.dnsAAAAError != nil { return "the host name does not resolve" }
            return "no address to connect to"
        }
        if let io = error as? IOError {
            return String(cString: strerror(io.errnoCode)).lowercased()
        }
        return "\(error)"
    }

    /// Connects with a credential file's principal and key.
    public static func connect(host: String, port: Int, credential: CredentialFile, tls: TLSConfiguration? = nil) async throws -> CountersignClient {
        try await Self.connect(host: host, port: port, principal: credential.principal, key: try credential.key(), tls: tls)
    }

    /// Round trip with no effect.
    public func ping() async throws {
        _ = try await self.request(.ping, Empty(), expecting: Empty.self)
    }

    /// Asks for a payment authorization (agents only): signed, or pending when its tier needs approvers.
    public func submit(_ request: AuthorizeRequest) async throws -> AuthorizeOutcome {
        try await self.request(.authorize, request, expecting: AuthorizeOutcome.self)
    }

    /// Asks for a signed payment authorization (agents only); throws ``ClientError/pendingApproval(_:)`` when
    /// the tier needs approvers (use ``submit(_:)`` and ``fetchAuthorization(id:waitSeconds:)`` for those).
    public func authorize(_ request: AuthorizeRequest) async throws -> Authorization {
        switch try await self.submit(request) {
        case .authorized(let authorization): return authorization
        case .pendingApproval(let pending): throw ClientError.pendingApproval(pending)
        }
    }

    /// One of this agent's authorizations as it stands; with `waitSeconds`, the server answers as soon as a
    /// pending approval is decided, or after that many seconds (at most 60).
    public func fetchAuthorization(id: String, waitSeconds: Int? = nil) async throws -> AuthorizeOutcome {
        try await self.request(.fetchAuthorization, FetchAuthorizationRequest(authorizationID: id, waitSeconds: waitSeconds), expecting: AuthorizeOutcome.self)
    }

    /// Waits until a pending authorization is approved (returning it) or refused (throwing the server's
    /// `APPROVAL_DENIED` / `APPROVAL_EXPIRED`), asking again every `pollSeconds` at most (taken into 1…60, the
    /// server's range for a wait: 0 would ask without pause).
    public func awaitApproval(id: String, pollSeconds: Int = 30) async throws -> Authorization {
        let wait = min(max(pollSeconds, 1), 60)
        while true {
            if case .authorized(let authorization) = try await self.fetchAuthorization(id: id, waitSeconds: wait) {
                return authorization
            }
        }
    }

    /// Requests waiting for approval (admins and approvers).
    public func listApprovals() async throws -> [ApprovalSummary] {
        try await self.request(.approvalsList, Empty(), expecting: ApprovalsList.self).approvals
    }

    /// One authorization that needed approval, pending or decided: the exact request, the decision record and the
    /// verdicts so far (admins and approvers).
    ///
    /// - Throws: ``WireError`` `AUTHORIZATION_NOT_FOUND` when no authorization with this id needed approval.
    public func showApproval(id: String) async throws -> ApprovalDetail {
        try await self.request(.approvalsShow, AuthorizationReference(authorizationID: id), expecting: ApprovalDetail.self)
    }

    /// Approves (approvers only); the approval that completes the quorum releases the signature.
    public func approve(id: String) async throws -> ApprovalDetail {
        try await self.request(.approvalsApprove, AuthorizationReference(authorizationID: id), expecting: ApprovalDetail.self)
    }

    /// Denies (approvers only): the request is refused and its budget hold released.
    public func deny(id: String) async throws -> ApprovalDetail {
        try await self.request(.approvalsDeny, AuthorizationReference(authorizationID: id), expecting: ApprovalDetail.self)
    }

    /// Every budget an agent's spending counts against (admins, or an agent for itself).
    public func budgets(agent: String) async throws -> BudgetsReport {
        try await self.request(.budgetsShow, BudgetsShowRequest(agentID: agent), expecting: BudgetsReport.self)
    }

    /// Every context of the policy, mode or schedule, with whether it is in force now and what it changes
    /// (admins and approvers).
    public func contexts() async throws -> [ContextInfo] {
        try await self.request(.contextsList, Empty(), expecting: ContextsList.self).contexts
    }

    /// Switches a mode on or off (admins only).
    public func setContext(_ name: String, active: Bool) async throws -> ContextInfo {
        try await self.request(.contextsSet, ContextsSetRequest(name: name, active: active), expecting: ContextInfo.self)
    }

    /// Voids one of this agent's own unexpired authorizations.
    public func void(authorizationID: String) async throws -> Voided {
        try await self.request(.void, VoidRequest(authorizationID: authorizationID), expecting: Voided.self)
    }

    /// The published key set (JWKS).
    public func keys() async throws -> JWKSet {
        try await self.request(.getKeys, Empty(), expecting: JWKSet.self)
    }

    /// Registers a principal by its public key (admins only).
    public func addAgent(id: String, publicKey: CredentialPublicKey, role: Role = .agent) async throws -> PrincipalInfo {
        let request = AgentsAddRequest(agentID: id, algorithm: publicKey.algorithm, publicKey: Base64URL.encode(publicKey.rawRepresentation), role: role)
        return try await self.request(.agentsAdd, request, expecting: PrincipalInfo.self)
    }

    /// Every registered principal, sorted by id: all roles, not only agents, and revoked ones too (admins and approvers).
    public func listAgents() async throws -> [PrincipalInfo] {
        try await self.request(.agentsList, Empty(), expecting: AgentsList.self).agents
    }

    /// Revokes a principal's credential (admins and approvers); its open connections are refused from their next request on.
    /// Revoking a revoked principal changes nothing.
    ///
    /// - Returns: the principal as it now stands, with `revokedAt` set.
    /// - Throws: ``WireError`` `PRINCIPAL_NOT_FOUND` when no principal has this id.
    public func revokeAgent(id: String) async throws -> PrincipalInfo {
        try await self.request(.agentsRevoke, AgentsRevokeRequest(agentID: id), expecting: PrincipalInfo.self)
    }

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

    /// Sends any request and decodes its response. The building block of the typed methods.
    public func request<Body: Encodable, Response: Decodable>(_ type: MessageType, _ body: Body, expecting: Response.Type) async throws -> Response {
        var id = self.nextRequestID.wrappingAdd(1, ordering: .relaxed).oldValue
        if id == 0 {
            // 0 is the id of connection-level errors; skip it when the counter wraps.
            id = self.nextRequestID.wrappingAdd(1, ordering: .relaxed).oldValue
        }
        let frame = try await self.router.send(Frame(type: type, requestID: id, body: WireJSON.encode(body)), on: self.channel)
        return try Self.decode(Response.self, from: frame, expecting: type.response)
    }

    /// Sends a raw frame and returns the raw answer, for tests and tools that speak the protocol by hand.
    public func send(_ frame: Frame) async throws -> Frame {
        try await self.router.send(frame, on: self.channel)
    }

    /// Stops reading answers and writes `frames` as fast as the connection takes them, without waiting for
    /// anything: a client that pipelines and never reads, for load tools. The connection serves nothing else after.
    public func pipelineWithoutReading(_ frames: [Frame]) async throws {
        try await self.channel.setOption(ChannelOptions.autoRead, value: false).get()
        for frame in frames {
            self.channel.write(frame, promise: nil)
        }
        self.channel.flush()
    }

    /// Closes the connection. Requests still waiting for an answer, and any sent later, fail with
    /// ``ClientError/connectionClosed``, or with the server's connection-level error if it sent one before closing.
    public func close() async {
        try? await self.channel.close()
    }

    private static func decode<Response: Decodable>(_ type: Response.Type, from frame: Frame, expecting expected: MessageType) throws -> Response {
        if frame.type == .error {
            throw (try? WireJSON.decode(WireError.self, from: frame.body, allowingUnknownMembers: true))
                ?? ClientError.unexpectedResponse("an error frame without a valid body")
        }
        guard frame.type == expected else {
            throw ClientError.unexpectedResponse("expected \(expected), got \(frame.type)")
        }
        do {
            // A newer server may add members to its answers; they are ignored (repeated ones are not).
            return try WireJSON.decode(type, from: frame.body, allowingUnknownMembers: true)
        } catch {
            throw ClientError.unexpectedResponse("the \(expected) body does not decode: \(error)")
        }
    }
}

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

/// Matches responses to requests by request id. Lives on the channel's event loop.
final class ResponseRouter: ChannelInboundHandler, Sendable {
    typealias InboundIn = Frame
    typealias OutboundOut = Frame

    private let state = Mutex<State>(State())

    private struct State {
        var pending: [UInt32: EventLoopPromise<Frame>] = [:]
        var isClosed = false
        /// A connection-level error (request id 0) that arrived before the close.
        var connectionError: Frame?
        /// A flush is queued on the event loop behind the writes queued so far.
        var flushQueued = false
    }

    func send(_ frame: Frame, on channel: any Channel) async throws -> Frame {
        let promise = channel.eventLoop.makePromise(of: Frame.self)
        let registered = self.state.withLock { state -> Result<Frame, any Error>? in
            // The server said why it is closing (SHUTTING_DOWN, IDLE_TIMEOUT): that is the answer, not a bare close.
            if let connectionError = state.connectionError { return .success(connectionError) }
            if state.isClosed { return .failure(ClientError.connectionClosed) }
            if state.pending[frame.requestID] != nil { return .failure(ClientError.duplicateRequestID(frame.requestID)) }
            state.pending[frame.requestID] = promise
            return nil
        }
        if let registered {
            promise.completeWith(registered)
            return try registered.get()
        }
        // Requests sent together leave in one write: each is queued on the event loop, and one flush follows
        // whatever was queued before it ran.
        channel.eventLoop.execute {
            channel.write(frame).whenFailure { _ in
                self.state.withLock { $0.pending.removeValue(forKey: frame.requestID) }?.fail(ClientError.connectionClosed)
            }
            let queueFlush = self.state.withLock { state -> Bool in
                defer { state.flushQueued = true }
                return !state.flushQueued
            }
            if queueFlush {
                channel.eventLoop.execute {
                    self.state.withLock { $0.flushQueued = false }
                    channel.flush()
                }
            }
        }
        return try await promise.futureResult.get()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        let promise = self.state.withLock { state -> EventLoopPromise<Frame>? in
            if let promise = state.pending.removeValue(forKey: frame.requestID) { return promise }
            if frame.type == .error { state.connectionError = frame }
            return nil
        }
        promise?.succeed(frame)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let (pending, connectionError) = self.state.withLock { state in
            state.isClosed = true
            defer { state.pending = [:] }
            return (state.pending, state.connectionError)
        }
        for (_, promise) in pending {
            // A connection-level error (e.g. IDLE_TIMEOUT, FRAME_TOO_LARGE) explains the close better.
            if let connectionError { promise.succeed(connectionError) } else { promise.fail(ClientError.connectionClosed) }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
