import CountersignCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive hold on a data directory, for as long as the process (or this value) lives.
///
/// A second `countersignd` on a live directory would write into the audit log that the first one numbers
/// in memory, and break it until restart. `flock` is per open file, so a second server in the same process
/// (tests) is refused the same way, and the kernel releases the lock when the process dies, even by
/// `kill -9`: there is no stale lock to clean up. The file holds the holder's pid, for the refusal's sentence.
public final class DataDirectoryLock: Sendable {
    public let path: String
    /// `nil` once released.
    private let descriptor: Mutex<Int32?>

    /// Takes the lock at once, or refuses.
    /// - Throws: ``LedgerError`` `STORE_UNAVAILABLE` naming the holder's pid when another process (or server)
    ///   holds the directory, or when the lock file cannot be opened.
    public init(directory: String) throws {
        self.path = (directory as NSString).appendingPathComponent("countersign.lock")
        let descriptor = open(self.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw LedgerError(.storeUnavailable, "cannot open the lock file '\(self.path)': \(String(cString: strerror(errno)))")
        }
        var locked = flock(descriptor, LOCK_EX | LOCK_NB) == 0
        // Held by this very process: a server stopped here a moment ago, and a child process being spawned
        // (fork, then exec closes it) can hold a copy of its descriptor for that moment. Not another server.
        var tries = 0
        while !locked, Self.readPID(descriptor) == getpid(), tries < 200 {
            usleep(10_000)
            tries += 1
            locked = flock(descriptor, LOCK_EX | LOCK_NB) == 0
        }
        guard locked else {
            let holder = Self.readPID(descriptor)
            close(descriptor)
            throw LedgerError(
                .storeUnavailable,
                "the data directory '\(directory)' is in use by another countersignd\(holder.map { " (pid \($0))" } ?? ""); stop it first, or give this one another data directory"
            )
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pid.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        self.descriptor = Mutex(descriptor)
    }

    /// Lets go of the directory (closing the file releases the lock); the file stays, as removing it would
    /// race a new holder. Called when the server has stopped writing; later calls do nothing.
    public func release() {
        self.descriptor.withLock { descriptor in
            if let open = descriptor { close(open) }
            descriptor = nil
        }
    }

    private static func readPID(_ descriptor: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        return Int32(String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    deinit {
        self.release()
    }
}
