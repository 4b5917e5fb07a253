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

    /// Alternates runs alone and under a flood, `rounds` of each (this machine's p99 moves by 2x from one run to the
    /// next on its own), and compares the medians.
    func run(rounds: Int) async throws {
        var alone: [Double] = []
        var flooded: [Double] = []
        for round in 1...max(1, rounds) {
            let idle = await self.generator.run(duration: self.duration, requests: nil, rate: self.rate)
            print(String(format: "round %d: open loop at %.0f req/s, alone", round, self.rate))
            BenchCommand.report(idle, openLoop: true)
            alone.append(Double(idle.latencies.valueAtPercentile(99)))
            let result = try await self.flooded()
            print(
                "round \(round): the same, while \(self.auditors) auditor connection(s) each pipeline \(self.requestsPerAuditor) AUDIT_ENTRIES (1,000 entries) "
                    + "without reading, and close half-way"
            )
            BenchCommand.report(result, openLoop: true)
            flooded.append(Double(result.latencies.valueAtPercentile(99)))
        }
        let before = alone.sorted()[alone.count / 2]
        let during = flooded.sorted()[flooded.count / 2]
        if before > 0 {
            print(
                String(
                    format: "median p99 under the flood: %.2f ms = %.2fx the median p99 alone, %.2f ms (target: at most 2x)", during / 1000, during / before,
                    before / 1000))
        }
    }

    private func flooded() async throws -> LoadResult {
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
        let result = await self.generator.run(duration: self.duration, requests: nil, rate: self.rate)
        await closer.value
        return result
    }

}
