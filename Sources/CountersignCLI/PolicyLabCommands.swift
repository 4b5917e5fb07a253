import ArgumentParser
import CountersignConfiguration
import Foundation
import Ledger
import Policy
import PolicyLab

/// `countersign policy traces`: a labelled, seeded trace of an agent fleet, one JSON object per line.
struct PolicyTraces: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "traces",
        abstract: "Write a deterministic trace of agent payments, legitimate and labelled attacks, one JSON object per line (docs/anomaly.md)."
    )

    @Option(help: "The seed: the same seed and sizes give the same trace, byte for byte.")
    var seed: UInt64 = 1

    @Option(help: "Agents in the fleet.")
    var agents = 120

    @Option(help: "Days of activity.")
    var days = 56

    @Option(name: .customLong("attacks-per-kind"), help: "Attacked agents per attack kind (one attack each).")
    var attacksPerKind = 8

    func run() async throws {
        let generator = TraceGenerator(seed: self.seed, agents: self.agents, days: self.days, attacksPerKind: self.attacksPerKind)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var output = ""
        for event in generator.generate() {
            output += String(decoding: try encoder.encode(event), as: UTF8.self) + "\n"
            if output.utf8.count > 1 << 20 {
                print(output, terminator: "")
                output = ""
            }
        }
        print(output, terminator: "")
    }
}

/// `countersign policy evaluate <config> --traces <file>`: a policy's detection figures on labelled traces.
struct PolicyEvaluate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Run labelled traces through a configuration's policy (the real engine) and print detection and false escalation figures.",
        discussion: """
            Each request is decided in time order with the facts the server would give: request counts, the agent's history and \
            its learned behaviour, learned only from authorizations that stood. A request is flagged when an anomaly check \
            (splitting, amount_anomaly, new_merchant, burst, behaviour) escalates, refuses or sends it to approvers. Without \
            --traces, the trace of `countersign policy traces --seed N` is generated in memory.
            """
    )

    @Argument(help: "The configuration file whose policy is evaluated.")
    var file: String

    @Option(help: "A trace file (JSON lines, as `countersign policy traces` writes).")
    var traces: String?

    @Option(help: "The seed of the generated trace, without --traces.")
    var seed: UInt64 = 1

    @Option(help: "Agents of the generated trace, without --traces.")
    var agents = 120

    @Flag(help: "Print every flagged request with its reasons.")
    var verbose = false

    func run() async throws {
        let configuration = try PolicyCommand.load(self.file)
        let events: [TraceEvent]
        if let path = self.traces {
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read the trace file '\(path)'") }
            let decoder = JSONDecoder()
            events = try data.split(separator: UInt8(ascii: "\n")).enumerated().map { number, line in
                do {
                    return try decoder.decode(TraceEvent.self, from: Data(line))
                } catch {
                    throw ValidationError("\(path):\(number + 1): not a trace event")
                }
            }
        } else {
            events = TraceGenerator(seed: self.seed, agents: self.agents).generate()
        }
        let report = TraceEvaluation(policy: configuration.policy).run(events, keepVerdicts: self.verbose)
        print("policy \(configuration.policy.version), \(events.count) requests\(configuration.policy.behaviour == nil ? ", no anomaly model" : "")")
        print(report.table())
        if self.verbose {
            for verdict in report.verdicts where verdict.flagged || verdict.event.isAttack {
                print(
                    "\(verdict.event.label)\t\(verdict.event.agent)\t\(verdict.event.amount) \(verdict.event.currency)\t\(verdict.outcome)\t\(verdict.score ?? "")"
                )
            }
        }
    }
}

/// `countersign policy replay --policy <candidate>`: what a candidate policy would have changed over recorded traffic.
struct PolicyReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay the requests the store recorded through a candidate policy and report what would have changed.",
        discussion: """
            Every authorization and refusal decided in the window is judged again by the candidate's policy, in the order it \
            was decided, with the facts a server would have had: request counts, history, budgets and the anomaly model. The \
            history before --from (as far back as the candidate's windows look) is taken as recorded; from --from on, the \
            candidate's own decisions make the facts of later requests. Reported: requests newly refused, newly allowed, \
            newly escalated (a higher tier, or approvers), de-escalated, and refused for another reason; refusals per code \
            before and after; the budgets that would have refused; and the agents affected. What agents would have done \
            after a different answer is not guessed. Read-only: a running server goes on serving.
            """
    )

    @Option(help: "The configuration file whose policy is the candidate.")
    var policy: String

    @OptionGroup var source: StoreHistorySource

    @Flag(help: "Print every request whose outcome changed, with the candidate's reason.")
    var verbose = false

    @Flag(help: "Print the report as one JSON object, with every request whose outcome changed.")
    var json = false

    func run() async throws {
        let candidate = try PolicyCommand.load(self.policy).policy
        let window = try self.source.window(now: Int64(Date().timeIntervalSince1970))
        let range = StoreHistory.Range(from: max(0, window.from - candidate.lookBackSeconds), to: window.to)
        let history = try await self.source.read(range)
        let (requests, skipped) = history.recordedRequests(from: window.from)
        let report = PolicyReplay(policy: candidate).run(
            requests, from: window.from, to: window.to, skipped: skipped, merchantsPaid: history.merchantsPaidBefore)
        if self.json { return try JSONOutput.print(report) }
        print("window \(Terminal.time(window.from)) to \(Terminal.time(window.to))")
        print(report.text(verbose: self.verbose))
    }
}
