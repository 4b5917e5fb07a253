#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A readers-writer lock around a module's object store.
///
/// SoftHSM 2.6's file object store fails (`CKR_GENERAL_ERROR`) or corrupts an object when one thread creates
/// or destroys an object while other threads use the store (SoftHSMv2 #573; parsec and icp-cli serialize
/// around it too). Creating and destroying objects take the write side; every other call on objects
/// (signing, sealing, reading attributes, searching) takes the read side, so they run concurrently with each
/// other and only wait while a key is being created, which happens at initialization and rotation.
final class ObjectStoreLock: @unchecked Sendable {
    // @unchecked: the pthread lock is the synchronization; it lives at a stable heap address.
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        self.lock = .allocate(capacity: 1)
        self.lock.initialize(to: pthread_rwlock_t())
        precondition(pthread_rwlock_init(self.lock, nil) == 0, "pthread_rwlock_init failed")
    }

    deinit {
        pthread_rwlock_destroy(self.lock)
        self.lock.deallocate()
    }

    func withReadLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_rwlock_rdlock(self.lock)
        defer { pthread_rwlock_unlock(self.lock) }
        return try body()
    }

    func withWriteLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_rwlock_wrlock(self.lock)
        defer { pthread_rwlock_unlock(self.lock) }
        return try body()
    }
}
