#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A token PIN.
///
/// Its bytes live in one heap buffer that is zeroed when the last reference goes away, it never prints
/// (`description` is redacted), and it is neither `Codable` nor `Equatable`, so it cannot slip into a
/// log line, an error or a JSON body by accident.
public final class PIN: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    // Written once in `init`, zeroed in `deinit`; never mutated in between.
    nonisolated(unsafe) private let storage: UnsafeMutableRawBufferPointer

    /// - Parameter secret: the PIN's characters; PKCS#11 passes them as UTF-8 bytes.
    public init(_ secret: String) {
        var utf8 = Array(secret.utf8)
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(utf8.count, 1), alignment: 1)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        utf8.withUnsafeBytes { storage.copyMemory(from: $0) }
        self.storage = storage
        self.count = utf8.count
        utf8.withUnsafeMutableBytes { explicitZero($0) }
    }

    /// The number of bytes in the PIN.
    public let count: Int

    deinit {
        explicitZero(self.storage)
        self.storage.deallocate()
    }

    /// Lends the PIN's bytes to `body`; the pointer must not escape.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeRawBufferPointer(rebasing: self.storage[0..<self.count]))
    }

    /// Always `PIN(redacted)`, so interpolating or printing a PIN shows no secret.
    public var description: String { "PIN(redacted)" }
    /// Always `PIN(redacted)`, like ``description``.
    public var debugDescription: String { "PIN(redacted)" }
}

/// Zeroes memory in a way the optimizer may not drop.
func explicitZero(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    #if canImport(Glibc) || canImport(Musl)
    explicit_bzero(base, buffer.count)
    #else
    memset_s(base, buffer.count, 0, buffer.count)
    #endif
}
