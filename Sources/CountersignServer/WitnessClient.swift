import Audit
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Ledger
import Logging

/// Sends each signed checkpoint to a C2SP witness (`audit.witness`), with a consistency proof from the last
/// checkpoint it cosigned, and checks its cosignature. One submission at a time, in the order signed.
///
/// The witness's refusal is the alarm this exists for: a checkpoint that does not extend the last one it
/// cosigned means the log was rewritten, forked or rolled back, and is logged as `critical` and counted.
final class WitnessClient: Sendable {
    let url: URL
    let cosigner: Cosigner
    private let store: LedgerStore
    private let metrics: ServerMetrics
    private let logger: Logger
    private let queue = SerialQueue()

    /// The store setting with the size the witness last cosigned.
    static let sizeSetting = "audit.witness_size"
    /// And the cosigned checkpoint with the witness's signature line.
    static let cosignedSetting = "audit.witness_cosigned"

    init(configuration: ServerConfiguration.Witness, store: LedgerStore, metrics: ServerMetrics, logger: Logger) throws {
        self.url = URL(string: configuration.url)!.appendingPathComponent("add-checkpoint")
        self.cosigner = try Cosigner(verifierKey: configuration.verifierKey)
        self.store = store
        self.metrics = metrics
        self.logger = logger
    }

    /// Submits `record` after any submission still running; returns once it is answered (or failed).
    func submit(_ record: CheckpointRecord) async {
        try? await self.queue.run {
            do {
                try await self.send(record)
                self.metrics.witnessCosigned()
            } catch {
                self.metrics.witnessFailed()
                if let refusal = error as? WitnessRefusal, [422, 409].contains(refusal.status) {
                    self.logger.critical(
                        "the witness refused the checkpoint: the audit log is not an extension of what it cosigned before",
                        metadata: ["witness": "\(self.cosigner.name)", "size": "\(record.size)", "reason": "\(refusal)"]
                    )
                } else {
                    self.logger.error("checkpoint not cosigned by the witness; the next one will be sent", metadata: ["witness": "\(self.cosigner.name)", "error": "\(error)"])
                }
            }
        }
    }

    private func send(_ record: CheckpointRecord) async throws {
        let known = try await self.store.setting(Self.sizeSetting).flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
        // A later checkpoint was cosigned first (the stop's, sent at once): this one is covered by it.
        guard record.size >= known else { return }
        var oldSize = known
        // A witness that cosigned another size than this server remembers (its state was kept, this store
        // restored) says which: one more try from there; a fork or a rollback fails that try too.
        for attempt in 0..<2 {
            let (status, body) = try await self.post(try await self.request(oldSize: oldSize, record: record))
            switch status {
            case 200:
                let signed = try Checkpoint.parse(record.note)
                guard self.cosigner.verify(lines: body, body: signed.checkpoint.body) != nil else {
                    throw WitnessRefusal.unavailable("the answer carries no valid cosignature by \(self.cosigner.name)")
                }
                try await self.store.setSetting(Self.sizeSetting, to: Data(String(record.size).utf8))
                try await self.store.setSetting(Self.cosignedSetting, to: Data((record.note + body).utf8))
                return
            case 409:
                guard let size = AddCheckpoint.decimal(Substring(body.trimmingCharacters(in: .newlines))) else {
                    throw WitnessRefusal.badRequest("a 409 answer without a size")
                }
                if size > record.size {
                    throw WitnessRefusal.conflict(latestSize: size, fork: false)
                }
                if size == oldSize || attempt == 1 {
                    throw WitnessRefusal.conflict(latestSize: size, fork: true)
                }
                oldSize = size
            case 422:
                throw WitnessRefusal.inconsistent
            default:
                throw WitnessRefusal.unavailable("HTTP \(status): \(body.prefix(200))")
            }
        }
    }

    private func request(oldSize: Int, record: CheckpointRecord) async throws -> AddCheckpoint {
        guard oldSize > 0, oldSize < record.size else { return AddCheckpoint(oldSize: oldSize, proof: [], note: record.note) }
        let leaves = try await self.store.auditLeafHashes(size: record.size)
        return AddCheckpoint(oldSize: oldSize, proof: Merkle.consistencyProof(oldSize: oldSize, leaves: leaves[...]), note: record.note)
    }

    private func post(_ request: AddCheckpoint) async throws -> (Int, String) {
        var http = URLRequest(url: self.url, timeoutInterval: 10)
        http.httpMethod = "POST"
        http.setValue("text/plain; charset=utf-8", forHTTPHeaderField: "Content-Type")
        http.httpBody = Data(request.body.utf8)
        let (data, response) = try await URLSession.shared.data(for: http)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }
}
