import NIOCore
import NIOPosix
import NIOSSL
import Signing
import Synchronization
import Wire

/// A client of a cluster of servers: each request goes to the server it is connected to, and when that server is
/// lost (the connection fails or closes) or answers a retryable error, the same request goes again, to the next
/// server, after a jittered backoff, until the policy's patience runs out.
///
/// Asking again is safe for an authorization: the request keeps its idempotency key, so a server that already
/// recorded it answers with that record (the same JWS), and no server records it twice. Give ``perform(_:)`` only
/// requests that are safe to repeat.
///
/// ```swift
/// let cluster = try ClusterClient(servers: "10.0.0.1:7600,10.0.0.2:7600,10.0.0.3:7600", credential: credential)
/// let authorization = try await cluster.authorize(request)
/// ```
public final class ClusterClient: Sendable {
    /// One server's address.
    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        /// A host name or an IP address (IPv6 without brackets).
        public var host: String
        /// The framed port (countersignd's default is 7600).
        public var port: Int

        /// An address as given.
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `host:port` (an IPv6 host in brackets: `[::1]:7600`).
        /// - Throws: ``WireError`` `INVALID_REQUEST` naming what is wrong.
        public init(parsing text: some StringProtocol) throws {
            let text = String(text).filter { $0 != " " }
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port), colon > text.startIndex
            else {
                throw WireError(.invalidRequest, "a server is host:port, not '\(text)'")
            }
            var host = String(text[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            self.init(host: host, port: port)
        }

        /// Every server of a comma-separated list (`a:7600,b:7600`).
        /// - Throws: ``WireError`` `INVALID_REQUEST` for an empty list or a malformed entry.
        public static func list(_ text: String) throws -> [Endpoint] {
            let endpoints = try text.split(separator: ",").map { try Endpoint(parsing: $0) }
            guard !endpoints.isEmpty else { throw WireError(.invalidRequest, "no server given") }
            return endpoints
        }

        /// `host:port`, an IPv6 host in brackets.
        public var description: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }
    }

    /// When to ask again, and how long to keep asking.
    public struct RetryPolicy: Sendable {
        /// The first pause; each failure doubles it, up to `maximumDelay`.
        public var initialDelay: Duration = .milliseconds(100)
        /// The longest pause between two attempts.
        public var maximumDelay: Duration = .seconds(5)
        /// After this long without an answer, the last error is thrown.
        public var patience: Duration = .seconds(60)
        /// The pause actually taken, given the backoff's bound: by default a uniformly random part of it ("full
        /// jitter"), so clients that lost the same server do not all come back at once.
        public var jitter: @Sendable (Duration) -> Duration = { bound in
            bound * Double.random(in: 0...1)
        }
        /// How a pause is waited (tests pass a manual clock's).
        public var sleep: @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }

        /// The defaults: 100 ms doubling to 5 s, full jitter, a minute of patience.
        public init() {}
    }

    private struct State {
        var connection: CountersignClient?
        /// The index in `endpoints` of the server to use next.
        var next = 0
        var isClosed = false
    }

    /// The servers, in the order they are tried.
    public let endpoints: [Endpoint]
    private let principal: String
    private let key: CredentialPrivateKey
    private let tls: TLSConfiguration?
    private let policy: RetryPolicy
    private let state = Mutex(State())

    /// - Parameters:
    ///   - endpoints: the servers, tried in this order (the first that answers is used until it fails).
    ///   - principal, key: the credential every connection authenticates with.
    ///   - tls: the TLS configuration, for servers that require it.
    /// - Throws: ``WireError`` `INVALID_REQUEST` when no server is given.
    public init(
        endpoints: [Endpoint], principal: String, key: CredentialPrivateKey, tls: TLSConfiguration? = nil, policy: RetryPolicy = RetryPolicy()
    )
        throws
    {
        guard !endpoints.isEmpty else { throw WireError(.invalidRequest, "no server given") }
        self.endpoints = endpoints
        self.principal = principal
        self.key = key
        self.tls = tls
        self.policy = policy
    }

    /// A client of the servers listed in `servers` (`host:port,host:port`), with a credential file's identity.
    /// - Throws: ``WireError`` for a malformed list, or the credential's error when its key cannot be read.
    public convenience init(servers: String, credential: CredentialFile, tls: TLSConfiguration? = nil, policy: RetryPolicy = RetryPolicy()) throws {
        try self.init(endpoints: try Endpoint.list(servers), principal: credential.principal, key: try credential.key(), tls: tls, policy: policy)
    }

    /// Whether asking again (perhaps elsewhere) may succeed: a lost or unreachable server, a server closing during
    /// the handshake (stopping), or a refusal the server marked retryable.
    public static func isTransient(_ error: any Error) -> Bool {
        switch error {
        case let error as WireError: error.retryable
        case ClientError.closedDuringHandshake: true
        case let error as ClientError: error.isConnectionFailure
        default: false
        }
    }

    /// Runs `body` on a connection to one of the servers; on a transient failure (``isTransient(_:)``) runs it
    /// again on the next server after a jittered backoff, until it succeeds, fails otherwise, or the policy's
    /// patience is spent (then the last error is thrown).
    public func perform<Result: Sendable>(_ body: @Sendable (CountersignClient) async throws -> Result) async throws -> Result {
        let clock = ContinuousClock()
        let started = clock.now
        var delay = self.policy.initialDelay
        while true {
            var failed: CountersignClient?
            do {
                let connection = try await self.connection()
                failed = connection
                return try await body(connection)
            } catch {
                guard Self.isTransient(error), clock.now - started < self.policy.patience, !self.isClosed else { throw error }
                await self.abandon(failed)
                try await self.policy.sleep(self.policy.jitter(delay))
                delay = min(delay * 2, self.policy.maximumDelay)
            }
        }
    }

    /// AUTHORIZE with failover: the same request (its idempotency key) to the next server when one is lost.
    public func authorize(_ request: AuthorizeRequest) async throws -> Authorization {
        try await self.perform { try await $0.authorize(request) }
    }

    /// AUTHORIZE with failover, a pending approval as an outcome rather than an error.
    public func submit(_ request: AuthorizeRequest) async throws -> AuthorizeOutcome {
        try await self.perform { try await $0.submit(request) }
    }

    /// FETCH_AUTHORIZATION with failover (any server answers for any authorization of the cluster).
    public func fetchAuthorization(id: String, waitSeconds: Int? = nil) async throws -> AuthorizeOutcome {
        try await self.perform { try await $0.fetchAuthorization(id: id, waitSeconds: waitSeconds) }
    }

    /// The server the current connection goes to, if there is one.
    public var connectedEndpoint: Endpoint? {
        self.state.withLock { state in state.connection == nil ? nil : self.endpoints[(state.next + self.endpoints.count - 1) % self.endpoints.count] }
    }

    /// Closes the connection; later calls throw.
    public func close() async {
        let connection = self.state.withLock { state -> CountersignClient? in
            state.isClosed = true
            defer { state.connection = nil }
            return state.connection
        }
        await connection?.close()
    }

    private var isClosed: Bool { self.state.withLock { $0.isClosed } }

    /// The current connection, or a new one to the next server that answers (each server tried once per call).
    private func connection() async throws -> CountersignClient {
        let (current, start, closed) = self.state.withLock { ($0.connection, $0.next, $0.isClosed) }
        if closed { throw ClientError.connectionClosed }
        if let current { return current }
        var lastError: (any Error)?
        for offset in 0..<self.endpoints.count {
            let index = (start + offset) % self.endpoints.count
            let endpoint = self.endpoints[index]
            do {
                let connection = try await CountersignClient.connect(
                    host: endpoint.host, port: endpoint.port, principal: self.principal, key: self.key, tls: self.tls)
                let kept = self.state.withLock { state -> CountersignClient? in
                    if let other = state.connection { return other }
                    state.connection = connection
                    state.next = (index + 1) % self.endpoints.count
                    return nil
                }
                if let kept {
                    // Another task connected meanwhile: use its connection.
                    await connection.close()
                    return kept
                }
                return connection
            } catch {
                lastError = error
            }
        }
        throw lastError ?? ClientError.connectionClosed
    }

    /// Lets go of a connection that failed, so the next attempt connects to the next server.
    private func abandon(_ connection: CountersignClient?) async {
        guard let connection else { return }
        let dropped = self.state.withLock { state -> Bool in
            guard state.connection === connection else { return false }
            state.connection = nil
            return true
        }
        if dropped { await connection.close() }
    }
}
