import CountersignClient
import Foundation
import Histogram
import Synchronization
import Wire

/// `countersign bench --audit-flood N`: what one principal's flood of reads does to everyone else.
///
/// Agents send authorize requests open loop at a fixed rate, first alone (the idle figure), then while auditor
/// connections each pipeline N AUDIT_ENTRIES of 1,000 entries and close half-way through, with most of them
/// unanswered. The figures are the agents' latency percentiles in both runs and the ratio of their p99s.
struct AuditFlood: Sendable {
    let generator: LoadGenerator
    let rate: Double
    let duration: Duration
    let requestsPerAuditor: Int
    let auditors: Int
    let admin: @Sendable () async throws -> CountersignClient

    func run() async throws {
        let idle = await self.generator.run(duration: self.duration, requests: nil, rate: self.rate)
        print(String(format: "scenario: open loop at %.0f req/s, alone", self.rate))
        BenchCommand.report(idle, openLoop: true)

        let size = try await {
            let client = try await self.admin()
            defer { Task { await client.close() } }
            return try await client.auditCheckpoint().size
        }()
        var readers: [CountersignClient] = []
        for _ in 0..<self.auditors { readers.append(try await self.admin()) }
        // Each auditor writes its requests and reads nothing: the server's backpressure holds them while the
        // connection is open; at the close, what it has not answered is work for nobody.
        for reader in readers {
            let frames = (0..<self.requestsPerAuditor).map { n in
                // Pages from all over the log, so no page is served from a warm cache alone.
                Frame(
                    type: .auditEntries, requestID: UInt32(1_000 + n),
                    body: WireJSON.encode(AuditEntriesRequest(from: Int64((n * 7_919) % max(size - 1_000, 1)), limit: 1_000))
                )
            }
            try await reader.pipelineWithoutReading(frames)
        }
        let closer = Task {
            try? await Task.sleep(for: self.duration / 2)
            for reader in readers { await reader.close() }
        }
        let flooded = await self.generator.run(duration: self.duration, requests: nil, rate: self.rate)
        await closer.value
        print(
            "scenario: the same, while \(self.auditors) auditor connection(s) each pipeline \(self.requestsPerAuditor) AUDIT_ENTRIES (1,000 entries of a "
                + "\(size)-entry log) without reading, and close half-way"
        )
        BenchCommand.report(flooded, openLoop: true)
        let before = Double(idle.latencies.valueAtPercentile(99))
        let during = Double(flooded.latencies.valueAtPercentile(99))
        if before > 0 {
            print(String(format: "p99 under the flood: %.2f ms = %.2fx the idle %.2f ms (target: at most 2x)", during / 1000, during / before, before / 1000))
        }
    }

}
