import Synchronization

/// Whether the store's last write went through. A failed group commit or audited write sets it; the next
/// successful one clears it. Readiness reads it, so a server whose audit log cannot be written stops
/// being ready (load balancers send its agents elsewhere) instead of refusing every request while
/// `/readyz` says all is well.
package final class WriteHealth: Sendable {
    private let lastFailure = Mutex<String?>(nil)
    private let failures = Atomic<Int>(0)

    package init() {}

    package func failed(_ error: any Error) {
        self.failures.add(1, ordering: .relaxed)
        self.lastFailure.withLock { $0 = "\(error)" }
    }

    /// Every failed write since the store opened.
    package var failureCount: Int { self.failures.load(ordering: .relaxed) }

    package func succeeded() {
        self.lastFailure.withLock { $0 = nil }
    }

    package var failure: String? { self.lastFailure.withLock { $0 } }
}
