import Crypto
import Foundation
import Synchronization

/// A Bloom filter of the (agent, idempotency key) pairs the store holds, so that a request with a new key,
/// the common case, is not preceded by a database read. "Absent" is certain; "present" means read the store.
///
/// Built from the store at open and fed every recorded authorization; it doubles (rebuilt from the store)
/// when it holds more keys than it was sized for, so its false-positive rate stays near 1%.
public final class KeyFilter: Sendable {
    private struct State {
        var bits: [UInt64]
        var count = 0
        var capacity: Int
    }

    private let state: Mutex<State>
    private let minimumCapacity: Int
    private static let hashCount = 7

    /// - Parameter minimumCapacity: the least it is sized for (a million keys in 1.2 MB by default, so most
    ///   stores never rebuild).
    public init(capacity: Int, minimumCapacity: Int = 1 << 20) {
        self.minimumCapacity = minimumCapacity
        self.state = Mutex(Self.filled(with: [], capacity: max(capacity, minimumCapacity)))
    }

    /// A filter holding `pairs`, sized for twice as many.
    public init(_ pairs: [(String, String)], minimumCapacity: Int = 1 << 20) {
        self.minimumCapacity = minimumCapacity
        self.state = Mutex(Self.filled(with: pairs, capacity: max(pairs.count * 2, minimumCapacity)))
    }

    /// About 9.6 bits per key for a 1% false-positive rate.
    private static func words(for capacity: Int) -> Int { (capacity * 10 + 63) / 64 }

    /// The pair's two 64-bit hashes (the first two eight-byte halves of SHA-256 over agent, 0, key), from which
    /// its bit positions are derived by double hashing (Kirsch–Mitzenmacher). Computed outside the lock, with no
    /// allocation: it runs twice per authorization.
    private static func hashes(agent: String, key: String) -> (UInt64, UInt64) {
        var hasher = SHA256()
        var agent = agent
        var key = key
        agent.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        withUnsafeBytes(of: UInt8(0)) { hasher.update(bufferPointer: $0) }
        key.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        return hasher.finalize().withUnsafeBytes { digest in
            (
                UInt64(bigEndian: digest.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                UInt64(bigEndian: digest.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) | 1
            )
        }
    }

    /// The bits of a pair with `hashes` in a filter of `bitCount` bits (lazily: no array per lookup).
    private static func positions(_ hashes: (UInt64, UInt64), bitCount: Int) -> LazyMapSequence<Range<UInt64>, Int> {
        let (a, b) = hashes
        return (0..<UInt64(Self.hashCount)).lazy.map { Int((a &+ $0 &* b) % UInt64(bitCount)) }
    }

    private static func set(_ bits: inout [UInt64], _ hashes: (UInt64, UInt64)) {
        for position in Self.positions(hashes, bitCount: bits.count * 64) {
            bits[position / 64] |= 1 << UInt64(position % 64)
        }
    }

    private static func contains(_ bits: [UInt64], _ hashes: (UInt64, UInt64)) -> Bool {
        Self.positions(hashes, bitCount: bits.count * 64).allSatisfy { bits[$0 / 64] & (1 << UInt64($0 % 64)) != 0 }
    }

    private static func filled(with pairs: [(String, String)], capacity: Int) -> State {
        var state = State(bits: [UInt64](repeating: 0, count: Self.words(for: capacity)), count: pairs.count, capacity: capacity)
        for (agent, key) in pairs { Self.set(&state.bits, Self.hashes(agent: agent, key: key)) }
        return state
    }

    /// Adds a pair; returns false when the filter is over capacity and should be rebuilt.
    @discardableResult
    public func insert(agent: String, key: String) -> Bool {
        let hashes = Self.hashes(agent: agent, key: key)
        return self.state.withLock { state in
            Self.set(&state.bits, hashes)
            state.count += 1
            return state.count <= state.capacity
        }
    }

    public func mayContain(agent: String, key: String) -> Bool {
        let hashes = Self.hashes(agent: agent, key: key)
        return self.state.withLock { state in Self.contains(state.bits, hashes) }
    }

    /// Replaces the contents with `pairs`, sized for twice as many.
    public func rebuild(_ pairs: [(String, String)]) {
        let fresh = Self.filled(with: pairs, capacity: max(pairs.count * 2, self.minimumCapacity))
        self.state.withLock { $0 = fresh }
    }
}
