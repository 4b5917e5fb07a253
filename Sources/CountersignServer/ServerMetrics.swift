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
        var counter: String
        var value: String
        var outcome: String
    }

    private let instruments = Mutex<[InstrumentKey: Instruments]>([:])

    /// Counts one event in `counter` (labelled `dimension` and `outcome`) and records its duration in `timer`
    /// (labelled `dimension`).
    private func record(counter: String, timer: String, dimension: String, _ value: String, outcome: String, duration: Duration) {
        let key = InstrumentKey(counter: counter, value: value, outcome: outcome)
        let instruments = self.instruments.withLock { cache in
            if let made = cache[key] { return made }
            let made = Instruments(
                counter: Counter(label: counter, dimensions: [(dimension, value), ("outcome", outcome)], factory: self.factory),
                timer: Timer(label: timer, dimensions: [(dimension, value)], factory: self.factory)
            )
            cache[key] = made
            return made
        }
        instruments.counter.increment()
        instruments.timer.recordNanoseconds(duration.nanoseconds)
    }

    /// One request answered: its type and outcome (`ok` or the error code).
    func requestAnswered(type: String, outcome: String, duration: Duration) {
        self.record(counter: "countersign_requests_total", timer: "countersign_request_duration_seconds", dimension: "type", type, outcome: outcome, duration: duration)
    }

    /// One authorization decided: its tier and outcome.
    func authorizationDecided(tier: String, outcome: String, duration: Duration) {
        self.record(
            counter: "countersign_authorizations_total", timer: "countersign_authorization_duration_seconds", dimension: "tier", tier, outcome: outcome,
            duration: duration
        )
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
