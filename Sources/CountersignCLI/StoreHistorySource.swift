import ArgumentParser
import CountersignConfiguration
import Foundation
import Ledger
import Logging
import NIOCore
import Policy
import PolicyLab
import PostgresLedger
import Wire

/// Where `countersign policy replay` and `countersign report` read what happened: a store file, or the store of a
/// countersignd configuration (its SQLite file, or its PostgreSQL database). Read-only: a running server goes on.
struct StoreHistorySource: ParsableArguments {
    @Option(help: "The store file (default .data/countersign.sqlite), opened read-only.")
    var store: String?

    @Option(
        name: .customLong("config"),
        help: "A countersignd configuration: its store is read (the SQLite file in its data_dir, or its PostgreSQL database).")
    var configuration: String?

    @Option(help: "The start of the window: 2026-11-01, 2026-11-01T09:30:00Z, or seconds since 1970 (default: 7 days before --to).")
    var from: String?

    @Option(help: "The end of the window, not included (default: now).")
    var to: String?

    func validate() throws {
        if self.store != nil, self.configuration != nil { throw ValidationError("give --store or --config, not both") }
    }

    /// The window `[from, to)`.
    func window(now: Int64) throws -> (from: Int64, to: Int64) {
        let to = try self.to.map { try Self.time($0, option: "--to") } ?? now
        let from = try self.from.map { try Self.time($0, option: "--from") } ?? to - 7 * 86_400
        guard from < to else { throw ValidationError("--from must be before --to") }
        return (from, to)
    }

    /// Reads `range` from the store.
    func read(_ range: StoreHistory.Range) async throws -> StoreHistory {
        if let path = self.configuration {
            let configuration = try PolicyCommand.load(path)
            switch configuration.store {
            case .postgres(let settings):
                return try await PostgresHistoryReader.read(range, from: PostgresStoreConfiguration(settings), logger: Logger(label: "countersign"))
            case .sqlite:
                return try StoreHistoryFile(path: (configuration.dataDirectory as NSString).appendingPathComponent("countersign.sqlite")).read(range)
            }
        }
        return try StoreHistoryFile(path: self.store ?? ".data/countersign.sqlite").read(range)
    }

    /// `2026-11-01`, `2026-11-01T09:30:00Z` (UTC) or seconds since 1970.
    static func time(_ text: String, option: String) throws -> Int64 {
        let time = try Self.parse(text, option: option)
        // 1970 to 9999: arithmetic on a window can then never overflow.
        guard (0...253_402_300_799).contains(time) else { throw ValidationError("\(option) '\(text)' is outside the years 1970 to 9999") }
        return time
    }

    private static func parse(_ text: String, option: String) throws -> Int64 {
        if let seconds = Int64(text) { return seconds }
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970) }
        formatter.formatOptions = [.withFullDate]
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970) }
        throw ValidationError("\(option) '\(text)' is not a date (2026-11-01), a UTC time (2026-11-01T09:30:00Z) or seconds since 1970")
    }
}

extension StoreHistory {
    /// The recorded requests, authorizations and refusals together in the order they were decided, with what became
    /// of each; and how many from `from` on the store kept no request for.
    func recordedRequests(from: Int64) -> (requests: [RecordedRequest], skipped: Int) {
        var verdicts: [String: [ApprovalRecord]] = [:]
        for approval in self.approvals { verdicts[approval.authorizationID, default: []].append(approval) }
        var scopes: [String: [String]] = [:]
        for hold in self.holds { scopes[hold.authorizationID, default: []].append(hold.scope) }
        var requests: [(order: (Int64, Int64), request: RecordedRequest)] = []
        var skipped = 0
        for record in self.authorizations {
            guard let request = Self.policyRequest(record.request, agent: record.agent) else {
                if record.createdAt >= from { skipped += 1 }
                continue
            }
            let needsApproval = record.quorum != nil
            let approvedAt: Int64? =
                switch record.status {
                case .authorized, .approved:
                    needsApproval ? (verdicts[record.id]?.filter { $0.verdict == .approve }.map(\.decidedAt).max() ?? record.createdAt) : record.createdAt
                case .pendingApproval, .denied, .expired: nil
                }
            let releasedAt: Int64? =
                switch record.status {
                case .authorized, .approved: record.voidedAt
                case .denied: verdicts[record.id]?.first { $0.verdict == .deny }?.decidedAt ?? record.approvalExpiresAt
                case .pendingApproval, .expired: record.voidedAt ?? record.approvalExpiresAt
                }
            let decision = record.decision.flatMap { try? JSONDecoder().decode(DecisionRecord.self, from: $0) }
            requests.append(
                (
                    (record.createdAt, record.auditIndex ?? .max),
                    RecordedRequest(
                        time: record.createdAt, request: request, outcome: needsApproval ? .pendingApproval : .authorized, tier: record.tier,
                        settlement: .init(authorizedAt: approvedAt, releasedAt: releasedAt, learnable: approvedAt != nil && record.voidedAt == nil),
                        modelFlagged: !needsApproval && (decision?.flaggedByModel ?? false), idempotencyKey: record.idempotencyKey,
                        heldScopes: scopes[record.id])
                ))
        }
        for refusal in self.refusals {
            guard let request = Self.policyRequest(refusal.request, agent: refusal.agent) else {
                if refusal.createdAt >= from { skipped += 1 }
                continue
            }
            let decision = try? JSONDecoder().decode(DecisionRecord.self, from: refusal.decision)
            requests.append(
                (
                    (refusal.createdAt, refusal.auditIndex ?? .max),
                    RecordedRequest(
                        time: refusal.createdAt, request: request, outcome: .refused(code: refusal.code), tier: decision?.tier, settlement: nil,
                        idempotencyKey: refusal.idempotencyKey)
                ))
        }
        requests.sort { $0.order < $1.order }
        return (requests.map(\.request), skipped)
    }

    private static func policyRequest(_ body: Data?, agent: String) -> PolicyRequest? {
        guard let body, let request = try? WireJSON.decode(AuthorizeRequest.self, from: ByteBuffer(bytes: body)) else { return nil }
        return request.policyRequest(agent: agent)
    }
}
