import Synchronization

/// Set once when shutdown begins; read from child-channel initializers on any event loop.
public final class ShutdownFlag: Sendable {
    public init() {}

    private let value = Atomic<Bool>(false)

    public func set() {
        self.value.store(true, ordering: .sequentiallyConsistent)
    }

    public var isSet: Bool {
        self.value.load(ordering: .sequentiallyConsistent)
    }
}
