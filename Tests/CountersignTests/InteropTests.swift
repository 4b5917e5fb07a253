import CountersignClient
import Foundation
import NIOCore
import NIOPosix
import TestSupport
import Testing
import Wire

@Suite("Merchants and operators over HTTP", .timeLimit(.minutes(1)))
struct InteropTests {
    @Test("Python joserfc verifies both tiers' authorizations against the JWKS fetched over HTTP")
    func joserfc() async throws {
        try await withServer { server in
            let client = try await server.connect(try await server.addPrincipal("agent-interop"))
            let small = try await client.authorize(TestServer.request(4_200))
            let large = try await client.authorize(TestServer.request(420_000))
            await client.close()
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/verify_jws.py")
            let url = "http://127.0.0.1:\(server.httpPort)/.well-known/jwks.json"
            for (authorization, amount) in [(small, 4_200), (large, 420_000)] {
                let result = try await ProcessResult.run(
                    executable: URL(fileURLWithPath: "/usr/bin/env"),
                    arguments: ["python3", script.path, url, authorization.jws],
                    environment: ProcessInfo.processInfo.environment
                )
                #expect(result.status == 0, "\(result.standardError)")
                let output = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: [String: Any]]
                #expect(output?["header"]?["kid"] as? String == authorization.kid)
                #expect(output?["header"]?["typ"] as? String == "payauth+jwt")
                #expect(output?["claims"]?["amount"] as? Int == amount)
                #expect(output?["claims"]?["jti"] as? String == authorization.authorizationID)
            }
            // A tampered token is refused by the same independent verifier.
            var tampered = Array(large.jws)
            tampered[tampered.count - 5] = tampered[tampered.count - 5] == "A" ? "B" : "A"
            let refused = try await ProcessResult.run(
                executable: URL(fileURLWithPath: "/usr/bin/env"),
                arguments: ["python3", script.path, url, String(tampered)],
                environment: ProcessInfo.processInfo.environment
            )
            #expect(refused.status != 0)
        }
    }

    @Test("/healthz, /readyz, /metrics and the JWKS route answer; nothing else does")
    func httpRoutes() async throws {
        try await withServer { server in
            let client = try await server.connect(try await server.addPrincipal("agent-http"))
            _ = try await client.authorize(TestServer.request(100))
            let keys = try await client.keys()
            await client.close()

            let (health, healthStatus) = try await Self.get(server, "/healthz")
            #expect(healthStatus == 200 && health == "ok\n")
            let (ready, readyStatus) = try await Self.get(server, "/readyz")
            #expect(readyStatus == 200 && ready == "ready\n")
            let (jwks, jwksStatus) = try await Self.get(server, "/.well-known/jwks.json")
            #expect(jwksStatus == 200)
            #expect(try JSONDecoder().decode(KeysResponse.self, from: Data(jwks.utf8)) == keys)
            let (metrics, metricsStatus) = try await Self.get(server, "/metrics")
            #expect(metricsStatus == 200)
            #expect(metrics.contains(#"countersign_requests_total{outcome="ok",type="AUTHORIZE"} 1"#), "\(metrics)")
            #expect(metrics.contains(#"countersign_authorizations_total{outcome="authorized",tier="standard"} 1"#))
            #expect(metrics.contains("countersign_hsm_sessions_open"))
            #expect(metrics.contains("countersign_request_duration_seconds_bucket"))
            let (_, missingStatus) = try await Self.get(server, "/authorize")
            #expect(missingStatus == 404)
        }
    }

    /// A plain HTTP/1.1 GET with `Connection: close`: the status code and the body.
    static func get(_ server: TestServer, _ path: String) async throws -> (String, Int) {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: server.httpPort) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let response = try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
            var received = ByteBuffer()
            for try await var chunk in inbound {
                received.writeBuffer(&chunk)
            }
            return String(buffer: received)
        }
        guard let split = response.range(of: "\r\n\r\n"), let status = Int(response.split(separator: " ").dropFirst().first ?? "") else {
            return ("", 0)
        }
        return (String(response[split.upperBound...]), status)
    }
}
