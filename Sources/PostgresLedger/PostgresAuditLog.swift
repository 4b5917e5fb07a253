import Audit
import CountersignCore
import Foundation
import Ledger
import Logging
import PostgresNIO
import Synchronization

extension PostgresStore {
    public func reserveAuditIndex() async throws -> Int64 {
        try await self.batched("reserve an audit index", self.indexReservations, ())
    }

    /// `count` indexes of the shared sequence in one statement, in ascending order.
    static func reserveAuditIndexes(_ count: Int, client: PostgresClient, logger: Logger) async throws -> [Int64] {
        var indexes: [Int64] = []
        indexes.reserveCapacity(count)
        for try await index in try await client.query("SELECT nextval('auditIndex') FROM generate_series(1, \(count))", logger: logger).decode(Int64.self) {
            indexes.append(index)
        }
        guard indexes.count == count else {
            throw LedgerError(.storeUnavailable, "the audit index sequence gave \(indexes.count) values for \(count)")
        }
        return indexes.sorted()
    }

    @discardableResult
    public func appendAudit(_ make: (Int64) -> AuditEntry) async throws -> Int64 {
        let index = try await self.reserveAuditIndex()
        _ = try await self.committer.commit(.audit(AuditWrite(make(index))), timeout: self.configuration.operationTimeout, time: self.time)
        return index
    }

    public func recordAudit(_ entry: AuditEntry) async throws {
        _ = try await self.committer.commit(.audit(AuditWrite(entry)), timeout: self.configuration.operationTimeout, time: self.time)
    }

    /// The prefix as this server has followed it: entries other servers wrote in the last `follow_interval` may
    /// not be in it yet; this server's own are once their commit has returned (unless an earlier index is missing).
    public var auditHead: (size: Int, root: Merkle.Hash) { self.auditLog.head }

    public var auditSize: Int { self.auditLog.size }

    public func storeCheckpoint(_ checkpoint: CheckpointRecord) async throws {
        try await self.write("store a checkpoint") { connection, logger in
            try await connection.query(
                """
                INSERT INTO checkpoint (size, rootHash, time, note, kid)
                VALUES (\(Int64(checkpoint.size)), \(bytea(checkpoint.rootHash)), \(checkpoint.time), \(checkpoint.note), \(checkpoint.kid))
                """,
                logger: logger
            )
        }
    }

    public func latestCheckpoint() async throws -> CheckpointRecord? {
        try await self.checkpoints(where: "TRUE")
    }

    public func checkpoint(size: Int) async throws -> CheckpointRecord? {
        try await self.checkpoints(where: "size = \(Int64(size))")
    }

    private func checkpoints(where condition: String) async throws -> CheckpointRecord? {
        try await self.read("read checkpoints") { client in
            for try await row in try await client.query(
                "SELECT \(unescaped: PostgresRows.checkpointColumns) FROM checkpoint WHERE \(unescaped: condition) ORDER BY id DESC LIMIT 1",
                logger: self.logger)
            {
                return try PostgresRows.checkpoint(row)
            }
            return nil
        }
    }

    public func checkpointCount() async throws -> Int {
        try await self.read("count checkpoints") { client in
            try await client.query("SELECT COUNT(*)::bigint FROM checkpoint", logger: self.logger).first(Int64.self).map(Int.init) ?? 0
        }
    }

    public func auditEntries(from: Int64, limit: Int) async throws -> [(index: Int64, entry: Data)] {
        try await self.read("read audit entries") { client in
            var entries: [(index: Int64, entry: Data)] = []
            for try await (index, entry) in try await client.query(
                "SELECT idx, entry FROM auditEntry WHERE idx >= \(from) ORDER BY idx LIMIT \(Int64(limit))", logger: self.logger
            ).decode((Int64, Data).self) {
                entries.append((index, entry))
            }
            return entries
        }
    }

    public func auditLeafHashes(size: Int) async throws -> [Merkle.Hash] {
        try await self.read("read leaf hashes") { client in
            var hashes: [Merkle.Hash] = []
            hashes.reserveCapacity(size)
            // In pages, each its own statement (and its own statement timeout).
            while hashes.count < size {
                let before = hashes.count
                for try await hash in try await client.query(
                    "SELECT leafHash FROM auditEntry WHERE idx >= \(Int64(before)) AND idx < \(Int64(size)) ORDER BY idx LIMIT 50000", logger: self.logger
                ).decode(Data.self) {
                    hashes.append(Array(hash))
                }
                if hashes.count == before { break }
            }
            return hashes
        }
    }

    /// Runs `body` in a transaction that also stores the audit entry it returns. `reserve` takes an index inside
    /// the transaction (so an entry is written only when there is something to record); `reserved` is an index
    /// the caller took before. Every index of a transaction that does not commit becomes a hole, filled later.
    func writeAudited<T: Sendable>(
        _ what: String, reserved: Int64?,
        _ body: @escaping @Sendable (PostgresConnection, Logger, _ reserve: @Sendable () async throws -> Int64) async throws -> (T, AuditWrite?)
    ) async throws -> T {
        let taken = Mutex<[Int64]>(reserved.map { [$0] } ?? [])
        let now = self.wallClock.secondsSince1970
        do {
            let (result, written) = try await self.write(what) { connection, logger -> (T, Int64?) in
                let (result, audit) = try await body(connection, logger) {
                    guard let index = try await connection.query("SELECT nextval('auditIndex')", logger: logger).first(Int64.self) else {
                        throw LedgerError(.storeUnavailable, "the audit index sequence gave no value")
                    }
                    taken.withLock { $0.append(index) }
                    return index
                }
                guard let audit else { return (result, nil) }
                guard try await PostgresCommitter.insertAudit([audit], connection: connection, logger: logger, now: now) == [audit.index] else {
                    throw LedgerError(.storeUnavailable, "audit index \(audit.index) was filled as lost before this server wrote it; nothing was recorded")
                }
                return (result, audit.index)
            }
            // Indexes taken but not written (a body that reserved and then had nothing to record) are holes too.
            self.auditLog.lost(taken.withLock { $0 }.filter { $0 != written })
            return result
        } catch {
            self.auditLog.lost(taken.withLock { $0 })
            throw error
        }
    }
}
