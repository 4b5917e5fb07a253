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
            var entries: [(Int64, Data, Data)] = []
            var from: Int64 = -1
            while true {
                let before = entries.count
                for try await row in try await client.query(
                    "SELECT idx, entry, leafHash FROM auditEntry WHERE idx > \(from) ORDER BY idx LIMIT 10000", logger: logger
                ).decode((Int64, Data, Data).self) {
                    entries.append(row)
                    from = row.0
                }
                if entries.count - before < 10_000 { break }
            }
            var notes: [String] = []
            for try await note in try await client.query("SELECT note FROM checkpoint ORDER BY id", logger: logger).decode(String.self) {
                notes.append(note)
            }
            return (entries, notes)
        }
        return StoredAuditLog(notes: notes, count: entries.count) { body in
            for (index, entry, leafHash) in entries { try body(index, entry, leafHash) }
        }
    }
}
