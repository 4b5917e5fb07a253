import CountersignCore
import Ledger
import Logging
import ServiceLifecycle

/// Rotates keys whose `rotate_every` has passed (or whose `max_signatures` is reached), checking once a
/// minute on the injected clock.
struct KeyRotationService: Service {
    let keyRing: KeyRing
    let wallClock: WallClock
    let time: MonotonicTime
    let logger: Logger
    static let interval: Duration = .seconds(60)

    func run() async throws {
        guard !self.keyRing.policies.isEmpty else {
            // A service that returns ends the whole group; this one has nothing to do until shutdown.
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await self.time.sleep(for: Self.interval)
                } catch {
                    return
                }
                let now = self.wallClock.secondsSince1970
                for name in self.keyRing.dueForRotation(at: now) {
                    do {
                        let record = try await self.keyRing.rotateByPolicy(name: name, reason: "rotation policy due", at: now)
                        self.logger.notice("key rotated by its policy", metadata: ["kid": "\(record.kid)"])
                    } catch {
                        self.logger.error("automatic rotation failed", metadata: ["key": "\(name)", "error": "\(error)"])
                    }
                }
            }
        }
    }
}

/// Holds the data directory until everything else has stopped (the audit log's last entry is written), then
/// lets go, so that a restart in the same process (tests) or a new process may take it.
struct DataDirectoryService: Service {
    let lock: DataDirectoryLock
    let store: any Store

    func run() async throws {
        // Cancelled (a service failed and the group is cancelled at once): the others may still be writing,
        // so the lock is released by `CountersignApplication.finish()` once the group has ended.
        guard (try? await gracefulShutdown()) != nil else { return }
        await self.store.close()
        self.lock.release()
    }
}

/// Keeps the HSM until every listener has stopped, then closes its sessions and finalizes the module.
struct HSMShutdownService: Service {
    let hsm: HSMRuntime

    func run() async throws {
        // Cancelled: the checkpointer may still sign; `CountersignApplication.finish()` shuts the HSM down later.
        guard (try? await gracefulShutdown()) != nil else { return }
        await self.hsm.shutdown()
    }
}
