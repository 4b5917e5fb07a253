import Foundation
import Ledger
import Policy
import Wire

/// `BUDGETS_SHOW`: every budget an agent's spending counts against (its own, its team's, its organization's), in
/// the current window, with what is spent, held and left.
struct BudgetReports: Sendable {
    let store: any Store
    let policy: PolicyEngine
    let wallClock: WallClock

    func budgets(of agent: String) async throws -> BudgetsReport {
        let now = self.wallClock.secondsSince1970
        let scopes = self.policy.scopes(of: agent)
        var lines: [BudgetLine] = []
        for scope in scopes {
            for budget in self.policy.budgets.budgets(of: scope) {
                let windowStart = budget.window.start(at: now)
                for (currency, limit) in budget.limits.sorted(by: { $0.key < $1.key }) {
                    let spending = try await storeRead {
                        try await self.store.spending(scope: scope, currency: currency, since: windowStart, now: now)
                    }
                    lines.append(
                        BudgetLine(
                            scope: scope.key, window: "\(budget.window)", windowStart: windowStart, currency: currency, limit: limit, spent: spending.counted,
                            pending: spending.pending, remaining: max(0, limit - spending.counted)
                        )
                    )
                }
            }
        }
        return BudgetsReport(agentID: agent, scopes: scopes.map(\.key), budgets: lines)
    }
}
