import Foundation
import Ledger
import NIOCore
import Policy
import Wire

/// Contexts: the policy's modes and schedules, and switching a mode on or off (kept in the store's settings, so
/// it survives a restart).
struct ContextDesk: Sendable {
    let policy: PolicyEngine
    let modes: ContextModes
    let store: any Store
    let wallClock: WallClock

    private var now: Int64 { self.wallClock.secondsSince1970 }

    /// `CONTEXTS_LIST`: every context, whether it is in force now, and what it changes for whom.
    func list() -> ContextsList {
        let now = self.now
        let modes = self.modes.current
        return ContextsList(
            contexts: self.policy.contexts.map { context in
                let inForce: Bool
                let when: String
                switch context.activation {
                case .mode:
                    inForce = modes.contains(context.name)
                    when = "while switched on"
                case .schedule(let schedule):
                    inForce = schedule.covers(now)
                    when = "during \(schedule)"
                }
                var changes: [String] = []
                if let tier = context.highestTier { changes.append("highest tier \(tier)") }
                if !context.maximumPerAuthorization.isEmpty {
                    changes.append("at most " + Money.text(context.maximumPerAuthorization) + " per authorization")
                }
                let whom = (context.agents.sorted().map { "agent \($0)" } + context.profiles.sorted().map { "profile \($0)" }).joined(separator: ", ")
                return ContextInfo(
                    name: context.name, kind: context.isMode ? "mode" : "schedule", inForce: inForce,
                    summary: "\(changes.joined(separator: "; ")) for \(whom), \(when)"
                )
            }
        )
    }

    /// `CONTEXTS_SET`: switches a mode on or off.
    /// - Throws: `CONTEXT_NOT_FOUND` naming the modes when `name` is not one.
    func set(_ name: String, active: Bool) async throws -> ContextInfo {
        guard let context = self.policy.contexts.first(where: { $0.name == name }), context.isMode else {
            let modes = self.policy.contexts.filter(\.isMode).map(\.name)
            throw WireError(.contextNotFound, "no mode named '\(name)'; the modes are: \(modes.isEmpty ? "none" : modes.joined(separator: ", "))")
        }
        let current = self.modes.set(context.name, active: active)
        try await self.store.setSetting(ContextModes.setting, to: Data(WireJSON.encode(current.sorted()).readableBytesView))
        return self.list().contexts.first { $0.name == context.name }!
    }
}
