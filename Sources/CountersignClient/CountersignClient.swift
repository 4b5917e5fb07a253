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
        // One deadline for the connect and the handshake together, as the parameter says.
        let handshakeDeadline = NIODeadline.now() + TimeAmount.nanoseconds(Int64(handshakeTimeout / .nanoseconds(1)))
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
        let deadline = channel.eventLoop.scheduleTask(deadline: handshakeDeadline) {
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

    /// Whether requests can still be sent here: false once the connection closed, or once the server sent a
    /// connection-level error (`FRAME_TOO_LARGE`, `IDLE_TIMEOUT`, …), after which it closes.
    public var isOpen: Bool { self.channel.isActive && !self.router.hasConnectionError }

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

    var hasConnectionError: Bool { self.state.withLock { $0.connectionError != nil } }

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
