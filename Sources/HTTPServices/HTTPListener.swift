import CountersignConfiguration
import CountersignCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A small HTTP/1.1 listener: each request (head and a body of at most `maximumBody` bytes) is answered by
/// `respond`. Serves the operator's endpoints (``HTTPServer``) and the audit witness (``WitnessService``).
public final class HTTPListener: Service, Sendable {
    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var contentType: String
        public var body: String

        public init(_ status: HTTPResponseStatus, _ contentType: String = "text/plain; charset=utf-8", _ body: String) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    private let endpoint: ServerConfiguration.Endpoint
    private let respond: @Sendable (HTTPRequestHead, ByteBuffer) async -> Response
    private let maximumBody: Int
    private let group: any EventLoopGroup
    private let logger: Logger
    private let name: String
    private let bound: EventLoopPromise<SocketAddress>
    private let isShuttingDown = ShutdownFlag()
    /// Open connections and whether each is answering now. At the stop the idle ones are closed (a keep-alive
    /// client that sends nothing more would hold the stop forever); the busy ones close after their answer.
    private let connections = Mutex<(stopping: Bool, open: [ObjectIdentifier: (channel: any Channel, busy: Bool)])>((false, [:]))
    /// More connections than this are closed at once.
    static let maximumConnections = 256

    public init(
        name: String = "HTTP", endpoint: ServerConfiguration.Endpoint, maximumBody: Int = 0, group: any EventLoopGroup, logger: Logger,
        respond: @escaping @Sendable (HTTPRequestHead, ByteBuffer) async -> Response
    ) {
        self.name = name
        self.endpoint = endpoint
        self.maximumBody = maximumBody
        self.respond = respond
        self.group = group
        self.logger = logger
        self.bound = group.next().makePromise()
    }

    public var localAddress: SocketAddress {
        get async throws { try await self.bound.futureResult.get() }
    }

    public func run() async throws {
        let isShuttingDown = self.isShuttingDown
        let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>?, Never>
        do {
            server = try await ServerBootstrap(group: self.group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: self.endpoint.host, port: self.endpoint.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        guard !isShuttingDown.isSet else {
                            channel.close(promise: nil)
                            return nil
                        }
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            self.bound.fail(error)
            throw StartupError("cannot listen for \(self.name) on \(self.endpoint): \(error)")
        }
        self.bound.succeed(server.channel.localAddress!)
        self.logger.notice("\(self.name) listening", metadata: ["address": "\(server.channel.localAddress!)"])
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        guard let connection else { continue }
                        let id = ObjectIdentifier(connection.channel)
                        let accepted = self.connections.withLock { state -> Bool in
                            guard !state.stopping, state.open.count < Self.maximumConnections else { return false }
                            state.open[id] = (connection.channel, false)
                            return true
                        }
                        guard accepted else {
                            connection.channel.close(promise: nil)
                            continue
                        }
                        group.addTask {
                            await self.serve(connection, id: id)
                            self.connections.withLock { _ = $0.open.removeValue(forKey: id) }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            self.isShuttingDown.set()
            server.channel.close(promise: nil)
            let idle = self.connections.withLock { state -> [any Channel] in
                state.stopping = true
                return state.open.values.filter { !$0.busy }.map(\.channel)
            }
            for channel in idle { channel.close(promise: nil) }
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, id: ObjectIdentifier) async {
        try? await connection.executeThenClose { inbound, outbound in
            func answer(_ head: HTTPRequestHead, _ response: Response, keepAlive: Bool) async throws {
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: response.contentType)
                headers.add(name: "Content-Length", value: String(response.body.utf8.count))
                headers.add(name: "Cache-Control", value: "no-store")
                headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
                try await outbound.write(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers)))
                try await outbound.write(.body(.byteBuffer(ByteBuffer(string: response.body))))
                try await outbound.write(.end(nil))
            }
            var request: HTTPRequestHead?
            var body = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let head):
                    request = head
                    body.clear()
                    self.connections.withLock { $0.open[id]?.busy = true }
                case .body(var chunk):
                    guard body.readableBytes + chunk.readableBytes <= self.maximumBody, let head = request else {
                        // Answered at once, and the connection closed: the rest of the body is not read.
                        if let head = request {
                            try await answer(
                                head, Response(.payloadTooLarge, "text/plain; charset=utf-8", "a body of at most \(self.maximumBody) bytes\n"), keepAlive: false
                            )
                        }
                        return
                    }
                    _ = head
                    body.writeBuffer(&chunk)
                case .end:
                    guard let head = request else { continue }
                    let stopping = self.isShuttingDown.isSet
                    let keepAlive = head.isKeepAlive && !stopping
                    try await answer(head, await self.respond(head, body), keepAlive: keepAlive)
                    request = nil
                    let closing = self.connections.withLock { state -> Bool in
                        state.open[id]?.busy = false
                        return state.stopping
                    }
                    if !keepAlive || closing { return }
                }
            }
        }
    }
}
