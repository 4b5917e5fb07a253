import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Signing

/// The HTTP listener (default `127.0.0.1:7680`): `GET /.well-known/jwks.json`, `/metrics`, `/healthz`, `/readyz`.
/// Nothing on it can sign; authorizations are only ever requested over the framed protocol.
public final class HTTPServer: Service, Sendable {
    /// What the routes answer with.
    struct Routes: Sendable {
        var keySet: @Sendable () -> JWKSet
        var metrics: @Sendable () async -> String
        /// `nil` when ready; otherwise why not.
        var notReadyBecause: @Sendable () async -> String?
    }

    private let endpoint: ServerConfiguration.Endpoint
    private let routes: Routes
    private let group: any EventLoopGroup
    private let logger: Logger
    private let bound: EventLoopPromise<SocketAddress>
    private let isShuttingDown = ShutdownFlag()

    init(endpoint: ServerConfiguration.Endpoint, routes: Routes, group: any EventLoopGroup, logger: Logger) {
        self.endpoint = endpoint
        self.routes = routes
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
            throw StartupError("cannot listen for HTTP on \(self.endpoint): \(error)")
        }
        self.bound.succeed(server.channel.localAddress!)
        self.logger.notice("HTTP listening", metadata: ["address": "\(server.channel.localAddress!)"])
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        guard let connection else { continue }
                        group.addTask { await self.serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            self.isShuttingDown.set()
            server.channel.close(promise: nil)
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        try? await connection.executeThenClose { inbound, outbound in
            var request: HTTPRequestHead?
            for try await part in inbound {
                switch part {
                case .head(let head):
                    request = head
                case .body:
                    continue
                case .end:
                    guard let head = request else { continue }
                    let (status, contentType, body) = await self.respond(to: head)
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Type", value: contentType)
                    headers.add(name: "Content-Length", value: String(body.utf8.count))
                    headers.add(name: "Cache-Control", value: "no-store")
                    let keepAlive = head.isKeepAlive
                    headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
                    try await outbound.write(.head(HTTPResponseHead(version: head.version, status: status, headers: headers)))
                    try await outbound.write(.body(.byteBuffer(ByteBuffer(string: body))))
                    try await outbound.write(.end(nil))
                    request = nil
                    if !keepAlive { return }
                }
            }
        }
    }

    private func respond(to head: HTTPRequestHead) async -> (HTTPResponseStatus, String, String) {
        guard head.method == .GET || head.method == .HEAD else {
            return (.methodNotAllowed, "text/plain; charset=utf-8", "only GET\n")
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch path {
        case "/.well-known/jwks.json":
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let body = (try? encoder.encode(self.routes.keySet())).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            return (.ok, "application/jwk-set+json", body)
        case "/metrics":
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", await self.routes.metrics())
        case "/healthz":
            return (.ok, "text/plain; charset=utf-8", "ok\n")
        case "/readyz":
            if let reason = await self.routes.notReadyBecause() {
                return (.serviceUnavailable, "text/plain; charset=utf-8", "not ready: \(reason)\n")
            }
            return (.ok, "text/plain; charset=utf-8", "ready\n")
        default:
            return (.notFound, "text/plain; charset=utf-8", "not found\n")
        }
    }
}
