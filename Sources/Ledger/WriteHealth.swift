import Synchronization

/// Whether the store's last write went through. A failed group commit or audited write sets it; the next
/// successful one clears it. Readiness reads it, so a server whose audit log cannot be written stops
/// being ready (load balancers send its agents elsewhere) instead of refusing every request while
/// `/readyz` says all is well.
final class WriteHealth: Sendable {
    private let lastFailure = Mutex<String?>(nil)

    func failed(_ error: any Error) {
        self.lastFailure.withLock { $0 = "\(error)" }
    }

    func succeeded() {
        self.lastFailure.withLock { $0 = nil }
    }

    var failure: String? { self.lastFailure.withLock { $0 } }
}
