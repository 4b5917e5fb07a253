extension PKCS11SessionPool {
    /// How many sessions a pool opens and how long a task waits for one.
    public struct Configuration: Sendable, Hashable {
        /// The most sessions the pool opens; lowered to the token's own limit when that is smaller.
        public var maximumSessions: Int
        /// How long a task waits for a free session before it is refused.
        public var acquireTimeout: Duration

        /// Defaults: at most 16 sessions, and a task waits at most 2 seconds. The pool treats a `maximumSessions` below 1 as 1.
        public init(maximumSessions: Int = 16, acquireTimeout: Duration = .seconds(2)) {
            self.maximumSessions = maximumSessions
            self.acquireTimeout = acquireTimeout
        }
    }

    /// A snapshot of the pool, for metrics and health checks.
    public struct Statistics: Sendable, Hashable {
        /// The most sessions the pool will have open at once (``PKCS11SessionPool/capacity``).
        public var capacity: Int
        /// Sessions open or being opened, idle or lent.
        public var open: Int
        /// Leases out now: sessions lent to a task, or being opened for one.
        public var inUse: Int
        /// Tasks waiting for a session to come back.
        public var waiting: Int

        /// A snapshot with these counts; pools make their own, see ``PKCS11SessionPool/statistics``.
        public init(capacity: Int, open: Int, inUse: Int, waiting: Int) {
            self.capacity = capacity
            self.open = open
            self.inUse = inUse
            self.waiting = waiting
        }
    }
}
