import Audit
import CountersignCore
import Foundation

/// One stored row of the audit log: its index, the entry's bytes and the leaf hash recorded with it.
package struct StoredAuditEntry: Sendable {
    package var index: Int64
    package var entry: Data
    package var leafHash: Data

    package init(index: Int64, entry: Data, leafHash: Data) {
        self.index = index
        self.entry = entry
        self.leafHash = leafHash
    }
}

/// The check a store makes of its audit log before it serves, whatever holds it (SQLite or PostgreSQL).
package enum AuditLogCheck {
    /// Reads the log back, checking it before anything is written: every entry must still match the leaf hash
    /// recorded with it, no index that the latest checkpoint covers may be missing, and the entries it covers
    /// must hash to its root. A server does not serve on a log it cannot vouch for (the checkpoint's signature
    /// is checked by the server, which has the audit key). A missing row is reported as missing, before any
    /// hole is filled.
    ///
    /// - Parameter stored: every row, in index order.
    /// - Returns: the tree over the stored entries' contiguous prefix (hashed again from their bytes), the index
    ///   after the last one, and the missing indexes past the latest checkpoint.
    /// - Throws: ``LedgerError`` `AUDIT_LOG_MISMATCH` saying what differs, at which index.
    package static func verify(
        _ stored: [StoredAuditEntry], latest latestRow: CheckpointRecord?
    ) throws -> (
        frontier: MerkleFrontier, next: Int64, holes: [Int64]
    ) {
        // The size and root checked are the ones in the signed note, never the row's columns alone, which
        // anyone editing the store can set.
        let latest = try latestRow.map { row -> CheckpointRecord in
            guard let signed = try? Checkpoint.parse(row.note), signed.checkpoint.size == row.size, signed.checkpoint.rootHash == Array(row.rootHash) else {
                throw LedgerError(
                    .auditLogMismatch,
                    "the audit log in the store is not the one that was signed: the latest checkpoint's recorded size and root are not the ones its note states. "
                        + "The store was changed or damaged; `countersign audit verify --store <file>` shows every difference."
                )
            }
            return row
        }
        let signed = latest.map { " by the checkpoint of \($0.size) entries signed at \($0.time)" } ?? ""
        func mismatch(_ what: String) -> LedgerError {
            LedgerError(
                .auditLogMismatch,
                "the audit log in the store is not the one that was signed: \(what). The store was changed or damaged; "
                    + "`countersign audit verify --store <file>` shows every difference. Restore the store from a backup that verifies."
            )
        }
        var frontier = MerkleFrontier()
        var expected: Int64 = 0
        var holes: [Int64] = []
        for row in stored {
            if let latest, expected < row.index, expected < Int64(latest.size) {
                throw mismatch("entry \(expected) is missing, and it is covered\(signed)")
            }
            holes += Array(expected..<row.index)
            let hash = Merkle.leafHash(row.entry)
            guard Data(hash) == row.leafHash else { throw mismatch("entry \(row.index) was changed: its bytes no longer match the leaf hash recorded with it") }
            if holes.isEmpty { frontier.append(hash) }
            expected = row.index + 1
            if let latest, frontier.size == latest.size, frontier.root != Array(latest.rootHash) {
                throw mismatch("its first \(latest.size) entries do not hash to the root signed\(signed)")
            }
        }
        if let latest, Int64(latest.size) > expected {
            throw mismatch("it ends after \(expected) entries, but \(latest.size) are covered\(signed)")
        }
        return (frontier, expected, holes)
    }
}
