import CoreMetrics
import Foundation
import Prometheus
import Synchronization

/// The server's metrics, in a Prometheus registry of its own (so several servers in one test process
/// never share counters). Served at `GET /metrics`.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    public init() {
        self.registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: self.registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
        ]
        self.factory = factory
    }

    /// A counter and a timer for one combination of labels, made once: looking them up in the registry on
    /// every request cost more than recording.
    private struct Instruments: Sendable {
        let counter: CoreMetrics.Counter
        let timer: CoreMetrics.Timer
    }

    private struct InstrumentKey: Hashable {
        var family: Int
        var first: String
        var outcome: String
    }

    private let instruments = Mutex<[InstrumentKey: Instruments]>([:])

    private func instruments(_ key: InstrumentKey, make: () -> Instruments) -> Instruments {
        self.instruments.withLock { cache in
            if let made = cache[key] { return made }
            let made = make()
            cache[key] = made
            return made
        }
    }

    /// One request answered: its type and outcome (`ok` or the error code).
    func requestAnswered(type: String, outcome: String, duration: Duration) {
        let instruments = self.instruments(InstrumentKey(family: 0, first: type, outcome: outcome)) {
            Instruments(
                counter: Counter(label: "countersign_requests_total", dimensions: [("type", type), ("outcome", outcome)], factory: self.factory),
                timer: Timer(label: "countersign_request_duration_seconds", dimensions: [("type", type)], factory: self.factory)
            )
        }
        instruments.counter.increment()
        instruments.timer.recordNanoseconds(duration.nanoseconds)
    }

    /// One authorization decided: its tier and outcome.
    func authorizationDecided(tier: String, outcome: String, duration: Duration) {
        let instruments = self.instruments(InstrumentKey(family: 1, first: tier, outcome: outcome)) {
            Instruments(
                counter: Counter(label: "countersign_authorizations_total", dimensions: [("tier", tier), ("outcome", outcome)], factory: self.factory),
                timer: Timer(label: "countersign_authorization_duration_seconds", dimensions: [("tier", tier)], factory: self.factory)
            )
        }
        instruments.counter.increment()
        instruments.timer.recordNanoseconds(duration.nanoseconds)
    }

    func connectionsChanged(open: Int) {
        Gauge(label: "countersign_connections_open", factory: self.factory).record(open)
    }

    func hsmPool(open: Int, inUse: Int, waiting: Int, breakerOpen: Bool) {
        Gauge(label: "countersign_hsm_sessions_open", factory: self.factory).record(open)
        Gauge(label: "countersign_hsm_sessions_in_use", factory: self.factory).record(inUse)
        Gauge(label: "countersign_hsm_session_waiters", factory: self.factory).record(waiting)
        Gauge(label: "countersign_hsm_breaker_open", factory: self.factory).record(breakerOpen ? 1 : 0)
    }

    /// The process's resident memory, read from `/proc/self/statm` (Linux).
    func residentMemory() {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
            let pages = text.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return }
        Gauge(label: "countersign_process_resident_memory_bytes", factory: self.factory).record(pages * Int(sysconf(Int32(_SC_PAGESIZE))))
    }

    public func exposition() -> String {
        self.registry.emitToString()
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
