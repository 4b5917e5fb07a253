import Audit
import CountersignCore
import Foundation
import Ledger
import Logging
import PostgresNIO
import Synchronization

/// One server's view of the cluster's audit log: the tree over the log's contiguous prefix, followed from the
/// table that every server writes.
///
/// Indexes come from one PostgreSQL sequence, so entries of different servers interleave and commit out of
/// order; a checkpoint covers only the prefix with no gap. A gap that stays below written entries for
/// `lostAfter` is an index whose server died between reserving and committing it: any server fills it with a
/// `lost` entry (`ON CONFLICT DO NOTHING`: the first filler wins, and a late commit of that index fails and is
/// retried by its client), so checkpoints never stall behind a dead server's hole.
final class SharedAuditLog: Sendable {
    private struct State {
        var frontier: MerkleFrontier
        /// Indexes this server reserved whose write failed: filled by its next group commit.
        var holes: [Int64] = []
        /// The hole at the prefix's end, and when it was first seen.
        var gap: (index: Int64, since: Duration)?
        var problem: String?
        var follower: Task<Void, Never>?
    }

    private let state: Mutex<State>
    private let lostAfter: Duration
    private let time: MonotonicTime

    init(frontier: MerkleFrontier, lostAfter: Duration, time: MonotonicTime) {
        self.state = Mutex(State(frontier: frontier))
        self.lostAfter = lostAfter
        self.time = time
    }

    /// Reads the whole log and checks it against the latest checkpoint, as the SQLite store does at start.
    /// Holes are not filled here: in a cluster a hole may be another server's request in flight.
    /// - Returns: the tree over the contiguous prefix.
    static func open(client: PostgresClient, logger: Logger) async throws -> MerkleFrontier {
        var latest: CheckpointRecord?
        for try await row in try await client.query(
            "SELECT \(unescaped: PostgresRows.checkpointColumns) FROM checkpoint ORDER BY id DESC LIMIT 1", logger: logger)
        {
            latest = try PostgresRows.checkpoint(row)
        }
        // In pages: one statement over the whole log would outlast the statement timeout of a long log.
        var stored: [StoredAuditEntry] = []
        var after: Int64 = -1
        while true {
            let before = stored.count
            for try await (index, entry, leafHash) in try await client.query(
                "SELECT idx, entry, leafHash FROM auditEntry WHERE idx > \(after) ORDER BY idx LIMIT \(Int64(Self.page))", logger: logger
            ).decode((Int64, Data, Data).self) {
                stored.append(StoredAuditEntry(index: index, entry: entry, leafHash: leafHash))
                after = index
            }
            if stored.count - before < Self.page { break }
        }
        return try AuditLogCheck.verify(stored, latest: latest).frontier
    }

    var head: (size: Int, root: Merkle.Hash) {
        self.state.withLock { ($0.frontier.size, $0.frontier.root) }
    }

    var size: Int { self.state.withLock { $0.frontier.size } }

    var followingProblem: String? { self.state.withLock { $0.problem } }

    func lost(_ indices: [Int64]) {
        self.state.withLock { $0.holes += indices }
    }

    func takeHoles() -> [Int64] {
        self.state.withLock { state in
            defer { state.holes = [] }
            return state.holes
        }
    }

    /// Reads the entries written since the prefix's end (by any server) and extends the prefix over every one
    /// without a gap; fills a gap that has lasted `lostAfter`. Safe to run concurrently: an entry is appended
    /// only at the prefix's own size.
    func catchUp(client: PostgresClient, logger: Logger, now: Int64) async throws {
        while true {
            let from = Int64(self.size)
            var rows: [(Int64, Data)] = []
            for try await row in try await client.query(
                "SELECT idx, leafHash FROM auditEntry WHERE idx >= \(from) ORDER BY idx LIMIT \(Self.page)", logger: logger
            ).decode((Int64, Data).self) {
                rows.append(row)
            }
            let elapsed = self.time.now
            let (advanced, gap) = self.state.withLock { state -> (Bool, Range<Int64>?) in
                let before = state.frontier.size
                for (index, leafHash) in rows {
                    if index < Int64(state.frontier.size) { continue }
                    if index > Int64(state.frontier.size) { break }
                    state.frontier.append(Array(leafHash))
                }
                state.problem = nil
                let end = Int64(state.frontier.size)
                guard let next = rows.first(where: { $0.0 > end })?.0 else {
                    state.gap = nil
                    return (state.frontier.size > before, nil)
                }
                // Entries beyond a hole: how long has the hole been there?
                if let gap = state.gap, gap.index == end {
                    return (state.frontier.size > before, elapsed - gap.since >= self.lostAfter ? end..<next : nil)
                }
                state.gap = (end, elapsed)
                return (state.frontier.size > before, nil)
            }
            if let gap {
                try await Self.fill(Array(gap), client: client, logger: logger, now: now)
                logger.warning(
                    "audit indexes reserved but never written were filled with lost entries (their server stopped between reserving and committing them)",
                    metadata: ["from": "\(gap.lowerBound)", "to": "\(gap.upperBound - 1)"]
                )
                continue
            }
            if !advanced || rows.count < Self.page { return }
        }
    }

    static let page = 10_000

    /// Writes `lost` entries at `indices` unless something is there already.
    static func fill(_ indices: [Int64], client: PostgresClient, logger: Logger, now: Int64) async throws {
        guard !indices.isEmpty else { return }
        let fillers = indices.map { AuditSequencer.filler(index: $0, at: now) }
        try await client.query(
            """
            INSERT INTO auditEntry (idx, entry, leafHash, createdAt)
            SELECT * FROM unnest(\(fillers.map(\.index))::bigint[], \(fillers.map { ByteBuffer(bytes: $0.entry) })::bytea[],
                                 \(fillers.map { ByteBuffer(bytes: $0.leafHash) })::bytea[], \(Array(repeating: now, count: fillers.count))::bigint[])
            ON CONFLICT (idx) DO NOTHING
            """,
            logger: logger
        )
    }

    /// Follows the log every `interval` until ``stopFollowing()``; a failure is kept for readiness.
    func startFollowing(interval: Duration, step: @escaping @Sendable () async throws -> Void) {
        let time = self.time
        let task = Task {
            while !Task.isCancelled {
                do {
                    try await step()
                } catch {
                    self.state.withLock { $0.problem = "\(error)" }
                }
                try? await time.sleep(for: interval)
            }
        }
        self.state.withLock { $0.follower = task }
    }

    func stopFollowing() {
        self.state.withLock { $0.follower.take() }?.cancel()
    }
}
