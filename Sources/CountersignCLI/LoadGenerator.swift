import CountersignClient
import CountersignCore
import Foundation
import Histogram
import Signing
import Synchronization
import Wire

/// One tier the load asks for, with the amount that lands in it and its share of the requests.
struct TierTarget: Sendable, Hashable {
    var tier: String
    var backend: String
    var amount: Int64
    var weight: Int
}

/// What a run measured: requests answered, latencies (microseconds), refusals by code.
struct LoadResult: Sendable {
    var answered = 0
    var elapsed: Duration = .zero
    var latencies = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    /// From sending to the answer, leaving out how late the generator itself sent (open loop only).
    var serviceTimes = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var errors: [String: Int] = [:]

    mutating func merge(_ other: LoadResult) {
        self.answered += other.answered
        self.latencies.add(other.latencies)
        self.serviceTimes.add(other.serviceTimes)
        self.errors.merge(other.errors, uniquingKeysWith: +)
    }

    /// The measured window, in seconds.
    var seconds: Double { self.elapsed.inSeconds }

    var throughput: Double { self.seconds > 0 ? Double(self.answered) / self.seconds : 0 }
}

/// Drives authorize requests over many connections, each with many requests in flight: closed loop (each
/// worker sends its next request when the last is answered) or open loop at a fixed rate, where latency is
/// measured from when a request was due, so a slow server cannot hide its queueing (coordinated omission).
struct LoadGenerator: Sendable {
    let clients: [CountersignClient]
    let depth: Int
    let targets: [TierTarget]
    let currency: String
    /// Idempotency keys that grow with time (UUID version 7) instead of random ones (version 4).
    var timeOrderedKeys = false

    /// The tier of the n-th request: a deterministic weighted round robin.
    private func target(_ n: Int) -> TierTarget {
        let total = self.targets.reduce(0) { $0 + $1.weight }
        var slot = n % max(total, 1)
        for target in self.targets {
            if slot < target.weight { return target }
            slot -= target.weight
        }
        return self.targets[0]
    }

    private func request(_ n: Int) -> AuthorizeRequest {
        let target = self.target(n)
        return AuthorizeRequest(
            idempotencyKey: self.timeOrderedKeys ? IdempotencyKeys.timeOrdered() : UUID().uuidString, amount: target.amount, currency: self.currency,
            merchantID: "m-bench", merchantCategoryCode: "5734",
            intent: Intent(description: "benchmark", lineItems: [LineItem(description: "load", quantity: 1, unitAmount: target.amount)])
        )
    }

    /// Runs until `duration` has passed or `requests` were sent; at `rate` requests per second if given.
    func run(duration: Duration, requests: Int?, rate: Double?) async -> LoadResult {
        let counter = Counter()
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + duration
        let workers = self.clients.count * self.depth
        let interval: Duration? = rate.map { .nanoseconds(Int64(Double(workers) / $0 * 1e9)) }
        var result = await withTaskGroup(of: LoadResult.self) { group in
            for (index, client) in self.clients.enumerated() {
                for lane in 0..<self.depth {
                    let worker = index * self.depth + lane
                    group.addTask {
                        var local = LoadResult()
                        var due = start + (interval.map { $0 * worker / workers } ?? .zero)
                        while true {
                            let n = counter.next()
                            if let requests, n >= requests { break }
                            if interval != nil {
                                if due > clock.now { try? await clock.sleep(until: due) }
                            } else {
                                due = clock.now
                            }
                            let sent = clock.now
                            if sent >= deadline { break }
                            do {
                                _ = try await client.authorize(self.request(n))
                                local.answered += 1
                            } catch let error as WireError {
                                local.errors[error.code.rawValue, default: 0] += 1
                            } catch ClientError.pendingApproval {
                                local.errors["PENDING_APPROVAL", default: 0] += 1
                            } catch {
                                local.errors["\(error)".split(separator: ":").first.map(String.init) ?? "ERROR", default: 0] += 1
                                if case ClientError.connectionClosed = error { break }
                            }
                            let answered = clock.now
                            local.latencies.record(Self.microseconds(due.duration(to: answered)))
                            local.serviceTimes.record(Self.microseconds(sent.duration(to: answered)))
                            if let interval { due += interval }
                        }
                        return local
                    }
                }
            }
            var merged = LoadResult()
            for await local in group { merged.merge(local) }
            return merged
        }
        result.elapsed = start.duration(to: clock.now)
        return result
    }

    private static func microseconds(_ duration: Duration) -> UInt64 {
        UInt64(max(0, duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000))
    }

    /// A shared request counter.
    final class Counter: Sendable {
        private let value = Atomic<Int>(0)
        func next() -> Int { self.value.wrappingAdd(1, ordering: .relaxed).oldValue }
    }
}
