import Foundation
import GRDB

/// Settings: small named values the server keeps across restarts (e.g. the modes switched on).
extension LedgerStore {
    /// The value stored under `name`, storing `proposed` first if there is none. Atomic: two callers racing
    /// get the same value.
    public func setting(_ name: String, storingIfAbsent proposed: Data) async throws -> Data {
        try await self.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO setting (name, value) VALUES (?, ?)", arguments: [name, proposed])
            return try Data.fetchOne(db, sql: "SELECT value FROM setting WHERE name = ?", arguments: [name])!
        }
    }

    /// Stores `value` under `name`, replacing any value.
    public func setSetting(_ name: String, to value: Data) async throws {
        try await self.write { db in
            try db.execute(
                sql: "INSERT INTO setting (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value", arguments: [name, value])
        }
    }

    public func setting(_ name: String) async throws -> Data? {
        try await self.read { db in try Data.fetchOne(db, sql: "SELECT value FROM setting WHERE name = ?", arguments: [name]) }
    }
}
