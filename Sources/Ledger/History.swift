import CountersignCore
import Foundation
import GRDB

/// What a store recorded over a time range, read without changing anything: the input of `countersign policy
/// replay` and `countersign report`. Both stores give the same value for the same rows.
public struct StoreHistory: Sendable {
    /// Authorizations created in the range, in the order they were decided (creation time, then audit index).
    public var authorizations: [AuthorizationRecord] = []
    /// Refusals recorded in the range, in the order they were decided.
    public var refusals: [RefusalRecord] = []
    /// Every verdict on those authorizations, in the order given.
    public var approvals: [ApprovalRecord] = []
    /// Budget holds created in the holds' range (which starts earlier, to cover each budget's window).
    public var holds: [HoldRecord] = []
    /// Per agent, the merchants it was authorized to pay before the range.
    public var merchantsPaidBefore: [String: Set<String>] = [:]

    public init(authorizations: [AuthorizationRecord] = [], refusals: [RefusalRecord] = [], approvals: [ApprovalRecord] = [], holds: [HoldRecord] = []) {
        self.authorizations = authorizations
        self.refusals = refusals
        self.approvals = approvals
        self.holds = holds
    }

    /// The range read: decisions created in `[from, to)`, holds created in `[holdsFrom, to)`.
    public struct Range: Sendable, Hashable {
        public var from: Int64
        public var to: Int64
        public var holdsFrom: Int64

        public init(from: Int64, to: Int64, holdsFrom: Int64? = nil) {
            self.from = from
            self.to = to
            self.holdsFrom = min(holdsFrom ?? from, from)
        }
    }
}

/// Reads a SQLite store's history without changing it (opened read-only: a running server can go on writing).
public final class StoreHistoryFile: Sendable {
    private let database: DatabaseQueue

    /// - Throws: when the file cannot be opened.
    public init(path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw LedgerError(.storeUnavailable, "there is no store at '\(path)'")
        }
        var configuration = Configuration()
        configuration.readonly = true
        self.database = try DatabaseQueue(path: path, configuration: configuration)
    }

    public func read(_ range: StoreHistory.Range) throws -> StoreHistory {
        try self.database.read { db in
            var history = StoreHistory()
            history.authorizations = try AuthorizationRecord.fetchAll(
                db, sql: "SELECT * FROM authorization WHERE createdAt >= ? AND createdAt < ? ORDER BY createdAt, auditIndex, id",
                arguments: [range.from, range.to])
            history.refusals = try RefusalRecord.fetchAll(
                db, sql: "SELECT * FROM refusal WHERE createdAt >= ? AND createdAt < ? ORDER BY createdAt, auditIndex, id", arguments: [range.from, range.to])
            history.approvals = try ApprovalRecord.fetchAll(
                db,
                sql: """
                    SELECT approval.* FROM approval JOIN authorization ON authorization.id = approval.authorizationID
                    WHERE authorization.createdAt >= ? AND authorization.createdAt < ? ORDER BY approval.decidedAt, approval.authorizationID, approval.approver
                    """,
                arguments: [range.from, range.to])
            history.holds = try HoldRecord.fetchAll(
                db, sql: "SELECT * FROM hold WHERE createdAt >= ? AND createdAt < ? ORDER BY createdAt, authorizationID, scope",
                arguments: [range.holdsFrom, range.to])
            let rows = try Row.fetchCursor(
                db, sql: "SELECT DISTINCT agent, merchant FROM authorization WHERE createdAt < ? AND status = 'authorized'", arguments: [range.from])
            while let row = try rows.next() { history.merchantsPaidBefore[row["agent"], default: []].insert(row["merchant"]) }
            return history
        }
    }
}
