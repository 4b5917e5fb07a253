import Foundation
import Policy
import Prometheus
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The server's metrics, in a Prometheus registry of its own (so several servers in one test process never
/// share counters), served at `GET /metrics`. Named after Prometheus conventions: a `# HELP` line on every
/// family, `_total` counters, `_seconds` durations, the standard `process_*` family, and every series of a
/// known tier, request type or outcome present from the start at zero (a rate over a series that appears
/// with its first event is wrong for a whole scrape interval). docs/operations.md has the table.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    /// Outcomes of an authorization besides the two successes: the refusals a policy, a store or a token gives.
    static let authorizationRefusals = [
        "AMOUNT_ABOVE_LIMIT", "CURRENCY_NOT_ACCEPTED", "PER_AUTHORIZATION_LIMIT", "TIER_NOT_ALLOWED", "MERCHANT_NOT_ALLOWED", "CATEGORY_NOT_ALLOWED",
        "BUDGET_EXCEEDED", "RATE_LIMITED", "ESCALATION_ABOVE_LIMIT", "ANOMALY_REFUSED", "INTENT_REQUIRED", "INTENT_MISMATCH", "IDEMPOTENCY_CONFLICT",
        "HSM_UNAVAILABLE",
        "SIGNING_UNAVAILABLE", "AUDIT_UNAVAILABLE", "STORE_UNAVAILABLE",
    ]
    /// The checks that can raise a request's tier.
    static let escalationChecks = ["splitting", "amount_anomaly", "new_merchant", "burst", "behaviour"]
    static let anomalyScoreBuckets: [Double] = [1, 2, 3, 4, 6, 8, 12, 18, 25]
    /// From seconds to the longest approval deadline an operator would set.
    static let turnaroundBuckets: [Duration] = [
        .seconds(10), .seconds(30), .seconds(60), .seconds(120), .seconds(300), .seconds(600), .seconds(900), .seconds(1800), .seconds(3600),
        .seconds(7200), .seconds(14_400), .seconds(86_400),
    ]
    static let handshakeOutcomes = ["ok", "authentication_failed", "principal_revoked", "handshake_timeout", "invalid_request"]
    static let durationBuckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
    ]

    private struct Key: Hashable {
        var name: String
        var labels: [String]
    }

    /// Instruments made once per label set: looking them up in the registry per request cost more than recording.
    private struct Made {
        var counters: [Key: Counter] = [:]
        var gauges: [Key: Gauge] = [:]
        var histograms: [Key: DurationHistogram] = [:]
        var valueHistograms: [Key: ValueHistogram] = [:]
    }

    private let made = Mutex(Made())

    /// The two per-request events (a request answered, an authorization decided) by their two label values.
    private enum Event: Hashable {
        case answered(type: String, outcome: String)
        case decided(tier: String, outcome: String)
    }

    /// The counter and histogram of each per-request event, found without building a label dictionary: the
    /// general lookup (labels sorted into a key) made about thirty allocations per authorization.
    private let perRequest = Mutex<[Event: (Counter, DurationHistogram)]>([:])

    private func instruments(_ event: Event) -> (Counter, DurationHistogram) {
        if let instruments = self.perRequest.withLock({ $0[event] }) { return instruments }
        let instruments =
            switch event {
            case .answered(let type, let outcome):
                (
                    self.counter("countersign_requests_total", ["type": type, "outcome": outcome]),
                    self.histogram("countersign_request_duration_seconds", ["type": type])
                )
            case .decided(let tier, let outcome):
                (
                    self.counter("countersign_authorizations_total", ["tier": tier, "outcome": outcome]),
                    self.histogram("countersign_authorization_duration_seconds", ["tier": tier])
                )
            }
        self.perRequest.withLock { $0[event] = instruments }
        return instruments
    }
    /// Totals kept elsewhere (the breaker, the store, the kernel), as last exported: a scrape adds the difference.
    private let exported = Mutex<[Key: Double]>([:])

    private static let help: [String: String] = [
        "countersign_requests_total": "Requests answered, by message type and outcome (ok, the error code, or cancelled when the client had gone).",
        "countersign_request_duration_seconds": "Time from a request's arrival to its answer, by message type.",
        "countersign_authorizations_total":
            "AUTHORIZE decisions by the tier judged at and outcome (authorized, pending_approval, replayed for a retry answered from the record, or the refusal code).",
        "countersign_authorization_duration_seconds": "Time to decide an AUTHORIZE request (policy, store, signature), by tier.",
        "countersign_handshakes_total": "Handshakes by outcome; failures are counted here and explained in the server's log.",
        "countersign_connections_open": "Framed-protocol connections open now.",
        "countersign_approvals_pending": "Authorizations waiting for approvers now.",
        "countersign_approval_verdicts_total": "Approvers' verdicts, by verdict.",
        "countersign_approval_turnaround_seconds":
            "Time from a request sent to approvers to its outcome (approved: the verdict completing the quorum; denied: the first deny), by outcome.",
        "countersign_escalations_total":
            "Decisions in which a check escalated (raised the tier, sent to approvers, or found no tier above), by check; one raised by two checks counts at each.",
        "countersign_anomaly_score": "The anomaly model's score of each request it judged (agents past their cold start), by the tier judged at.",
        "countersign_voids_total": "Voids by agents: of a signed authorization, or of a request waiting for approvers (withdrawn).",
        "countersign_budget_spent_ratio": "Spending (held and pending) over the limit in the budget's current window, by scope, window and currency.",
        "countersign_audit_entries": "Entries in the audit log (its contiguous prefix).",
        "countersign_audit_write_failures_total": "Store transactions that failed (each fails its decisions closed: AUDIT_UNAVAILABLE or STORE_UNAVAILABLE).",
        "countersign_audit_checkpoints_total": "Checkpoints signed by the audit key.",
        "countersign_audit_checkpoint_failures_total": "Checkpoints that could not be signed or stored.",
        "countersign_audit_witness_cosigned_total": "Checkpoints the configured witness cosigned.",
        "countersign_audit_witness_failures_total": "Checkpoints the witness refused or could not be reached for (a refusal is also logged as critical).",
        "countersign_audit_last_checkpoint_timestamp_seconds": "When the last checkpoint was signed (seconds since 1970); alert on time() minus this.",
        "countersign_hsm_sessions_open": "PKCS#11 sessions open in the pool.",
        "countersign_hsm_sessions_in_use": "PKCS#11 sessions lent out now.",
        "countersign_hsm_session_waiters": "Tasks waiting for a PKCS#11 session.",
        "countersign_hsm_breaker_open": "1 while the HSM circuit breaker refuses calls (HSM tiers answer HSM_UNAVAILABLE), else 0.",
        "countersign_hsm_failures_total": "HSM operations that failed or timed out.",
        "countersign_hsm_signing_cpu_seconds_total":
            "CPU time of the HSM signing calls on the session pool's threads: the PKCS#11 module's own work, part of process_cpu_seconds_total (with SoftHSM the signature itself; with a network HSM little).",
        "countersign_hsm_breaker_trips_total": "Times the HSM circuit breaker opened.",
        "countersign_hsm_recovering":
            "1 while the PKCS#11 module is being re-initialized after the token was lost (2 once recovery stopped: a wrong or locked PIN), else 0.",
        "countersign_hsm_recoveries_total": "Times the token was lost and the module re-initialized, sessions lent again.",
        "countersign_store_commits_total": "Transactions of the store's group committer (each one durable commit: one fsync on SQLite).",
        "countersign_store_committed_writes_total": "Writes those transactions carried (decisions, refusals, audit entries): over commits, the group size.",
        "process_cpu_seconds_total": "User and system CPU time spent by the process, in seconds.",
        "process_resident_memory_bytes": "Resident memory size in bytes.",
        "process_virtual_memory_bytes": "Virtual memory size in bytes.",
        "process_open_fds": "Open file descriptors.",
        "process_max_fds": "The limit of open file descriptors.",
        "process_start_time_seconds": "Start time of the process since 1970, in seconds.",
    ]

    /// When the process started (from `/proc/self/stat` and the boot time), not when this object was made.
    private let startTime: Double = ServerMetrics.processStartTime() ?? Date().timeIntervalSince1970

    private static func processStartTime() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")"),
            let system = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let bootLine = system.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }), let boot = Double(bootLine.dropFirst(6))
        else { return nil }
        // Field 22 (starttime, in clock ticks since boot) is the 20th after the command name.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let ticks = Double(fields[19]) else { return nil }
        return boot + ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// - Parameters:
    ///   - tiers: the configured tiers, whose series start at zero.
    ///   - requestTypes: the request message types' names, likewise.
    public init(tiers: [String] = [], requestTypes: [String] = []) {
        for type in requestTypes {
            _ = self.counter("countersign_requests_total", ["type": type, "outcome": "ok"])
            _ = self.histogram("countersign_request_duration_seconds", ["type": type])
        }
        for tier in tiers {
            for outcome in ["authorized", "pending_approval", "replayed"] + Self.authorizationRefusals {
                _ = self.counter("countersign_authorizations_total", ["tier": tier, "outcome": outcome])
            }
            _ = self.histogram("countersign_authorization_duration_seconds", ["tier": tier])
        }
        for outcome in Self.handshakeOutcomes { _ = self.counter("countersign_handshakes_total", ["outcome": outcome]) }
        for verdict in ["approve", "deny"] { _ = self.counter("countersign_approval_verdicts_total", ["verdict": verdict]) }
        for outcome in ["approved", "denied"] { _ = self.histogram("countersign_approval_turnaround_seconds", ["outcome": outcome]) }
        for check in Self.escalationChecks { _ = self.counter("countersign_escalations_total", ["check": check]) }
        for of in ["authorization", "pending_approval"] { _ = self.counter("countersign_voids_total", ["of": of]) }
        for name in [
            "countersign_audit_checkpoints_total", "countersign_audit_checkpoint_failures_total", "countersign_audit_witness_cosigned_total",
            "countersign_audit_witness_failures_total", "countersign_audit_write_failures_total",
            "countersign_hsm_failures_total", "countersign_hsm_breaker_trips_total", "countersign_hsm_recoveries_total",
            "countersign_hsm_signing_cpu_seconds_total",
        ] {
            _ = self.counter(name, [:])
        }
        for name in [
            "countersign_connections_open", "countersign_approvals_pending", "countersign_hsm_recovering", "countersign_audit_entries",
            "countersign_audit_last_checkpoint_timestamp_seconds",
        ] {
            _ = self.gauge(name, [:])
        }
    }

    // MARK: Instruments

    private static func key(_ name: String, _ labels: [String: String]) -> (Key, [(String, String)]) {
        let pairs = labels.sorted { $0.key < $1.key }
        return (Key(name: name, labels: pairs.flatMap { [$0.key, $0.value] }), pairs.map { ($0.key, $0.value) })
    }

    /// The instrument of `name` and `labels` in `cache`, made by `make` the first time.
    private func instrument<Instrument: Sendable>(
        _ cache: WritableKeyPath<Made, [Key: Instrument]>, _ name: String, _ labels: [String: String],
        _ make: (PrometheusCollectorRegistry, [(String, String)], MetricNameDescriptor) -> Instrument
    ) -> Instrument {
        let (key, pairs) = Self.key(name, labels)
        return self.made.withLock { made in
            if let instrument = made[keyPath: cache][key] { return instrument }
            // The whole name is ours (countersign_…_total); the descriptor's parts are not used.
            let instrument = make(self.registry, pairs, MetricNameDescriptor(metricName: name, unitName: "", helpText: Self.help[name] ?? ""))
            made[keyPath: cache][key] = instrument
            return instrument
        }
    }

    private func counter(_ name: String, _ labels: [String: String]) -> Counter {
        self.instrument(\.counters, name, labels) { $0.makeCounter(descriptor: $2, labels: $1) }
    }

    private func gauge(_ name: String, _ labels: [String: String]) -> Gauge {
        self.instrument(\.gauges, name, labels) { $0.makeGauge(descriptor: $2, labels: $1) }
    }

    private func histogram(_ name: String, _ labels: [String: String]) -> DurationHistogram {
        let buckets = name == "countersign_approval_turnaround_seconds" ? Self.turnaroundBuckets : Self.durationBuckets
        return self.instrument(\.histograms, name, labels) { $0.makeDurationHistogram(descriptor: $2, labels: $1, buckets: buckets) }
    }

    private func valueHistogram(_ name: String, _ labels: [String: String], buckets: [Double]) -> ValueHistogram {
        self.instrument(\.valueHistograms, name, labels) { $0.makeValueHistogram(descriptor: $2, labels: $1, buckets: buckets) }
    }

    /// Brings a counter up to a total that is counted elsewhere.
    private func counter(_ name: String, _ labels: [String: String], total: Double) {
        let (key, _) = Self.key(name, labels)
        let delta = self.exported.withLock { exported -> Double in
            defer { exported[key] = max(total, exported[key] ?? 0) }
            return total - (exported[key] ?? 0)
        }
        if delta > 0 { self.counter(name, labels).increment(by: delta) }
    }

    // MARK: Events

    /// One request answered: its type and outcome (`ok` or the error code).
    func requestAnswered(type: String, outcome: String, duration: Duration) {
        let (counter, histogram) = self.instruments(.answered(type: type, outcome: outcome))
        counter.increment()
        histogram.record(duration)
    }

    /// One authorization decided: the tier it was judged at (`none` when no tier fits) and its outcome.
    func authorizationDecided(tier: String, outcome: String, duration: Duration) {
        let (counter, histogram) = self.instruments(.decided(tier: tier, outcome: outcome))
        counter.increment()
        histogram.record(duration)
    }

    /// What a decision's checks found: the checks that raised its tier, and the anomaly model's score.
    func decisionChecked(_ decision: Decision) {
        for check in decision.checks where check.result == .escalate {
            self.counter("countersign_escalations_total", ["check": check.name]).increment()
        }
        if let score = decision.anomalyScore {
            self.valueHistogram("countersign_anomaly_score", ["tier": decision.judgedTier ?? "none"], buckets: Self.anomalyScoreBuckets).record(score)
        }
    }

    /// A request sent to approvers came out `approved` or `denied`, `seconds` after it was made.
    func approvalConcluded(_ outcome: String, seconds: Int64) {
        self.histogram("countersign_approval_turnaround_seconds", ["outcome": outcome]).record(.seconds(max(0, seconds)))
    }

    /// An agent voided a signed authorization, or withdrew one waiting for approvers (`pending`).
    func voided(pending: Bool) {
        self.counter("countersign_voids_total", ["of": pending ? "pending_approval" : "authorization"]).increment()
    }

    func handshake(_ outcome: String) {
        self.counter("countersign_handshakes_total", ["outcome": outcome]).increment()
    }

    func verdict(_ verdict: String) {
        self.counter("countersign_approval_verdicts_total", ["verdict": verdict]).increment()
    }

    func checkpointSigned(at time: Int64) {
        self.counter("countersign_audit_checkpoints_total", [:]).increment()
        self.gauge("countersign_audit_last_checkpoint_timestamp_seconds", [:]).set(Int64(time))
    }

    /// The latest checkpoint in the store at start, so the age alert does not fire on every start.
    func lastCheckpoint(at time: Int64) {
        self.gauge("countersign_audit_last_checkpoint_timestamp_seconds", [:]).set(Int64(time))
    }

    func checkpointFailed() {
        self.counter("countersign_audit_checkpoint_failures_total", [:]).increment()
    }

    func witnessCosigned() {
        self.counter("countersign_audit_witness_cosigned_total", [:]).increment()
    }

    func witnessFailed() {
        self.counter("countersign_audit_witness_failures_total", [:]).increment()
    }

    func connectionsChanged(open: Int) {
        self.gauge("countersign_connections_open", [:]).set(Int64(open))
    }

    // MARK: Read at each scrape

    /// What a scrape reads from the parts that keep their own state.
    struct Snapshot: Sendable {
        var hsmSessionsOpen = 0
        var hsmSessionsInUse = 0
        var hsmSessionWaiters = 0
        var hsmBreakerOpen = false
        var hsmFailures = 0
        /// CPU time of the signing calls, in seconds.
        var hsmSigningCPUSeconds = 0.0
        var hsmBreakerTrips = 0
        /// 0 serving, 1 recovering, 2 recovery stopped.
        var hsmRecovering = 0
        var hsmRecoveries = 0
        var auditEntries = 0
        var storeWriteFailures = 0
        /// Group commits, and the writes they carried.
        var storeCommits = 0
        var storeCommittedRecords = 0
        var approvalsPending = 0
        /// scope, window, currency, spent/limit.
        var budgets: [(scope: String, window: String, currency: String, ratio: Double)] = []
    }

    func update(_ snapshot: Snapshot) {
        self.gauge("countersign_hsm_sessions_open", [:]).set(Int64(snapshot.hsmSessionsOpen))
        self.gauge("countersign_hsm_sessions_in_use", [:]).set(Int64(snapshot.hsmSessionsInUse))
        self.gauge("countersign_hsm_session_waiters", [:]).set(Int64(snapshot.hsmSessionWaiters))
        self.gauge("countersign_hsm_breaker_open", [:]).set(Int64(snapshot.hsmBreakerOpen ? 1 : 0))
        self.counter("countersign_hsm_failures_total", [:], total: Double(snapshot.hsmFailures))
        self.counter("countersign_hsm_signing_cpu_seconds_total", [:], total: snapshot.hsmSigningCPUSeconds)
        self.counter("countersign_hsm_breaker_trips_total", [:], total: Double(snapshot.hsmBreakerTrips))
        self.gauge("countersign_hsm_recovering", [:]).set(Int64(snapshot.hsmRecovering))
        self.counter("countersign_hsm_recoveries_total", [:], total: Double(snapshot.hsmRecoveries))
        self.gauge("countersign_audit_entries", [:]).set(Int64(snapshot.auditEntries))
        self.counter("countersign_audit_write_failures_total", [:], total: Double(snapshot.storeWriteFailures))
        self.counter("countersign_store_commits_total", [:], total: Double(snapshot.storeCommits))
        self.counter("countersign_store_committed_writes_total", [:], total: Double(snapshot.storeCommittedRecords))
        self.gauge("countersign_approvals_pending", [:]).set(Int64(snapshot.approvalsPending))
        for budget in snapshot.budgets {
            self.gauge("countersign_budget_spent_ratio", ["scope": budget.scope, "window": budget.window, "currency": budget.currency]).set(budget.ratio)
        }
        self.updateProcess()
    }

    /// The standard `process_*` family, from `/proc/self` (Linux).
    private func updateProcess() {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Int64(sysconf(Int32(_SC_PAGESIZE)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            // Fields after the command name: state is field 3; utime and stime are fields 14 and 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]), ticks > 0 {
                self.counter("process_cpu_seconds_total", [:], total: (user + system) / ticks)
            }
        }
        if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
            let pages = statm.split(separator: " ").compactMap { Int64($0) }
            if pages.count > 1 {
                self.gauge("process_virtual_memory_bytes", [:]).set(pages[0] * pageSize)
                self.gauge("process_resident_memory_bytes", [:]).set(pages[1] * pageSize)
            }
        }
        if let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            self.gauge("process_open_fds", [:]).set(Int64(descriptors.count))
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            self.gauge("process_max_fds", [:]).set(Int64(clamping: limit.rlim_cur))
        }
        self.gauge("process_start_time_seconds", [:]).set(self.startTime)
    }

    public func exposition() -> String {
        self.registry.emitToString()
    }
}
