import Crypto
import Foundation

/// Recomputes a log from its stored entries and checks it against every signed checkpoint: the offline
/// check `countersign audit verify` runs. The first problem found is reported with the index where the log
/// stops being what was signed.
public struct AuditVerifier {
    public struct Problem: Error, Hashable, Sendable, CustomStringConvertible {
        /// The first index that is not as signed (for a checkpoint problem, its size).
        public var index: Int64
        public var reason: String
        public var description: String { "at index \(self.index): \(self.reason)" }
    }

    public struct Report: Sendable, Hashable {
        public var entries: Int
        public var checkpoints: Int
        public var root: Merkle.Hash
    }

    /// The keys a checkpoint may be signed by (every version of the audit key).
    public let publicKeys: [P256.Signing.PublicKey]

    public init(publicKeys: [P256.Signing.PublicKey]) {
        self.publicKeys = publicKeys
    }

    /// - Parameters:
    ///   - checkpoints: the stored signed notes, plus any the caller trusts from elsewhere.
    ///   - forEachEntry: calls its argument with each stored row in index order: index, entry bytes, stored leaf hash.
    ///   - progressEvery: how many entries between calls of `progress`.
    ///   - progress: called every `progressEvery` entries with the count so far.
    public func verify(
        checkpoints notes: [String], forEachEntry: ((Int64, Data, Data) throws -> Void) throws -> Void, progressEvery: Int = 100_000,
        progress: @escaping (Int) -> Void = { _ in }
    ) throws -> Report {
        var bySize: [Int: Merkle.Hash] = [:]
        for note in notes {
            let signed: Checkpoint.Signed
            do {
                signed = try Checkpoint.parse(note)
            } catch {
                throw Problem(index: 0, reason: "a stored checkpoint cannot be read: \(error)")
            }
            let size = signed.checkpoint.size
            guard self.publicKeys.contains(where: { signed.isSigned(by: $0) }) else {
                throw Problem(index: Int64(size), reason: "the checkpoint of \(size) entries is not signed by the audit key (forged or altered)")
            }
            if let other = bySize[size], other != signed.checkpoint.rootHash {
                throw Problem(index: Int64(size), reason: "two signed checkpoints of \(size) entries disagree: the log was forked")
            }
            bySize[size] = signed.checkpoint.rootHash
        }
        let sizes = bySize.keys.sorted()
        var frontier = MerkleFrontier()
        var verifiedUpTo = 0
        try forEachEntry { index, entry, storedLeafHash in
            let expected = Int64(frontier.size)
            guard index == expected else {
                throw Problem(index: expected, reason: index > expected ? "entry \(expected) is missing (deleted)" : "entry \(index) is stored twice")
            }
            guard let claimed = Self.claimedIndex(entry) else {
                throw Problem(index: index, reason: "entry \(index) is not a readable audit entry (modified)")
            }
            guard claimed == index else {
                throw Problem(index: index, reason: "the entry stored at \(index) says it is entry \(claimed) (reordered)")
            }
            let leaf = Merkle.leafHash(entry)
            guard Array(storedLeafHash) == leaf else {
                throw Problem(index: index, reason: "entry \(index) was modified: it no longer hashes to the leaf recorded when it was written")
            }
            frontier.append(leaf)
            if let root = bySize[frontier.size] {
                guard root == frontier.root else {
                    throw Problem(
                        index: Int64(verifiedUpTo),
                        reason:
                            "entries \(verifiedUpTo) to \(frontier.size - 1) do not match the signed checkpoint of \(frontier.size) entries (modified, leaf hashes rewritten)"
                    )
                }
                verifiedUpTo = frontier.size
            }
            if frontier.size % max(1, progressEvery) == 0 { progress(frontier.size) }
        }
        if let largest = sizes.last, largest > frontier.size {
            throw Problem(
                index: Int64(frontier.size),
                reason:
                    "the log ends after \(frontier.size) entries but a checkpoint signed \(largest): entries from \(frontier.size) on were removed (truncated)"
            )
        }
        return Report(entries: frontier.size, checkpoints: notes.count, root: frontier.root)
    }

    private static func claimedIndex(_ entry: Data) -> Int64? {
        struct Indexed: Decodable { var index: Int64 }
        return try? JSONDecoder().decode(Indexed.self, from: entry).index
    }
}
