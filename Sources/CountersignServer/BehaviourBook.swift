import Foundation
import Ledger
import NIOCore
import Policy
import Synchronization
import Wire

/// The anomaly model's per-agent state on a server: the habits learned from the store's history, and what is
/// happening now.
///
/// The habits are a function of the store: an agent's authorizations are learned, oldest first, once no void or
/// approval can change them (`learnAfterSeconds`, and at least the longest approval deadline plus the longest
/// lifetime), if they were signed and not voided; the amount of one the model itself flagged (and no approver
/// vouched for) is not learned, so an attacker's escalated payments do not make larger amounts usual. Each agent catches up with the store in
/// the background, a day of history per read, at its first request and then at most once a minute: a request never
/// waits for the history, and one judged before the first catch-up finishes finds the agent still "learning" (the
/// static rules apply). Every server of a cluster learns the same history. The live part (bursts, runs, streaks,
/// pace) is this server's own requests of the last minutes and hours.
final class BehaviourBook: Sendable {
    private struct Entry {
        var state = AgentBehaviour()
        /// Every authorization created up to here has been learned.
        var learnedUntil: Int64
        var caughtUpAt: Int64?
        var catchingUp = false
    }

    let model: BehaviourModel
    private let store: any Store
    private let entries = Mutex<[String: Entry]>([:])
    /// How long after its creation an authorization is final.
    private let settleSeconds: Int64
    /// The tiers whose authorizations people approved: learned even when the model had flagged them.
    private let approvalTiers: Set<String>
    static let catchUpInterval: Int64 = 60

    init(model: BehaviourModel, policy: PolicyEngine, store: any Store) {
        self.model = model
        self.store = store
        self.settleSeconds = model.settleSeconds(in: policy.tiers)
        self.approvalTiers = Set(policy.tiers.tiers.filter { $0.approval != nil }.map(\.name))
    }

    /// The state a request is judged on, with the request noted (atomically, so requests arriving together each
    /// see those before them); starts a catch-up with the store when one is due.
    func admit(_ payment: ObservedPayment, agent: String) -> AgentBehaviour {
        let (state, catchUp) = self.entries.withLock { entries -> (AgentBehaviour, Int64?) in
            var entry = entries[agent] ?? Entry(learnedUntil: payment.time - 10 * self.model.halfLifeSeconds)
            let state = entry.state
            self.model.note(payment, into: &entry.state)
            let due = !entry.catchingUp && (entry.caughtUpAt.map { payment.time - $0 >= Self.catchUpInterval } ?? true)
            if due { entry.catchingUp = true }
            entries[agent] = entry
            return (state, due ? entry.learnedUntil : nil)
        }
        if let from = catchUp {
            Task { await self.catchUp(agent: agent, from: from, now: payment.time) }
        }
        return state
    }

    /// An authorized (or pending) request counts in the spending pace.
    func authorized(_ payment: ObservedPayment, agent: String) {
        self.entries.withLock { entries in
            guard var entry = entries[agent] else { return }
            self.model.notePace(payment, into: &entry.state)
            entries[agent] = entry
        }
    }

    /// Learns the agent's settled authorizations from `from` on, a day of history per read. A failed read leaves
    /// the state as it is (the next catch-up goes on from there).
    func catchUp(agent: String, from: Int64, now: Int64) async {
        let upTo = now - self.settleSeconds
        var cursor = from
        while cursor < upTo {
            let end = min(upTo, cursor + 86_400)
            guard let records = try? await self.store.authorizations(agent: agent, createdAfter: cursor, upTo: end) else { break }
            let payments = records.compactMap(self.payment)
            self.entries.withLock { entries in
                guard var entry = entries[agent], entry.learnedUntil == cursor else { return }
                for (payment, trusted) in payments { self.model.learn(payment, into: &entry.state, trusted: trusted) }
                entry.learnedUntil = end
                entries[agent] = entry
            }
            cursor = end
        }
        self.entries.withLock { entries in
            entries[agent]?.catchingUp = false
            entries[agent]?.caughtUpAt = now
        }
    }

    /// Up to when the agent's history is learned (and no catch-up is running), if the book knows the agent.
    func learnedUntil(of agent: String) -> Int64? {
        self.entries.withLock { entries in entries[agent].flatMap { $0.catchingUp ? nil : $0.learnedUntil } }
    }

    /// The agent's learned state as it is now (tests, and the operator's view).
    func state(of agent: String) -> AgentBehaviour? {
        self.entries.withLock { $0[agent]?.state }
    }

    /// What the model learns from a stored authorization: a signed, unvoided one, with its merchant category from the
    /// request as the agent sent it; trusted (its amount learned too) unless the model flagged it and no approver
    /// signed it off.
    func payment(_ record: AuthorizationRecord) -> (ObservedPayment, trusted: Bool)? {
        guard record.status == .authorized, record.voidedAt == nil, let currency = Currency(code: record.currency), let request = record.request,
            let decoded = try? WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: request))
        else { return nil }
        let flagged =
            !self.approvalTiers.contains(record.tier)
            && (record.decision.flatMap { try? JSONDecoder().decode(DecisionRecord.self, from: $0) }?.flaggedByModel ?? false)
        let payment = ObservedPayment(
            time: record.createdAt, amount: Money(minorUnits: record.amount, currency: currency), merchant: record.merchant,
            category: decoded.merchantCategoryCode)
        return (payment, !flagged)
    }
}
