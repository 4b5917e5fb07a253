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

    /// When to ask again, how long to keep asking, and when to stop trying a server that keeps failing: the rules
    /// of docs/protocol.md "Client behaviour", which the Python client follows too.
    public struct RetryPolicy: Sendable {
        /// The first pause's bound; each failure doubles it, up to `maximumDelay`.
        public var initialDelay: Duration = .milliseconds(100)
        /// The largest bound of a pause between two attempts.
        public var maximumDelay: Duration = .seconds(5)
        /// No attempt starts (and no pause is taken) past this long after the first: the last error is thrown.
        public var patience: Duration = .seconds(60)
        /// At most this many attempts per call.
        public var maximumAttempts = 20
        /// How long one attempt may wait for its answer (a FETCH adds its `wait_seconds`). Past it the connection
        /// counts as stuck: it is closed and the request asked again, on the next server.
        public var attemptTimeout: Duration = .seconds(15)
        /// Consecutive connection failures after which a server's breaker opens.
        public var breakerThreshold = 3
        /// How long an open breaker keeps requests from its server.
        public var breakerCooldown: Duration = .seconds(10)
        /// The pause actually taken, given the backoff's bound: by default a uniformly random part of it ("full
        /// jitter"), so clients that lost the same server do not all come back at once.
        public var jitter: @Sendable (Duration) -> Duration = { bound in
            bound * Double.random(in: 0...1)
        }
        /// The monotonic time of patience, pauses, deadlines and breakers (tests pass a manual clock's).
        public var time: MonotonicTime = .continuous

        /// The defaults: 100 ms doubling to 5 s with full jitter, a minute of patience, 15 s per attempt, breakers
        /// opening after 3 failures for 10 s.
        public init() {}

        /// The bound of the pause after `failures` failed attempts (1, 2, …).
        func delayBound(after failures: Int) -> Duration {
            var bound = self.initialDelay
            for _ in 1..<max(1, failures) where bound < self.maximumDelay { bound = bound * 2 }
            return min(bound, self.maximumDelay)
        }
    }

    private struct State {
        var connection: CountersignClient?
        /// The index in `endpoints` of the current connection's server.
        var connectedTo = 0
        /// The index in `endpoints` of the server to try next.
        var next = 0
        var breakers: [CircuitBreaker]
        /// The connect in flight, which callers without a connection wait for.
        var connecting: Task<(CountersignClient, Int), any Error>?
        var isClosed = false
    }

    /// The servers, in the order they are tried.
    public let endpoints: [Endpoint]
    private let principal: String
    private let key: CredentialPrivateKey
    private let tls: TLSConfiguration?
    private let policy: RetryPolicy
    private let state: Mutex<State>

    /// - Parameters:
    ///   - endpoints: the servers, tried in this order (the first that answers is used until it fails).
    ///   - principal, key: the credential every connection authenticates with.
    ///   - tls: the TLS configuration, for servers that require it.
    ///   - policy: retries, deadlines and breakers.
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
        self.state = Mutex(
            State(breakers: Array(repeating: CircuitBreaker(threshold: policy.breakerThreshold, cooldown: policy.breakerCooldown), count: endpoints.count)))
    }

    /// A client of the servers listed in `servers` (`host:port,host:port`), with a credential file's identity.
    /// - Throws: ``WireError`` for a malformed list, or the credential's error when its key cannot be read.
    public convenience init(servers: String, credential: CredentialFile, tls: TLSConfiguration? = nil, policy: RetryPolicy = RetryPolicy()) throws {
        try self.init(endpoints: try Endpoint.list(servers), principal: credential.principal, key: try credential.key(), tls: tls, policy: policy)
    }

    /// Whether asking again (perhaps elsewhere) may succeed: a lost, unreachable or stuck server, a server closing
    /// during the handshake (stopping), or a refusal the server marked retryable. An open breaker is not: it is
    /// the answer to give at once.
    public static func isTransient(_ error: any Error) -> Bool {
        switch error {
        case let error as WireError: error.retryable
        case ClientError.closedDuringHandshake: true
        case let error as ClientError: error.isConnectionFailure
        default: false
        }
    }

    /// Whether, after `error`, the next attempt goes to the next server: the connection failed, or the server said
    /// it is going (`SHUTTING_DOWN`) or closes the connection (`TOO_MANY_CONNECTIONS`, `IDLE_TIMEOUT`). Any other
    /// answer, `RATE_LIMITED` and `HSM_UNAVAILABLE` included, proves the server alive: asked again there (a rate
    /// limit is the agent's own, and moving would only spread it).
    public static func movesToNextServer(_ error: any Error) -> Bool {
        switch error {
        case let error as WireError: Self.connectionLevelCodes.contains(error.code)
        case ClientError.closedDuringHandshake: true
        case let error as ClientError: error.isConnectionFailure
        default: false
        }
    }

    /// The server's answers that end the connection because of the server's state, not the client's request (which
    /// `AUTHENTICATION_FAILED`, `PRINCIPAL_REVOKED` or `FRAME_TOO_LARGE` are: another server would answer the same).
    static let connectionLevelCodes: Set<ErrorCode> = [.shuttingDown, .tooManyConnections, .idleTimeout]

    /// Runs `body` on a connection to one of the servers, within the policy's attempt timeout plus `extraTime`.
    /// After a transient failure (``isTransient(_:)``) it runs it again after a jittered backoff, on the next server
    /// when ``movesToNextServer(_:)``, until it succeeds, fails otherwise, or the policy's patience or attempts are
    /// spent (then the last error is thrown). When every server's breaker is open it throws
    /// ``ClientError/circuitOpen(retryAfter:)`` at once.
    public func perform<Result: Sendable>(
        extraTime: Duration = .zero, _ body: @escaping @Sendable (CountersignClient) async throws -> Result
    ) async throws -> Result {
        let time = self.policy.time
        let started = time.now
        var failures = 0
        while true {
            var attempt: (connection: CountersignClient, index: Int)?
            do {
                let current = try await self.connection(within: self.policy.patience - (time.now - started))
                attempt = current
                let timeout = self.policy.attemptTimeout + extraTime
                let result: Result
                do {
                    result = try await withDeadline(timeout, time: time) { try await body(current.connection) }
                } catch is DeadlineExceeded {
                    throw ClientError.timedOut("no answer within \(timeout)")
                }
                self.state.withLock { $0.breakers[current.index].succeeded() }
                return result
            } catch {
                if let attempt { await self.judge(error, on: attempt.connection, index: attempt.index) }
                failures += 1
                guard Self.isTransient(error), failures < self.policy.maximumAttempts, !self.isClosed else { throw error }
                let pause = self.policy.jitter(self.policy.delayBound(after: failures))
                guard time.now - started + pause <= self.policy.patience else { throw error }
                try await time.sleep(for: pause)
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
        try await self.perform(extraTime: .seconds(waitSeconds ?? 0)) { try await $0.fetchAuthorization(id: id, waitSeconds: waitSeconds) }
    }

    /// VOID with failover (voiding twice answers the first `voided_at`, so asking again is safe).
    public func void(authorizationID: String) async throws -> Voided {
        try await self.perform { try await $0.void(authorizationID: authorizationID) }
    }

    /// BUDGETS_SHOW with failover.
    public func budgets(agent: String) async throws -> BudgetsReport {
        try await self.perform { try await $0.budgets(agent: agent) }
    }

    /// GET_KEYS with failover.
    public func keys() async throws -> JWKSet {
        try await self.perform { try await $0.keys() }
    }

    /// The server the current connection goes to, if there is one.
    public var connectedEndpoint: Endpoint? {
        self.state.withLock { state in state.connection == nil ? nil : self.endpoints[state.connectedTo] }
    }

    /// Each server's breaker, in the order of ``endpoints``.
    public var breakerStates: [CircuitBreaker.State] {
        let now = self.policy.time.now
        return self.state.withLock { state in state.breakers.map { $0.state(at: now) } }
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

    /// The current connection, or a new one. Only one connect runs at a time: callers that find none wait for the
    /// one in flight (a burst of callers after an outage makes one connection, and counts one failure, not many).
    /// - Parameter patience: the time left to the caller that finds no connection; a connect it starts tries servers
    ///   only within it (each for up to the attempt timeout), so a call ends within its patience when none answers.
    private func connection(within patience: Duration) async throws -> (connection: CountersignClient, index: Int) {
        enum Next {
            case ready(CountersignClient, Int)
            case waiting(Task<(CountersignClient, Int), any Error>)
        }
        let next = try self.state.withLock { state -> Next in
            if state.isClosed { throw ClientError.connectionClosed }
            if let connection = state.connection {
                if connection.isOpen { return .ready(connection, state.connectedTo) }
                // Closed since (a refusal that ends the connection reached another caller first, or the server went):
                // connect again, starting with the same server; a lost server is counted when connecting fails.
                state.connection = nil
                state.next = state.connectedTo
            }
            if let connecting = state.connecting { return .waiting(connecting) }
            let start = state.next
            let connecting = Task { try await self.connectToNext(startingAt: start, within: patience) }
            state.connecting = connecting
            return .waiting(connecting)
        }
        switch next {
        case .ready(let connection, let index): return (connection, index)
        case .waiting(let connecting): return try await connecting.value
        }
    }

    /// A new connection to the next server whose breaker lets it be tried (each tried once), installed as the current
    /// one. Throws ``ClientError/circuitOpen(retryAfter:)`` when no breaker lets one be tried.
    private func connectToNext(startingAt start: Int, within patience: Duration) async throws -> (CountersignClient, Int) {
        defer { self.state.withLock { $0.connecting = nil } }
        var lastError: (any Error)?
        var tried = 0
        let begun = self.policy.time.now
        for offset in 0..<self.endpoints.count {
            let left = patience - (self.policy.time.now - begun)
            guard left > .zero else { throw ClientError.timedOut("no server answered within the call's patience of \(self.policy.patience)") }
            let index = (start + offset) % self.endpoints.count
            let now = self.policy.time.now
            guard self.state.withLock({ $0.breakers[index].allow(at: now) }) else { continue }
            tried += 1
            let endpoint = self.endpoints[index]
            let connection: CountersignClient
            do {
                connection = try await CountersignClient.connect(
                    host: endpoint.host, port: endpoint.port, principal: self.principal, key: self.key, tls: self.tls,
                    handshakeTimeout: min(self.policy.attemptTimeout, left))
            } catch {
                guard Self.movesToNextServer(error) else {
                    // The server answered (AUTHENTICATION_FAILED, PRINCIPAL_REVOKED): another would answer the same.
                    self.state.withLock { $0.breakers[index].released() }
                    throw error
                }
                self.state.withLock { $0.breakers[index].failed(at: self.policy.time.now) }
                lastError = error
                continue
            }
            let closed = self.state.withLock { state -> Bool in
                state.breakers[index].succeeded()
                guard !state.isClosed else { return true }
                state.connection = connection
                state.connectedTo = index
                state.next = (index + 1) % self.endpoints.count
                return false
            }
            if closed {
                await connection.close()
                throw ClientError.connectionClosed
            }
            return (connection, index)
        }
        if tried == 0 {
            // (A probe is never in flight here: it is the one connect in flight, and callers wait for it.)
            let now = self.policy.time.now
            throw ClientError.circuitOpen(retryAfter: self.state.withLock { state in state.breakers.map { $0.retryAfter(at: now) }.min() ?? .zero })
        }
        throw lastError ?? ClientError.connectionClosed
    }

    /// After a failed attempt on the connection to server `index`: a connection failure counts against its breaker
    /// and lets go of the connection, so the next attempt goes to the next server; any other answer proves it alive.
    private func judge(_ error: any Error, on connection: CountersignClient, index: Int) async {
        guard Self.movesToNextServer(error) else {
            // The server answered; but an answer that ends the connection for the request's own sake (FRAME_TOO_LARGE)
            // leaves it closed: the next call connects again, to the same server, instead of finding it dead.
            let closed = !connection.isOpen
            let dropped = self.state.withLock { state -> Bool in
                state.breakers[index].succeeded()
                guard closed, state.connection === connection else { return false }
                state.connection = nil
                state.next = index
                return true
            }
            if dropped { await connection.close() }
            return
        }
        let now = self.policy.time.now
        let dropped = self.state.withLock { state -> Bool in
            guard state.connection === connection else { return false }
            state.connection = nil
            state.breakers[index].failed(at: now)
            return true
        }
        if dropped { await connection.close() }
    }
}
