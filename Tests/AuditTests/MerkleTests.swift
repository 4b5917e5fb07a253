import Audit
import Crypto
import Foundation
import Testing

@Suite("RFC 6962 Merkle trees, proofs and checkpoints")
struct MerkleTests {
    /// The certificate-transparency test leaves, and the roots published for their first 1…8 (RFC 6962 test vectors).
    static let leaves: [[UInt8]] = [[], [0x00], [0x10], [0x20, 0x21], [0x30, 0x31], [0x40, 0x41, 0x42, 0x43], Array(0x50...0x57), Array(0x60...0x6F)]
    static let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4", "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c", "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// Leaf hashes of `count` distinct entries.
    static func hashes(_ count: Int) -> [Merkle.Hash] {
        (0..<count).map { Merkle.leafHash(Array("entry \($0)".utf8)) }
    }

    @Test("the published roots of the CT test vectors, from the recursive definition and from the frontier")
    func vectors() {
        var frontier = MerkleFrontier()
        #expect(Self.hex(frontier.root) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        for (index, leaf) in Self.leaves.enumerated() {
            frontier.append(Merkle.leafHash(leaf))
            let hashes = Self.leaves.prefix(index + 1).map { Merkle.leafHash($0) }
            #expect(Self.hex(Merkle.root(hashes[...])) == Self.roots[index])
            #expect(Self.hex(frontier.root) == Self.roots[index])
        }
    }

    /// An independent check: rebuild the root from a leaf and its path following RFC 6962's recursive
    /// definition of PATH (which side each sibling is on follows from the split at the largest power of two),
    /// not RFC 9162's bit-walking verifier.
    static func rootFromPath(leaf: Merkle.Hash, index: Int, size: Int, path: ArraySlice<Merkle.Hash>) -> Merkle.Hash? {
        if size == 1 { return path.isEmpty ? leaf : nil }
        guard let sibling = path.last else { return nil }
        var k = 1
        while k * 2 < size { k *= 2 }
        if index < k {
            return Self.rootFromPath(leaf: leaf, index: index, size: k, path: path.dropLast()).map { Merkle.nodeHash($0, sibling) }
        }
        return Self.rootFromPath(leaf: leaf, index: index - k, size: size - k, path: path.dropLast()).map { Merkle.nodeHash(sibling, $0) }
    }

    @Test("every inclusion proof in trees of 1…33 leaves verifies, independently too; a wrong leaf, index or root does not")
    func inclusion() {
        let all = Self.hashes(33)
        for size in 1...33 {
            let leaves = all.prefix(size)
            let root = Merkle.root(leaves)
            var frontier = MerkleFrontier()
            leaves.forEach { frontier.append($0) }
            #expect(frontier.root == root)
            for index in 0..<size {
                let proof = Merkle.inclusionProof(index: index, leaves: leaves)
                #expect(Merkle.verifyInclusion(leafHash: all[index], index: index, treeSize: size, proof: proof, root: root))
                #expect(Self.rootFromPath(leaf: all[index], index: index, size: size, path: proof[...]) == root)
                #expect(!Merkle.verifyInclusion(leafHash: Merkle.leafHash([0xFF]), index: index, treeSize: size, proof: proof, root: root))
                if size > 1 {
                    #expect(!Merkle.verifyInclusion(leafHash: all[index], index: (index + 1) % size, treeSize: size, proof: proof, root: root))
                }
                #expect(!Merkle.verifyInclusion(leafHash: all[index], index: index, treeSize: size, proof: proof, root: Merkle.emptyRoot))
            }
        }
    }

    @Test("every consistency proof between trees of 1…33 leaves verifies; a tree that is not a prefix does not")
    func consistency() {
        let all = Self.hashes(33)
        var forked = all
        forked[4] = Merkle.leafHash(Array("forged".utf8))
        for newSize in 1...33 {
            let newRoot = Merkle.root(all.prefix(newSize))
            for oldSize in 1...newSize {
                let proof = Merkle.consistencyProof(oldSize: oldSize, leaves: all.prefix(newSize))
                let oldRoot = Merkle.root(all.prefix(oldSize))
                #expect(
                    Merkle.verifyConsistency(oldSize: oldSize, newSize: newSize, oldRoot: oldRoot, newRoot: newRoot, proof: proof), "\(oldSize) → \(newSize)")
                if oldSize > 4 {
                    let forkedRoot = Merkle.root(forked.prefix(oldSize))
                    #expect(!Merkle.verifyConsistency(oldSize: oldSize, newSize: newSize, oldRoot: forkedRoot, newRoot: newRoot, proof: proof))
                }
            }
        }
    }

    @Test("a checkpoint note round-trips and verifies only with its own key")
    func checkpoint() throws {
        let key = P256.Signing.PrivateKey()
        let checkpoint = Checkpoint(origin: "countersign.test/audit", size: 8, rootHash: Merkle.root(Self.hashes(8)[...]), time: 1_795_612_455)
        let signature = try key.signature(for: Data(checkpoint.body.utf8))
        let note = checkpoint.note(keyName: "countersign.test/audit", publicKey: key.publicKey, signature: signature)
        #expect(
            note.hasPrefix("countersign.test/audit\n8\n\(Data(checkpoint.rootHash).base64EncodedString())\ntime 1795612455\n\n\u{2014} countersign.test/audit ")
        )
        let parsed = try Checkpoint.parse(note)
        #expect(parsed.checkpoint == checkpoint)
        #expect(parsed.isSigned(by: key.publicKey))
        #expect(!parsed.isSigned(by: P256.Signing.PrivateKey().publicKey))
        let altered = try Checkpoint.parse(note.replacingOccurrences(of: "\n8\n", with: "\n9\n"))
        #expect(!altered.isSigned(by: key.publicKey), "the size is covered by the signature")
        #expect(throws: CheckpointError.self) { try Checkpoint.parse("no blank line") }
    }
}
