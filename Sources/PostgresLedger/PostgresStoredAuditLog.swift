import Foundation
import Ledger
import Logging
import PostgresNIO

extension StoredAuditLog {
    /// A cluster's audit log read straight from PostgreSQL, for `countersign audit verify --config` and `countersignd
    /// serve --verify-log`: what the servers stored, not what they answer.
    ///
    /// The rows are read into memory (about the entries' size; a log of millions of entries wants a machine with the
    /// memory for it).
    public static func postgres(_ configuration: PostgresStoreConfiguration, logger: Logger) async throws -> StoredAuditLog {
        let client = PostgresClient(configuration: try configuration.clientConfiguration(), backgroundLogger: logger)
        let (entries, notes) = try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            // One snapshot, as servers go on writing: the checkpoints first, then the entries. Every entry a checkpoint
            // in the snapshot covers is in it too; past the latest one, an index another server reserved and has not
            // written yet is a gap that no signature covers, so the entries end there.
            return try await client.withConnection { connection in
                try await connection.query("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
                var notes: [String] = []
                var signed: Int64 = 0
                for try await (note, size) in try await connection.query("SELECT note, size FROM checkpoint ORDER BY id", logger: logger)
                    .decode((String, Int64).self)
                {
                    notes.append(note)
                    signed = max(signed, size)
                }
                var entries: [(Int64, Data, Data)] = []
                var from: Int64 = -1
                paging: while true {
                    let before = entries.count
                    for try await row in try await connection.query(
                        "SELECT idx, entry, leafHash FROM auditEntry WHERE idx > \(from) ORDER BY idx LIMIT 10000", logger: logger
                    ).decode((Int64, Data, Data).self) {
                        if row.0 != from + 1, row.0 > signed { break paging }
                        entries.append(row)
                        from = row.0
                    }
                    if entries.count - before < 10_000 { break }
                }
                try await connection.query("COMMIT", logger: logger)
                return (entries, notes)
            }
        }
        return StoredAuditLog(notes: notes, count: entries.count) { body in
            for (index, entry, leafHash) in entries { try body(index, entry, leafHash) }
        }
    }
}
