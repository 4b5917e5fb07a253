import CountersignConfiguration
import CountersignCore
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Policy
import ServiceLifecycle
import Synchronization
import Wire

/// The framed-TCP listener (default `127.0.0.1:7600`).
///
/// On graceful shutdown it stops accepting, refuses new requests on open connections with `SHUTTING_DOWN`,
/// answers every request already in flight, then closes.
public final class FramedServer: Service, Sendable {
    private let endpoint: ServerConfiguration.Endpoint
    private let tls: NIOSSLContext?
    private let limits: ServerConfiguration.Limits
    private let connectionHandler: ConnectionHandler
    private let group: any EventLoopGroup
    private let metrics: ServerMetrics
    private let logger: Logger
    /// Runs once the listener is bound, before any connection is served; a failure stops the server.
    private let beforeServing: @Sendable () async throws -> Void
    /// Runs when the graceful shutdown begins: whatever holds requests open lets go of them.
    private let onShutdown: @Sendable () -> Void
    private let bound: EventLoopPromise<SocketAddress>
    private let connections = Mutex<[ObjectIdentifier: ConnectionState]>([:])
    private let isShuttingDown = ShutdownFlag()

    init(
        endpoint: ServerConfiguration.Endpoint, tls: NIOSSLContext?, limits: ServerConfiguration.Limits, connectionHandler: ConnectionHandler,
        group: any EventLoopGroup, metrics: ServerMetrics, logger: Logger, beforeServing: @escaping @Sendable () async throws -> Void = {},
        onShutdown: @escaping @Sendable () -> Void = {}
    ) {
        self.beforeServing = beforeServing
        self.onShutdown = onShutdown
        self.endpoint = endpoint
        self.tls = tls
        self.limits = limits
        self.connectionHandler = connectionHandler
        self.group = group
        self.metrics = metrics
        self.logger = logger
        self.bound = group.next().makePromise()
    }

    /// Where the listener is bound, once it is (port 0 in the configuration picks a free port).
    public var localAddress: SocketAddress {
        get async throws { try await self.bound.futureResult.get() }
    }

    public func run() async throws {
        let maximumFrameLength = self.limits.maximumFrameLength
        let tls = self.tls
        let isShuttingDown = self.isShuttingDown
        let server: NIOAsyncChannel<NIOAsyncChannel<Frame, Frame>?, Never>
        do {
            server = try await ServerBootstrap(group: self.group)
                .serverChannelOption(.backlog, value: 512)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                // A client that stops sending (half-close) still gets its answers, or TRUNCATED_FRAME.
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .bind(host: self.endpoint.host, port: self.endpoint.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // A connection accepted while the listener closes would be wrapped and then dropped
                        // unconsumed, which NIOAsyncChannel forbids: close it instead of wrapping it.
                        guard !isShuttingDown.isSet else {
                            channel.close(promise: nil)
                            return nil
                        }
                        if let tls {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                        }
                        try channel.pipeline.syncOperations.addHandler(FlushCoalescingHandler())
                        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maximumFrameLength: maximumFrameLength)))
                        // Half-closure: at the stop, the output is closed after the last answer while the input is
                        // still read (see ConnectionHandler.closeOutputWhenDrained).
                        return try NIOAsyncChannel<Frame, Frame>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch {
            self.bound.fail(error)
            throw StartupError("cannot listen on \(self.endpoint): \(error)")
        }
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { inbound in
                do {
                    try await self.beforeServing()
                } catch {
                    self.bound.fail(error)
                    throw StartupError("cannot start serving on \(self.endpoint): \(error)")
                }
                self.bound.succeed(server.channel.localAddress!)
                self.logger.notice("listening", metadata: ["address": "\(server.channel.localAddress!)", "tls": "\(tls != nil)"])
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        guard let connection else { continue }
                        group.addTask { await self.accept(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            self.logger.notice("shutting down: no new connections, answering requests in flight")
            self.isShuttingDown.set()
            self.onShutdown()
            // The drain (and its SHUTTING_DOWN answers) begins once the listener is closed, so that a client told
            // to go elsewhere cannot still connect here.
            server.channel.close().whenComplete { _ in
                for connection in self.connections.withLock({ Array($0.values) }) {
                    connection.drain(grace: self.limits.shutdownGrace)
                }
            }
        }
        self.logger.notice("framed listener stopped")
    }

    private func accept(_ connection: NIOAsyncChannel<Frame, Frame>) async {
        let state = ConnectionState(channel: connection.channel, now: self.connectionHandler.time.now)
        let key = ObjectIdentifier(state)
        let admitted = self.connections.withLock { connections -> Bool in
            guard connections.count < self.limits.maximumConnections else { return false }
            connections[key] = state
            return true
        }
        guard admitted else {
            let error = WireError(.tooManyConnections, "the server has its maximum of \(self.limits.maximumConnections) connections", retryable: true)
            try? await connection.executeThenClose { _, outbound in
                try await outbound.write(ConnectionHandler.errorFrame(error, requestID: 0))
            }
            return
        }
        self.metrics.connectionsChanged(open: self.connections.withLock { $0.count })
        if self.isShuttingDown.isSet {
            state.drain(grace: self.limits.shutdownGrace)
        }
        await withPreferredTaskExecutor(state.executor) {
            await self.connectionHandler.serve(connection, state: state)
        }
        let open = self.connections.withLock { connections -> Int in
            connections[key] = nil
            return connections.count
        }
        self.metrics.connectionsChanged(open: open)
    }
}
