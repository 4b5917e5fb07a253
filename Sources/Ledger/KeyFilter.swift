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
    private static let hashes = 7

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

    private static func positions(agent: String, key: String, bitCount: Int) -> [Int] {
        var hasher = SHA256()
        hasher.update(data: Data(agent.utf8))
        hasher.update(data: [0])
        hasher.update(data: Data(key.utf8))
        let digest = Array(hasher.finalize())
        // Double hashing (Kirsch–Mitzenmacher) from two 64-bit halves of the digest.
        let a = digest[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let b = digest[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } | 1
        return (0..<Self.hashes).map { Int((a &+ UInt64($0) &* b) % UInt64(bitCount)) }
    }

    private static func set(_ bits: inout [UInt64], agent: String, key: String) {
        for position in Self.positions(agent: agent, key: key, bitCount: bits.count * 64) {
            bits[position / 64] |= 1 << UInt64(position % 64)
        }
    }

    private static func filled(with pairs: [(String, String)], capacity: Int) -> State {
        var state = State(bits: [UInt64](repeating: 0, count: Self.words(for: capacity)), count: pairs.count, capacity: capacity)
        for (agent, key) in pairs { Self.set(&state.bits, agent: agent, key: key) }
        return state
    }

    /// Adds a pair; returns false when the filter is over capacity and should be rebuilt.
    @discardableResult
    public func insert(agent: String, key: String) -> Bool {
        self.state.withLock { state in
            Self.set(&state.bits, agent: agent, key: key)
            state.count += 1
            return state.count <= state.capacity
        }
    }

    public func mayContain(agent: String, key: String) -> Bool {
        self.state.withLock { state in
            Self.positions(agent: agent, key: key, bitCount: state.bits.count * 64).allSatisfy { state.bits[$0 / 64] & (1 << UInt64($0 % 64)) != 0 }
        }
    }

    /// Replaces the contents with `pairs`, sized for twice as many.
    public func rebuild(_ pairs: [(String, String)]) {
        let fresh = Self.filled(with: pairs, capacity: max(pairs.count * 2, self.minimumCapacity))
        self.state.withLock { $0 = fresh }
    }
}
