import CountersignConfiguration
import Foundation
import HTTPServices
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Signing
import Synchronization

/// The operator's HTTP listener (default `127.0.0.1:7680`): `GET /.well-known/jwks.json`, `/metrics`, `/healthz`,
/// `/readyz`. Nothing on it can sign; authorizations are only ever requested over the framed protocol.
public final class HTTPServer: Service, Sendable {
    /// What the routes answer with.
    struct Routes: Sendable {
        var keySet: @Sendable () -> JWKSet
        var metrics: @Sendable () async -> String
        /// `nil` when ready; otherwise why not.
        var notReadyBecause: @Sendable () async -> String?
    }

    private let listener: HTTPListener

    init(endpoint: ServerConfiguration.Endpoint, routes: Routes, group: any EventLoopGroup, logger: Logger) {
        self.listener = HTTPListener(endpoint: endpoint, group: group, logger: logger) { head, _ in await Self.respond(to: head, routes: routes) }
    }

    public var localAddress: SocketAddress {
        get async throws { try await self.listener.localAddress }
    }

    public func run() async throws {
        try await self.listener.run()
    }

    private static func respond(to head: HTTPRequestHead, routes: Routes) async -> HTTPListener.Response {
        guard head.method == .GET || head.method == .HEAD else {
            return .init(.methodNotAllowed, "text/plain; charset=utf-8", "only GET\n")
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch path {
        case "/.well-known/jwks.json":
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let body = (try? encoder.encode(routes.keySet())).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            return .init(.ok, "application/jwk-set+json", body)
        case "/metrics":
            return .init(.ok, "text/plain; version=0.0.4; charset=utf-8", await routes.metrics())
        case "/healthz":
            return .init(.ok, "text/plain; charset=utf-8", "ok\n")
        case "/readyz":
            if let reason = await routes.notReadyBecause() {
                return .init(.serviceUnavailable, "text/plain; charset=utf-8", "not ready: \(reason)\n")
            }
            return .init(.ok, "text/plain; charset=utf-8", "ready\n")
        default:
            return .init(.notFound, "text/plain; charset=utf-8", "not found\n")
        }
    }
}
