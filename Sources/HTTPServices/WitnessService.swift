import Audit
import CountersignConfiguration
import CountersignCore
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// A C2SP `tlog-witness` for Countersign's audit log, meant for a machine the log's server cannot write to
/// (`countersign audit witness`): `POST /add-checkpoint` cosigns a checkpoint only if it is signed by the
/// log's audit key and extends the last one it cosigned (a consistency proof), and refuses a fork. What it
/// cosigned is written to its state file (synced, renamed into place) before it answers.
public final class WitnessService: Service, Sendable {
    public let cosigner: Cosigner
    private let privateKey: Curve25519.Signing.PrivateKey
    private let policy: WitnessPolicy
    private let statePath: String
    private let now: @Sendable () -> UInt64
    private let logger: Logger
    /// Origin → the latest cosigned checkpoint. Checked and persisted under one lock (C2SP's atomicity rule).
    private let logs: Mutex<[String: WitnessedLog]>
    public let listener: HTTPListener

    /// - Throws: when the state file exists but cannot be read.
    public init(
        name: String, privateKey: Curve25519.Signing.PrivateKey, policy: WitnessPolicy, statePath: String, endpoint: ServerConfiguration.Endpoint,
        group: any EventLoopGroup, logger: Logger, now: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970) }
    ) throws {
        self.cosigner = Cosigner(name: name, publicKey: privateKey.publicKey)
        self.privateKey = privateKey
        self.policy = policy
        self.statePath = statePath
        self.now = now
        self.logger = logger
        if let data = FileManager.default.contents(atPath: statePath) {
            do {
                self.logs = Mutex(try JSONDecoder().decode([String: WitnessedLog].self, from: data))
            } catch {
                throw StartupError(
                    "the witness state '\(statePath)' cannot be read (\(error)); restore it from a backup, never start a witness afresh for a log it followed")
            }
        } else {
            self.logs = Mutex([:])
        }
        let respond = Responder()
        self.listener = HTTPListener(name: "witness", endpoint: endpoint, maximumBody: 64 * 1024, group: group, logger: logger) { head, body in
            await respond.service?.respond(to: head, body: body) ?? .init(.serviceUnavailable, "text/plain; charset=utf-8", "starting\n")
        }
        respond.service = self
    }

    /// Lets the listener's closure reach the service made after it.
    private final class Responder: @unchecked Sendable {
        // Set once in init, before the listener runs.
        weak var service: WitnessService?
    }

    public func run() async throws {
        try await self.listener.run()
    }

    /// What the witness last cosigned for `origin`.
    public func latest(_ origin: String) -> WitnessedLog? {
        self.logs.withLock { $0[origin] }
    }

    func respond(to head: HTTPRequestHead, body: ByteBuffer) async -> HTTPListener.Response {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard path == "/add-checkpoint" else { return .init(.notFound, "text/plain; charset=utf-8", "not found\n") }
        guard head.method == .POST else { return .init(.methodNotAllowed, "text/plain; charset=utf-8", "only POST\n") }
        guard let text = body.getString(at: body.readerIndex, length: body.readableBytes) else {
            return .init(.badRequest, "text/plain; charset=utf-8", "the body is not UTF-8\n")
        }
        switch self.addCheckpoint(text) {
        case .success(let line):
            return .init(.ok, "text/plain; charset=utf-8", line)
        case .failure(.conflict(let size, let fork)):
            if fork {
                self.logger.critical("a checkpoint of the size last cosigned with another root: the log was forked", metadata: ["size": "\(size)"])
            } else {
                // Usually a log catching up after an answer it missed; a log asking from further back than it can
                // prove is refused at the next step (422), or was rolled back (it says so itself).
                self.logger.notice("add-checkpoint from another old size than the one cosigned", metadata: ["cosigned": "\(size)"])
            }
            return .init(.conflict, "text/x.tlog.size", "\(size)\n")
        case .failure(let refusal):
            if refusal == .inconsistent {
                self.logger.critical("a checkpoint that does not extend the last one cosigned: the log was rewritten or forked")
            } else {
                self.logger.warning("add-checkpoint refused", metadata: ["reason": "\(refusal)"])
            }
            return .init(HTTPResponseStatus(statusCode: refusal.status), "text/plain; charset=utf-8", "\(refusal)\n")
        }
    }

    /// Checks, persists, cosigns: under one lock, so two requests cannot roll the state back.
    func addCheckpoint(_ text: String) -> Result<String, WitnessRefusal> {
        do {
            let request = try AddCheckpoint.parse(text)
            return try self.logs.withLock { logs throws(WitnessRefusal) -> Result<String, WitnessRefusal> in
                let (origin, state, body) = try self.policy.accept(request, latest: { logs[$0] })
                var next = logs
                next[origin] = state
                do {
                    try Self.persist(next, to: self.statePath)
                } catch {
                    self.logger.error("the witness state could not be written; nothing cosigned", metadata: ["error": "\(error)"])
                    return .failure(.unavailable("its state cannot be written"))
                }
                logs = next
                let time = self.now()
                let signature = try? self.privateKey.signature(for: Cosigner.message(body: body, time: time))
                guard let signature else { return .failure(.unavailable("signing failed")) }
                self.logger.info("cosigned", metadata: ["origin": "\(origin)", "size": "\(state.size)"])
                return .success(Cosigner.line(name: self.cosigner.name, keyID: self.cosigner.keyID, time: time, signature: signature))
            }
        } catch {
            return .failure(error)
        }
    }

    /// Writes the state beside its file, syncs it and renames it into place (mode 0600).
    static func persist(_ logs: [String: WitnessedLog], to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try PrivateFile.replace(path, with: try encoder.encode(logs))
    }
}
