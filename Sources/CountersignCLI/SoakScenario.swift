import CountersignClient
import CountersignCore
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Wire

/// `countersign bench --soak 10m`: sustained abuse beside steady traffic, and the server's memory over time.
///
/// Agents authorize open loop at --rate the whole time. Beside them, in rounds until the end: connections that
/// send garbage, frames with mutated bodies, 2^31-byte length prefixes, handshakes for unknown principals, silent
/// connections, and an auditor that pipelines 500 AUDIT_ENTRIES and leaves. The server's resident memory is read
/// from its /metrics every 10 s; the figure is the last reading over the reading after the first minute.
struct Soak: Sendable {
    let generator: LoadGenerator
    let rate: Double
    let duration: Duration
    let host: String
    let port: Int
    let memory: @Sendable () async -> Int?
    let admin: @Sendable () async throws -> CountersignClient
    /// Which abuse to run: `connections` (garbage, mutated and unknown HELLOs, huge length prefixes, silence) and `auditor`.
    var kinds: Set<String> = ["connections", "auditor"]

    func run() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + self.duration
        let rounds = Atomic<Int>(0)
        print(String(format: "scenario: soak for %@, agents open loop at %.0f req/s, abuse in rounds beside them", "\(self.duration)", self.rate))
        async let load = self.generator.run(duration: self.duration, requests: nil, rate: self.rate)
        async let abuse: Void = {
            var random = SystemRandomNumberGenerator()
            while clock.now < deadline {
                await self.abuseRound(&random)
                rounds.add(1, ordering: .relaxed)
            }
        }()
        var readings: [(Duration, Int)] = []
        while clock.now < deadline {
            try? await clock.sleep(for: .seconds(10))
            if let resident = await self.memory() {
                readings.append((start.duration(to: clock.now), resident))
                print(String(format: "  %4.0f s  resident %.1f MB", start.duration(to: clock.now).inSeconds, Double(resident) / 1_048_576))
            }
        }
        let result = await load
        await abuse
        print("abuse rounds: \(rounds.load(ordering: .relaxed))")
        BenchCommand.report(result, openLoop: true)
        guard let first = readings.first(where: { $0.0 >= .seconds(60) }), let last = readings.last, first.0 < last.0 else {
            print("memory: too short a soak to compare the first minute with the end")
            return
        }
        print(
            String(
                format: "memory: %.1f MB after the first minute, %.1f MB at the end, peak %.1f MB: %.2fx (target: at most 1.2x)", Double(first.1) / 1_048_576,
                Double(last.1) / 1_048_576, Double(readings.map(\.1).max()!) / 1_048_576, Double(last.1) / Double(first.1)
            )
        )
    }

    /// One round of every kind of abuse, a few connections each.
    private func abuseRound(_ random: inout SystemRandomNumberGenerator) async {
        var payloads: [[UInt8]] = []
        // Garbage.
        for _ in 0..<8 {
            payloads.append((0..<Int.random(in: 1...4096, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) })
        }
        // A HELLO with its body mutated, a HELLO for nobody, a length prefix of 2^31.
        let hello = Array(WireJSON.encode(Hello(principal: "agent-\(UInt32.random(in: 0...UInt32.max, using: &random))")).readableBytesView)
        var mutated = hello
        for _ in 0..<4 { mutated[Int.random(in: 0..<mutated.count, using: &random)] = UInt8.random(in: 0...255, using: &random) }
        for body in [hello, mutated] {
            var buffer = ByteBuffer()
            Frame(type: .hello, requestID: 1, body: ByteBuffer(bytes: body)).write(to: &buffer)
            payloads.append(Array(buffer.readableBytesView))
        }
        payloads.append([0x80, 0, 0, 0, 1, 0x01, 0, 0, 0, 1] + Array(repeating: 0x7B, count: 1024))
        // A silent connection.
        payloads.append([])
        let kinds = self.kinds
        await withTaskGroup(of: Void.self) { group in
            for payload in payloads where kinds.contains("connections") {
                group.addTask { await self.send(payload) }
            }
            group.addTask {
                guard kinds.contains("auditor") else { return }
                // An auditor that pipelines reads and leaves without waiting for them.
                guard let reader = try? await self.admin() else { return }
                await withTaskGroup(of: Void.self) { reads in
                    for n in 0..<500 {
                        let frame = Frame(
                            type: .auditEntries, requestID: UInt32(1_000 + n), body: WireJSON.encode(AuditEntriesRequest(from: Int64(n), limit: 1_000)))
                        reads.addTask { _ = try? await reader.send(frame) }
                    }
                    reads.addTask {
                        try? await Task.sleep(for: .milliseconds(50))
                        await reader.close()
                    }
                }
            }
        }
    }

    /// Connects, writes `bytes`, and closes after a moment (a silent connection just closes).
    private func send(_ bytes: [UInt8]) async {
        guard
            let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: self.host, port: self.port).get()
        else { return }
        if !bytes.isEmpty {
            try? await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
        }
        try? await Task.sleep(for: .milliseconds(20))
        try? await channel.close().get()
    }
}
