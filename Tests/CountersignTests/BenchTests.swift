import CountersignServer
import Foundation
import TestSupport
import Testing

/// The benchmark runs in CI only as a smoke run: it completes and reports figures with zero errors. No
/// figure is asserted: speed is measured by `make bench`, never by a test.
@Suite("countersign bench (smoke)", .timeLimit(.minutes(1)))
struct BenchTests {
    @Test("a short run with baselines reports throughput, percentiles, ratios and the server's memory, with no errors")
    func smoke() async throws {
        try await withServer { server in
            var environment = try SoftHSMFixture.shared().environment()
            environment["COUNTERSIGN_SERVER"] = "127.0.0.1:\(server.port)"
            environment["COUNTERSIGN_CREDENTIAL"] = server.dataDirectory.appendingPathComponent("admin.credential").path
            let bench = ProcessResult.builtProduct("countersign")
            let run = try await ProcessResult.run(
                executable: bench,
                arguments: [
                    "bench", "--http", "127.0.0.1:\(server.httpPort)", "--baseline", "--baseline-seconds", "1", "--threads", "2", "--connections", "2",
                    "--depth", "4", "--duration", "1s", "--warmup", "200ms", "--mix", "standard=1,high=1", "--agents", "2", "--keys", "time-ordered",
                ],
                environment: environment
            )
            #expect(run.status == 0, "\(run.standardError)")
            let output = run.standardOutput
            for expected in [
                "baseline swift-crypto P-256: ", "baseline PKCS#11 C_Sign (\(SoftHSMFixture.cliTokenLabel)): ",
                "scenario: closed loop, 2 connections x depth 4, 2 agents", "time-ordered idempotency keys",
                "req/s", "latency ms: p50 ", " p99.9 ", "errors: none", "server resident memory: ", " µs per request (",
            ] {
                #expect(output.contains(expected), "missing '\(expected)' in:\n\(output)")
            }
            let idle = try await ProcessResult.run(
                executable: bench, arguments: ["bench", "--http", "127.0.0.1:\(server.httpPort)", "--idle-connections", "20"], environment: environment
            )
            #expect(idle.status == 0, "\(idle.standardError)")
            #expect(idle.standardOutput.contains("scenario: 20 idle authenticated connections"))
            #expect(idle.standardOutput.contains("KB per connection"))
        }
    }
}
