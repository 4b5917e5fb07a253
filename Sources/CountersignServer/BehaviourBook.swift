import Ledger
import NIOCore
import Policy
import Synchronization
import Wire

/// The anomaly model's per-agent state on a server: the habits learned from the store's history, and what is
/// happening now.
///
/// The habits are a function of the store: an agent's authorizations are learned, oldest first, once they are
/// `learnAfterSeconds` old (no void or approval can change them then), only if they were signed and not voided.
/// Each agent catches up with the store at its first request and then at most once a minute, so every server of a
/// cluster learns the authorizations of all of them, and a restarted server rebuilds the same state. The live part
/// (bursts, runs, streaks) is this server's own requests of the last minutes.
final class BehaviourBook: Sendable {
    private struct Entry {
        var state = AgentBehaviour()
        /// Every authorization created up to here has been learned.
        var learnedUntil: Int64
        var caughtUpAt: Int64?
    }

    let model: BehaviourModel
    private let store: any Store
    private let entries = Mutex<[String: Entry]>([:])
    /// How far back a first catch-up reads: after ten half-lives what is older weighs less than a thousandth.
    private var horizon: Int64 { 10 * self.model.halfLifeSeconds }
    static let catchUpInterval: Int64 = 60

    init(model: BehaviourModel, store: any Store) {
        self.model = model
        self.store = store
    }

    /// The agent's state at `now`, caught up with the store first when it is due.
    func state(of agent: String, now: Int64) async throws -> AgentBehaviour {
        let (from, due) = self.entries.withLock { entries -> (Int64, Bool) in
            let entry = entries[agent] ?? Entry(learnedUntil: now - self.horizon)
            return (entry.learnedUntil, entry.caughtUpAt.map { now - $0 >= Self.catchUpInterval } ?? true)
        }
        guard due else { return self.entries.withLock { $0[agent]!.state } }
        let upTo = max(from, now - self.model.learnAfterSeconds)
        let records = upTo > from ? try await self.store.authorizations(agent: agent, createdAfter: from, upTo: upTo) : []
        let payments = records.compactMap(Self.payment)
        return self.entries.withLock { entries in
            var entry = entries[agent] ?? Entry(learnedUntil: from)
            // Another request of this agent may have caught up meanwhile: learn only once.
            if entry.learnedUntil == from {
                for payment in payments { self.model.learn(payment, into: &entry.state) }
                entry.learnedUntil = upTo
            }
            entry.caughtUpAt = now
            entries[agent] = entry
            return entry.state
        }
    }

    /// Notes a request the policy decided (bursts, runs and streaks are measured on every request).
    func note(_ payment: ObservedPayment, agent: String, authorized: Bool) {
        self.entries.withLock { entries in
            guard var entry = entries[agent] else { return }
            self.model.note(payment, authorized: authorized, into: &entry.state)
            entries[agent] = entry
        }
    }

    /// What the model learns from a stored authorization: a signed, unvoided one, with its merchant category from
    /// the request as the agent sent it.
    static func payment(_ record: AuthorizationRecord) -> ObservedPayment? {
        guard record.status == .authorized, record.voidedAt == nil, let currency = Currency(code: record.currency), let request = record.request,
            let decoded = try? WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: request))
        else { return nil }
        return ObservedPayment(
            time: record.createdAt, amount: Money(minorUnits: record.amount, currency: currency), merchant: record.merchant,
            category: decoded.merchantCategoryCode)
    }
}
