import CountersignConfiguration
import CountersignCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdAuth
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Signing

/// The operator's HTTP listener (default `127.0.0.1:7680`), on Hummingbird: `GET /.well-known/jwks.json`, `/metrics`,
/// `/healthz`, `/readyz`, and (when `console:` is configured) the approvals console under `/console`. Nothing on it
/// signs except through an approver's passkey-vouched verdict; authorizations are requested over the framed protocol.
public final class HTTPServer: Service, Sendable {
    /// What the operator's routes answer with.
    struct Routes: Sendable {
        var keySet: @Sendable () -> JWKSet
        var metrics: @Sendable () async -> String
        /// `nil` when ready; otherwise why not.
        var notReadyBecause: @Sendable () async -> String?
    }

    private let application: Application<RouterResponder<ConsoleContext>>
    private let bound: EventLoopPromise<SocketAddress>

    init(
        endpoint: CountersignConfiguration.ServerConfiguration.Endpoint, routes: Routes, console: Console?,
        tls: CountersignConfiguration.ServerConfiguration.TLS?, group: any EventLoopGroup, logger: Logger
    ) throws {
        let bound = group.next().makePromise(of: SocketAddress.self)
        self.bound = bound
        let consoleOrigin = console?.passkeys.console.origin
        let router = Router(context: ConsoleContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: SecurityHeaders(console: console != nil, tls: tls != nil))
        Self.addOperatorRoutes(to: router, routes)
        var services: [any Service] = []
        if let console {
            services.append(console.sessionStorage)
            console.install(on: router)
        }
        let server: HTTPServerBuilder
        // The idle timeout bounds a client that connects and sends nothing; a live page's event stream is written to
        // at least every 15 s, so it never looks idle.
        let http1 = HTTPServerBuilder.http1(configuration: .init(idleTimeout: .seconds(60)))
        if let tls {
            let chain = try NIOSSLCertificate.fromPEMFile(tls.certificatePath)
            let key = try NIOSSLPrivateKey(file: tls.privateKeyPath, format: .pem)
            server = try .tls(
                http1,
                tlsConfiguration: .makeServerConfiguration(
                    certificateChain: chain.map { NIOSSLCertificateSource.certificate($0) }, privateKey: .privateKey(key)))
        } else {
            server = http1
        }
        self.application = Application(
            router: router, server: server, configuration: .init(address: .hostname(endpoint.host, port: endpoint.port)), services: services,
            onServerRunning: { channel in
                guard let address = channel.localAddress else { return bound.fail(ChannelError.ioOnClosedChannel) }
                logger.notice("HTTP listening", metadata: ["address": "\(address)"])
                if let origin = consoleOrigin { logger.notice("approvals console", metadata: ["origin": "\(origin)", "https": "\(tls != nil)"]) }
                bound.succeed(address)
            },
            eventLoopGroupProvider: .shared(group), logger: logger)
    }

    public var localAddress: SocketAddress {
        get async throws { try await self.bound.futureResult.get() }
    }

    public func run() async throws {
        do {
            try await self.application.run()
        } catch {
            self.bound.fail(error)
            throw error
        }
        self.bound.fail(ChannelError.ioOnClosedChannel)
    }

    private static func addOperatorRoutes(to router: Router<ConsoleContext>, _ routes: Routes) {
        router.get("/.well-known/jwks.json") { _, _ in
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let body = (try? encoder.encode(routes.keySet())) ?? Data("{}".utf8)
            return Response(status: .ok, headers: [.contentType: "application/jwk-set+json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        router.get("/metrics") { _, _ in
            Self.text(.ok, await routes.metrics(), type: "text/plain; version=0.0.4; charset=utf-8")
        }
        router.get("/healthz") { _, _ in Self.text(.ok, "ok\n") }
        router.get("/readyz") { _, _ in
            if let reason = await routes.notReadyBecause() { return Self.text(.serviceUnavailable, "not ready: \(reason)\n") }
            return Self.text(.ok, "ready\n")
        }
    }

    static func text(_ status: HTTPResponse.Status, _ body: String, type: String = "text/plain; charset=utf-8") -> Response {
        Response(status: status, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Headers on every answer: no sniffing, no framing, no referrer; on the console, a strict Content-Security-Policy
/// (every script and style from this server's own files, nothing inline), no caching, and HSTS behind TLS.
struct SecurityHeaders: RouterMiddleware {
    typealias Context = ConsoleContext
    let console: Bool
    let tls: Bool

    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

    func handle(_ request: Request, context: ConsoleContext, next: (Request, ConsoleContext) async throws -> Response) async throws -> Response {
        // Every answer gets the headers, errors included: nothing is rethrown past here.
        var response: Response
        let console = request.uri.path.hasPrefix("/console")
        do {
            response = try await next(request, context)
        } catch let error as ConsoleError {
            response = ConsoleRoutes.errorResponse(error, request: request)
        } catch let error as any CountersignError where console {
            // The store's and the signer's own sentences stay in the server's log; the page hears the code.
            let message = error.code.isRetryable ? "the service cannot do this right now; try again in a moment" : error.reason
            if error.code.isRetryable { context.logger.warning("console request failed", metadata: ["error": "\(error)"]) }
            response = ConsoleRoutes.errorResponse(ConsoleError(error.code, message), request: request)
        } catch let error as any HTTPResponseError {
            if console {
                response = ConsoleRoutes.errorResponse(ConsoleError(.invalidRequest, "\(error.status.reasonPhrase)"), request: request, status: error.status)
            } else {
                response = HTTPServer.text(error.status, error.status == .notFound ? "not found\n" : "\(error.status.reasonPhrase)\n")
            }
        } catch {
            context.logger.error("HTTP request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            response = HTTPServer.text(.internalServerError, "internal error\n")
        }
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        if self.console, request.uri.path.hasPrefix("/console") {
            response.headers[.contentSecurityPolicy] = Self.contentSecurityPolicy
            response.headers[.cacheControl] = request.uri.path.hasPrefix("/console/static/") ? "max-age=300" : "no-store"
            response.headers[HTTPField.Name("Cross-Origin-Opener-Policy")!] = "same-origin"
        }
        if self.tls { response.headers[.strictTransportSecurity] = "max-age=31536000" }
        return response
    }
}
