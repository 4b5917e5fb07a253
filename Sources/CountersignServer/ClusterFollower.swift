import CountersignConfiguration
import Foundation
import Ledger
import Logging
import Policy
import ServiceLifecycle

/// What another server of the cluster changed reaches this one's caches within a second: a revoked or rotated
/// principal, a mode switched, a key rotated, retired or destroyed, an approval decided (its waiters wake).
/// With the embedded store nobody else writes, and the store's feed ends at once.
struct ClusterFollower: Service {
    let store: any Store
    let principals: PrincipalDirectory
    let modes: ContextModes
    let policy: PolicyEngine
    let keyRing: KeyRing
    let notifier: ApprovalNotifier
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            let changes = self.store.changes()
            // What changed between the start's loading and this subscription is read now.
            do {
                try await self.apply(.everything)
            } catch {
                self.logger.error("the caches could not be read again at start", metadata: ["error": "\(error)"])
            }
            for await change in changes {
                do {
                    try await self.apply(change)
                } catch {
                    self.logger.error("a change made by another server could not be applied here", metadata: ["change": "\(change)", "error": "\(error)"])
                }
            }
        }
        // The embedded store's feed ends at once; a service still runs until the stop.
        try? await gracefulShutdown()
    }

    private func apply(_ change: StoreChange) async throws {
        switch change {
        case .authorization(let id):
            self.notifier.changed(id)
        case .principal(let id):
            try await self.principals.reload(id: id)
        case .setting(let name) where name == ContextModes.setting:
            let loaded = try await CountersignApplication.loadModes(store: self.store, policy: self.policy, logger: self.logger)
            self.modes.replace(with: loaded.current)
        case .setting:
            break
        case .keyVersions:
            try await self.keyRing.refresh()
        case .everything:
            try await self.principals.load()
            self.modes.replace(with: try await CountersignApplication.loadModes(store: self.store, policy: self.policy, logger: self.logger).current)
            try await self.keyRing.refresh()
            self.notifier.changedAll()
        }
    }
}
