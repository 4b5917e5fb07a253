import Crypto
import Foundation

/// RFC 6962 (§2.1) Merkle tree hashing, proofs, and their verification (RFC 9162 §2.1.3.2, §2.1.4.2).
///
/// A leaf's hash is SHA-256(0x00 ‖ entry); an inner node's is SHA-256(0x01 ‖ left ‖ right). The tree over n
/// leaves splits at k, the largest power of two below n.
public enum Merkle {
    public typealias Hash = [UInt8]

    public static func leafHash(_ entry: some DataProtocol) -> Hash {
        var hasher = SHA256()
        hasher.update(data: [0x00])
        hasher.update(data: entry)
        return Array(hasher.finalize())
    }

    public static func nodeHash(_ left: Hash, _ right: Hash) -> Hash {
        var hasher = SHA256()
        hasher.update(data: [0x01])
        hasher.update(data: left)
        hasher.update(data: right)
        return Array(hasher.finalize())
    }

    /// The root of the empty tree: SHA-256 of nothing.
    public static let emptyRoot: Hash = Array(SHA256.hash(data: Data()))

    /// MTH(D[n]) over leaf hashes.
    public static func root(_ leaves: ArraySlice<Hash>) -> Hash {
        switch leaves.count {
        case 0: return self.emptyRoot
        case 1: return leaves.first!
        default:
            let k = self.split(leaves.count)
            return self.nodeHash(self.root(leaves.prefix(k)), self.root(leaves.dropFirst(k)))
        }
    }

    /// PATH(m, D[n]): the audit path of leaf `index` in the tree over `leaves`.
    public static func inclusionProof(index: Int, leaves: ArraySlice<Hash>) -> [Hash] {
        precondition(index >= 0 && index < leaves.count, "index outside the tree")
        guard leaves.count > 1 else { return [] }
        let k = self.split(leaves.count)
        if index < k {
            return self.inclusionProof(index: index, leaves: leaves.prefix(k)) + [self.root(leaves.dropFirst(k))]
        }
        return self.inclusionProof(index: index - k, leaves: leaves.dropFirst(k)) + [self.root(leaves.prefix(k))]
    }

    /// PROOF(m, D[n]): that the tree of the first `oldSize` leaves is a prefix of the tree over `leaves`.
    public static func consistencyProof(oldSize: Int, leaves: ArraySlice<Hash>) -> [Hash] {
        precondition(oldSize >= 0 && oldSize <= leaves.count, "old size outside the tree")
        guard oldSize > 0, oldSize < leaves.count else { return [] }
        return self.subproof(oldSize, leaves, complete: true)
    }

    private static func subproof(_ m: Int, _ leaves: ArraySlice<Hash>, complete: Bool) -> [Hash] {
        if m == leaves.count { return complete ? [] : [self.root(leaves)] }
        let k = self.split(leaves.count)
        if m <= k {
            return self.subproof(m, leaves.prefix(k), complete: complete) + [self.root(leaves.dropFirst(k))]
        }
        return self.subproof(m - k, leaves.dropFirst(k), complete: false) + [self.root(leaves.prefix(k))]
    }

    /// The largest power of two smaller than `n` (n > 1).
    static func split(_ n: Int) -> Int {
        var k = 1
        while k << 1 < n { k <<= 1 }
        return k
    }

    /// RFC 9162 §2.1.3.2: whether `proof` shows `leafHash` at `index` in the tree of `treeSize` with `root`.
    public static func verifyInclusion(leafHash: Hash, index: Int, treeSize: Int, proof: [Hash], root: Hash) -> Bool {
        guard index >= 0, index < treeSize else { return false }
        var fn = index
        var sn = treeSize - 1
        var r = leafHash
        for p in proof {
            guard sn != 0 else { return false }
            if fn & 1 == 1 || fn == sn {
                r = self.nodeHash(p, r)
                if fn & 1 == 0 {
                    while fn & 1 == 0, fn != 0 {
                        fn >>= 1
                        sn >>= 1
                    }
                }
            } else {
                r = self.nodeHash(r, p)
            }
            fn >>= 1
            sn >>= 1
        }
        return sn == 0 && r == root
    }

    /// RFC 9162 §2.1.4.2: whether `proof` shows the tree of `oldSize` with `oldRoot` is a prefix of the tree of
    /// `newSize` with `newRoot`.
    public static func verifyConsistency(oldSize: Int, newSize: Int, oldRoot: Hash, newRoot: Hash, proof: [Hash]) -> Bool {
        guard oldSize >= 0, oldSize <= newSize else { return false }
        if oldSize == newSize { return proof.isEmpty && oldRoot == newRoot }
        if oldSize == 0 { return proof.isEmpty }
        guard !proof.isEmpty else { return false }
        var path = proof
        if oldSize & (oldSize - 1) == 0 { path.insert(oldRoot, at: 0) }
        var fn = oldSize - 1
        var sn = newSize - 1
        while fn & 1 == 1 {
            fn >>= 1
            sn >>= 1
        }
        var fr = path[0]
        var sr = path[0]
        for c in path.dropFirst() {
            guard sn != 0 else { return false }
            if fn & 1 == 1 || fn == sn {
                fr = self.nodeHash(c, fr)
                sr = self.nodeHash(c, sr)
                if fn & 1 == 0 {
                    while fn & 1 == 0, fn != 0 {
                        fn >>= 1
                        sn >>= 1
                    }
                }
            } else {
                sr = self.nodeHash(sr, c)
            }
            fn >>= 1
            sn >>= 1
        }
        return fr == oldRoot && sr == newRoot && sn == 0
    }
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first. Appending costs
/// O(log n) hashes, and so does the root, so a log can be checkpointed at any size without rereading it.
public struct MerkleFrontier: Sendable, Hashable {
    public private(set) var size: Int = 0
    /// The perfect subtrees' roots, left to right; their sizes are the binary digits of `size`.
    private var nodes: [Merkle.Hash] = []

    public init() {}

    public mutating func append(_ leafHash: Merkle.Hash) {
        var node = leafHash
        var count = self.size
        // Merge with each completed left sibling: one per trailing one bit of the old size.
        while count & 1 == 1 {
            node = Merkle.nodeHash(self.nodes.removeLast(), node)
            count >>= 1
        }
        self.nodes.append(node)
        self.size += 1
    }

    public var root: Merkle.Hash {
        guard var accumulator = self.nodes.last else { return Merkle.emptyRoot }
        for node in self.nodes.dropLast().reversed() {
            accumulator = Merkle.nodeHash(node, accumulator)
        }
        return accumulator
    }
}
