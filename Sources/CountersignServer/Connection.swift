import CountersignConfiguration
import Ledger
import Logging
import NIOCore
import Policy
import Signing
import Synchronization
import Wire

/// What the server knows of one open connection, shared between its task and the server's shutdown.
final class ConnectionState: Sendable {
    private struct Counters {
        var inFlight = 0
        var isDraining = false
        var isAuthenticated = false
        var isOutputClosed = false
        var lastActivity: Duration
    }

    let channel: any Channel
    /// The connection's loop, where its tasks run.
    let executor: EventLoopExecutor
    private let counters: Mutex<Counters>
    /// Fires once, when the server is draining and nothing is in flight: the connection's answers are all
    /// written and its output can be closed.
    let drained: AsyncStream<Void>
    private let drainedContinuation: AsyncStream<Void>.Continuation

    init(channel: any Channel, now: Duration) {
        self.channel = channel
        self.executor = EventLoopExecutor(channel.eventLoop)
        self.counters = Mutex(Counters(lastActivity: now))
        (self.drained, self.drainedContinuation) = AsyncStream.makeStream(of: Void.self)
    }

    /// Whether the output is closed (half-closed for the stop): nothing more can be written.
    var isOutputClosed: Bool { self.counters.withLock { $0.isOutputClosed } }

    func outputClosed() {
        self.counters.withLock { $0.isOutputClosed = true }
    }

    /// The connection ended: nobody waits for `drained` any more.
    func ended() {
        self.drainedContinuation.finish()
    }

    private func signalDrained() {
        self.drainedContinuation.yield()
        self.drainedContinuation.finish()
    }

    var isAuthenticated: Bool { self.counters.withLock { $0.isAuthenticated } }

    func authenticated() {
        self.counters.withLock { $0.isAuthenticated = true }
    }

    func touched(at now: Duration) {
        self.counters.withLock { $0.lastActivity = now }
    }

    /// How long since the client last sent a frame or was last sent an answer. Requests in flight do not
    /// count: a client that pipelines requests and never reads its answers must not hold the connection.
    func quietFor(now: Duration) -> Duration {
        self.counters.withLock { now - $0.lastActivity }
    }

    /// Counts a request in, unless the server is draining; one step, so `drain()` cannot slip between.
    func tryStartRequest() -> Bool {
        self.counters.withLock { counters in
            guard !counters.isDraining else { return false }
            counters.inFlight += 1
            return true
        }
    }

    /// Counts a request done; signals `drained` if the server is draining and nothing else is in flight.
    func requestFinished() {
        let drained = self.counters.withLock { counters -> Bool in
            counters.inFlight -= 1
            return counters.isDraining && counters.inFlight == 0
        }
        if drained { self.signalDrained() }
    }

    /// Told to a connection as it is closed for the stop (request id 0): a request the client sent meanwhile
    /// fails with a retryable code, not with a bare close.
    static let shuttingDown = WireError(.shuttingDown, "the server is shutting down; reconnect to another instance", retryable: true)

    /// The server is shutting down: no new requests; once the ones in flight are answered the connection's
    /// output is closed (see ``ConnectionHandler``), or the whole connection after `grace` whatever happens (a
    /// client that never reads its answers must not hold the shutdown).
    func drain(grace: Duration) {
        let drained = self.counters.withLock { counters -> Bool in
            counters.isDraining = true
            return counters.inFlight == 0
        }
        // Whatever happens next, the connection is closed after `grace`: a client that does not read can block
        // even the last SHUTTING_DOWN frame.
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: TimeAmount(grace)) { channel.close(promise: nil) }
        if drained { self.signalDrained() }
    }

    /// Sends a connection-level error and closes, without waiting on a client that does not read: the close
    /// follows the write, or a second later if the write cannot complete.
    func closeWithError(_ error: WireError) {
        let channel = self.channel
        channel.writeAndFlush(ConnectionHandler.errorFrame(error, requestID: 0)).whenComplete { _ in
            channel.close(promise: nil)
        }
        channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }
}

/// Serves one connection: the handshake, then pipelined requests answered in any order.
///
/// Never throws: whatever a client sends, the worst it gets is an error frame and a closed connection.
struct ConnectionHandler: Sendable {
    let requests: RequestHandler
    let principals: PrincipalDirectory
    let limits: ServerConfiguration.Limits
    let time: MonotonicTime
    let random: RandomSource
    let metrics: ServerMetrics
    let logger: Logger

    func serve(_ channel: NIOAsyncChannel<Frame, Frame>, state: ConnectionState) async {
        do {
            try await channel.executeThenClose { inbound, outbound in
                let watchdog = self.startWatchdog(state: state)
                defer { watchdog.cancel() }
                async let closing: Void = self.closeOutputWhenDrained(state: state, outbound: outbound)
                // Each task says whether it was a read of the audit log.
                await withTaskGroup(of: Bool.self) { requests in
                    var handshake = self.newHandshake()
                    var inFlight = 0
                    var logReadsInFlight = 0
                    do {
                        reading: for try await frame in inbound {
                            state.touched(at: self.time.now)
                            guard frame.version == WireProtocol.version else {
                                let error = WireError(
                                    .unsupportedVersion,
                                    "protocol version \(frame.version) is not supported; this server speaks version \(WireProtocol.version)")
                                try await outbound.write(Self.errorFrame(error, requestID: frame.requestID))
                                break reading
                            }
                            switch handshake.state {
                            case .awaitingHello, .awaitingAuth:
                                // Stopping, output closed: nothing more is answered, input is only drained.
                                if state.isOutputClosed { continue }
                                // A principal another server registered a moment ago may not have reached this one's
                                // directory through the store's change feed yet: the store itself is asked first.
                                if case .awaitingAuth(let principal, _) = handshake.state, frame.type == .auth, self.principals.lookup(principal) == nil {
                                    try? await self.principals.reload(id: principal)
                                }
                                let step = handshake.receive(frame)
                                self.record(step.event)
                                try await outbound.write(step.reply)
                                if case .authenticated = handshake.state {
                                    state.authenticated()
                                } else if step.closes {
                                    break reading
                                }
                            case .authenticated(let principal):
                                // Backpressure: while the connection has its maximum in flight, stop reading; and while it has
                                // its few reads of the audit log in flight, stop reading at the next one (each answer can be a
                                // megabyte, and a client that does not read would have the server hold hundreds of them).
                                let isLogRead = frame.type.descriptor?.readsLog ?? false
                                while inFlight >= self.limits.maximumInFlight || (isLogRead && logReadsInFlight >= Self.maximumLogReadsInFlight) {
                                    guard let wasLogRead = await requests.next() else { break }
                                    inFlight -= 1
                                    if wasLogRead { logReadsInFlight -= 1 }
                                    if !state.channel.isActive { requests.cancelAll() }
                                }
                                guard state.tryStartRequest() else {
                                    // Draining: answered while the output is open, then read and dropped, so the
                                    // close finds an empty receive queue (a close over unread input sends RST, and
                                    // RST makes the client's kernel discard answers it has not read yet).
                                    if !state.isOutputClosed {
                                        try? await outbound.write(Self.errorFrame(ConnectionState.shuttingDown, requestID: frame.requestID))
                                    }
                                    continue
                                }
                                inFlight += 1
                                if isLogRead { logReadsInFlight += 1 }
                                requests.addTask {
                                    let response: Frame
                                    if frame.type.descriptor?.cancellable ?? false {
                                        response = await self.requests.respond(to: frame, from: principal)
                                    } else {
                                        // Not cancelled with its connection: a change of state runs to its end.
                                        response = await Task(executorPreference: state.executor) { await self.requests.respond(to: frame, from: principal) }
                                            .value
                                    }
                                    try? await outbound.write(response)
                                    state.touched(at: self.time.now)
                                    state.requestFinished()
                                    return isLogRead
                                }
                            }
                        }
                    } catch let error as WireError {
                        try? await outbound.write(Self.errorFrame(error, requestID: 0))
                    } catch {
                        self.logger.debug("connection ended", metadata: ["error": "\(error)"])
                    }
                    // A client that half-closed still reads its answers; one that is gone does not. TCP tells the
                    // two apart only when an answer is written to a closed peer (it resets the connection): from
                    // then on, what is still in flight and may be cancelled (reads, waits) is cancelled instead
                    // of computed for nobody.
                    if !state.channel.isActive { requests.cancelAll() }
                    while await requests.next() != nil {
                        if !state.channel.isActive { requests.cancelAll() }
                    }
                }
                state.ended()
                await closing
            }
        } catch {
            self.logger.debug("connection closed with error", metadata: ["error": "\(error)"])
        }
    }

    /// Reads of the audit log one connection may have in flight.
    static let maximumLogReadsInFlight = 2

    /// For the stop: once every answer is written, tells the client `SHUTTING_DOWN` (request id 0) and closes the
    /// output (`shutdown(SHUT_WR)`: a FIN after the last answer), then keeps reading until the client closes, so
    /// that no answer is lost to a reset. A client that does not close is closed at the drain's grace
    /// (`limits.shutdown_grace`), which also bounds a client that does not read.
    private func closeOutputWhenDrained(state: ConnectionState, outbound: NIOAsyncChannelOutboundWriter<Frame>) async {
        for await _ in state.drained {
            try? await outbound.write(Self.errorFrame(ConnectionState.shuttingDown, requestID: 0))
            state.outputClosed()
            outbound.finish()
            return
        }
    }

    /// The handshake of a new connection, against the principal directory.
    private func newHandshake() -> ServerHandshake {
        let principals = self.principals
        let random = self.random
        return ServerHandshake(challenge: { random.bytes(Handshake.challengeLength) }) { principal, algorithm, signature, transcript in
            guard let entry = principals.lookup(principal) else { return .unknownPrincipal }
            if let why = entry.refusal(algorithm, signature: signature, transcript: transcript, now: principals.now) { return .refused(why) }
            return entry.record.revokedAt == nil ? .accepted(entry.role) : .revoked
        }
    }

    /// A handshake step in the log and the metrics.
    private func record(_ event: ServerHandshake.Event) {
        switch event {
        case .challenged, .outOfOrder:
            break
        case .invalidHello:
            self.metrics.handshake("invalid_request")
        case .authenticated(let principal, let role):
            self.logger.info("authenticated", metadata: ["principal": "\(principal)", "role": "\(role.rawValue)"])
            self.metrics.handshake("ok")
        case .authenticationFailed(let principal, let reason):
            self.logger.notice("authentication failed", metadata: ["principal": "\(principal)", "reason": "\(reason)"])
            self.metrics.handshake("authentication_failed")
        case .revoked(let principal):
            self.logger.notice("revoked principal refused", metadata: ["principal": "\(principal)"])
            self.metrics.handshake("principal_revoked")
        }
    }

    /// Closes connections that do not finish the handshake in time, or stay idle too long.
    private func startWatchdog(state: ConnectionState) -> Task<Void, Never> {
        Task {
            do {
                try await self.time.sleep(for: self.limits.handshakeTimeout)
                if !state.isAuthenticated {
                    self.metrics.handshake("handshake_timeout")
                    state.closeWithError(WireError(.handshakeTimeout, "the handshake did not complete within \(self.limits.handshakeTimeout)"))
                    return
                }
                while true {
                    let quiet = state.quietFor(now: self.time.now)
                    if quiet >= self.limits.idleTimeout {
                        state.closeWithError(WireError(.idleTimeout, "the connection was idle for \(self.limits.idleTimeout)", retryable: true))
                        return
                    }
                    try await self.time.sleep(for: self.limits.idleTimeout - quiet)
                }
            } catch {
                return  // cancelled: the connection ended
            }
        }
    }

    static func errorFrame(_ error: WireError, requestID: UInt32) -> Frame {
        Frame(type: .error, requestID: requestID, body: WireJSON.encode(error))
    }
}

extension WireError {
    init(converting error: any Error) {
        self = (error as? WireError) ?? WireError(.invalidRequest, "\(error)")
    }
}
