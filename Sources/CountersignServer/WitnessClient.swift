import Audit
import CountersignConfiguration
import Foundation
import Ledger
import Logging
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Sends signed checkpoints to a C2SP witness (`audit.witness`), each with a consistency proof from the last
/// checkpoint the witness cosigned, and checks its cosignature.
///
/// In the background only the newest checkpoint waiting is sent (it covers the older ones), one at a time, so a slow
/// or unreachable witness costs one request per checkpoint at most and never a queue. The witness's refusal is the
/// alarm this exists for: a checkpoint that does not extend the last one it cosigned means the log was rewritten,
/// forked or rolled back; it is logged as `critical` and counted, and at start it stops the server.
final class WitnessClient: Sendable {
    enum Outcome: Sendable, Equatable {
        case cosigned
        /// The witness already cosigned a later checkpoint of this log.
        case covered
        case refused(String)
        case unreachable(String)
    }

    let url: URL
    let cosigner: Cosigner
    private let store: any Store
    private let metrics: ServerMetrics
    private let logger: Logger
    private let sending = SerialQueue()
    /// The newest checkpoint waiting, whether a sender is draining them, and the largest size this process saw cosigned.
    private let state = Mutex<(pending: CheckpointRecord?, draining: Bool, cosigned: Int)>((nil, false, 0))

    /// The store setting with the size the witness last cosigned: only a first guess of the old size (the witness
    /// says its own when the guess is wrong), never a reason to skip a checkpoint.
    static let sizeSetting = "audit.witness_size"
    /// And the cosigned checkpoint with the witness's signature line.
    static let cosignedSetting = "audit.witness_cosigned"

    init(configuration: ServerConfiguration.Witness, store: any Store, metrics: ServerMetrics, logger: Logger) throws {
        self.url = URL(string: configuration.url)!.appendingPathComponent("add-checkpoint")
        self.cosigner = try Cosigner(verifierKey: configuration.verifierKey)
        self.store = store
        self.metrics = metrics
        self.logger = logger
    }

    /// Sends `record` in the background, or a newer one offered before it goes.
    func offer(_ record: CheckpointRecord) {
        let start = self.state.withLock { state -> Bool in
            if (state.pending?.size ?? -1) <= record.size { state.pending = record }
            defer { state.draining = true }
            return !state.draining
        }
        guard start else { return }
        Task {
            while let next = self.state.withLock({ state -> CheckpointRecord? in
                defer { state.pending = nil }
                if state.pending == nil { state.draining = false }
                return state.pending
            }) {
                _ = await self.submit(next)
            }
        }
    }

    /// Sends `record` now (after a send in progress) and says how it went.
    @discardableResult
    func submit(_ record: CheckpointRecord) async -> Outcome {
        let outcome = (try? await self.sending.run { await self.deliver(record) }) ?? .unreachable("cancelled")
        switch outcome {
        case .cosigned:
            self.metrics.witnessCosigned()
        case .covered:
            break
        case .refused(let reason):
            self.metrics.witnessFailed()
            self.logger.critical(
                "the witness refused the checkpoint: the audit log is not an extension of what it cosigned before",
                metadata: ["witness": "\(self.cosigner.name)", "size": "\(record.size)", "reason": "\(reason)"]
            )
        case .unreachable(let reason):
            self.metrics.witnessFailed()
            self.logger.error(
                "checkpoint not cosigned by the witness; the next one will be sent", metadata: ["witness": "\(self.cosigner.name)", "error": "\(reason)"])
        }
        return outcome
    }

    private func deliver(_ record: CheckpointRecord) async -> Outcome {
        let cosigned = self.state.withLock { $0.cosigned }
        guard record.size >= cosigned else { return .covered }
        do {
            let remembered =
                try await self.store.setting(Self.sizeSetting).flatMap { AddCheckpoint.decimal(Substring(String(decoding: $0, as: UTF8.self))) } ?? 0
            var oldSize = min(max(remembered, cosigned), record.size)
            for attempt in 0..<2 {
                let (status, body) = try await self.post(try await self.request(oldSize: oldSize, record: record))
                switch status {
                case 200:
                    let signed = try Checkpoint.parse(record.note)
                    guard self.cosigner.verify(lines: body, body: signed.checkpoint.body) != nil else {
                        return .unreachable("the answer carries no valid cosignature by \(self.cosigner.name)")
                    }
                    self.state.withLock { $0.cosigned = max($0.cosigned, record.size) }
                    try await self.store.setSetting(Self.sizeSetting, to: Data(String(record.size).utf8))
                    try await self.store.setSetting(Self.cosignedSetting, to: Data((record.note + body).utf8))
                    return .cosigned
                case 409:
                    guard let size = AddCheckpoint.decimal(Substring(body.trimmingCharacters(in: .newlines))) else {
                        return .unreachable("a 409 answer without a size")
                    }
                    if size == oldSize {
                        return .refused("the witness cosigned a checkpoint of \(size) entries with another root: the log was forked")
                    }
                    if size > record.size {
                        // Cosigned before an answer that never arrived (a timeout), or a rollback of this store.
                        guard size <= self.store.auditSize else {
                            return .refused("the witness cosigned \(size) entries, more than this log has (\(self.store.auditSize)): the store was rolled back")
                        }
                        self.state.withLock { $0.cosigned = max($0.cosigned, size) }
                        return .covered
                    }
                    if size < remembered {
                        self.logger.warning(
                            "the witness remembers fewer entries than it cosigned before: its state was reset, and it would accept a rollback once",
                            metadata: ["witness": "\(self.cosigner.name)", "witness_size": "\(size)", "cosigned_before": "\(remembered)"]
                        )
                    }
                    guard attempt == 0 else { return .refused("the witness asks for another old size again (\(size))") }
                    oldSize = size
                case 422:
                    return .refused("the consistency proof from \(oldSize) entries does not verify against what the witness cosigned")
                case 403, 404:
                    return .unreachable("HTTP \(status): \(body.prefix(200)) (does the witness trust this audit key and origin?)")
                default:
                    return .unreachable("HTTP \(status): \(body.prefix(200))")
                }
            }
            return .unreachable("no answer")
        } catch {
            return .unreachable("\(error)")
        }
    }

    private func request(oldSize: Int, record: CheckpointRecord) async throws -> AddCheckpoint {
        guard oldSize > 0, oldSize < record.size else { return AddCheckpoint(oldSize: oldSize, proof: [], note: record.note) }
        let leaves = try await self.store.auditLeafHashes(size: record.size)
        return AddCheckpoint(oldSize: oldSize, proof: Merkle.consistencyProof(oldSize: oldSize, leaves: leaves[...]), note: record.note)
    }

    private func post(_ request: AddCheckpoint) async throws -> (Int, String) {
        var http = URLRequest(url: self.url, timeoutInterval: 5)
        http.httpMethod = "POST"
        http.setValue("text/plain; charset=utf-8", forHTTPHeaderField: "Content-Type")
        http.httpBody = Data(request.body.utf8)
        let (data, response) = try await URLSession.shared.data(for: http)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }
}
