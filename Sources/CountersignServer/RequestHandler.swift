import Crypto
import Foundation
import Ledger
import Logging
import NIOCore
import PKCS11
import Policy
import Signing
import Wire

/// Random bytes, injectable so tests can fix them.
public struct RandomSource: Sendable {
    private let generate: @Sendable (Int) -> [UInt8]

    public init(_ generate: @escaping @Sendable (Int) -> [UInt8]) {
        self.generate = generate
    }

    public func bytes(_ count: Int) -> [UInt8] { self.generate(count) }

    /// The system's generator, eight bytes per call (not one call per byte: each is a `getrandom`).
    public static let system = RandomSource { count in
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            var word = generator.next()
            for _ in 0..<min(8, count - index) {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return bytes
    }
}

/// Answers the requests of an authenticated principal: one frame in, one frame out, never a throw. Who may send
/// what, the body's decoding and the audit of admins' actions happen here, the same way for every route.
final class RequestHandler: Sendable {
    private let routes: [MessageType: Route]
    private let principals: PrincipalDirectory
    private let audit: AuditDesk
    private let time: MonotonicTime
    private let metrics: ServerMetrics
    private let logger: Logger
    /// Reads of the audit log, shared fairly between principals.
    let logReads: FairShare

    init(services: Services, time: MonotonicTime, metrics: ServerMetrics, logger: Logger, logReaders: Int, logReadShare: Double = 1) {
        self.logReads = FairShare(width: logReaders, share: logReadShare, time: time)
        self.routes = services.routes
        precondition(
            Set(self.routes.keys) == Set(MessageType.catalog.filter { $0.senders != .handshake }.map(\.type)),
            "every request of MessageType.catalog but the handshake's has exactly one route"
        )
        self.principals = services.principals
        self.audit = services.audit
        self.time = time
        self.metrics = metrics
        self.logger = logger
    }

    func respond(to frame: Frame, from principal: String) async -> Frame {
        let started = self.time.now
        let type = frame.type.name ?? "unknown"
        let result: Result<ByteBuffer, WireError>
        do {
            result = .success(try await self.dispatch(frame, from: principal))
        } catch let error as any CountersignError {
            result = .failure(error.wireError)
        } catch is CancellationError {
            // Its connection is gone; reported as cancelled below, not as a failure.
            result = .failure(WireError(.internalError, "cancelled: the connection closed"))
        } catch let error as SessionPoolError {
            self.logger.error("HSM operation refused", metadata: ["type": "\(type)", "principal": "\(principal)", "error": "\(error)"])
            result = .failure(
                WireError(.hsmUnavailable, "the HSM cannot be used now (\(error.code.rawValue)); the server log has the details", retryable: true))
        } catch let error as PKCS11Error {
            self.logger.error("HSM operation failed", metadata: ["type": "\(type)", "principal": "\(principal)", "error": "\(error)"])
            result = .failure(WireError(.hsmUnavailable, "the HSM refused the operation: \(error)", retryable: true))
        } catch {
            self.logger.error("request failed", metadata: ["type": "\(type)", "principal": "\(principal)", "error": "\(error)"])
            result = .failure(WireError(.internalError, "the server failed to handle the request; the error is in its log", retryable: true))
        }
        if Task.isCancelled {
            // Its connection is gone (see ConnectionHandler): whatever the result, nobody is left to read it.
            self.metrics.requestAnswered(type: type, outcome: "cancelled", duration: self.time.now - started)
            return Frame(type: .error, requestID: frame.requestID, body: WireJSON.encode(WireError(.internalError, "cancelled: the connection closed")))
        }
        let outcome: String
        let response: Frame
        switch result {
        case .success(let body):
            outcome = "ok"
            response = Frame(type: frame.type.response, requestID: frame.requestID, body: body)
        case .failure(let error):
            outcome = error.code.rawValue
            response = Frame(type: .error, requestID: frame.requestID, body: WireJSON.encode(error))
        }
        self.metrics.requestAnswered(type: type, outcome: outcome, duration: self.time.now - started)
        return response
    }

    private func dispatch(_ frame: Frame, from principalID: String) async throws -> ByteBuffer {
        // The directory is consulted on every request so that a revocation also ends open connections' rights.
        guard let principal = self.principals.lookup(principalID), principal.record.revokedAt == nil else {
            throw WireError(.principalRevoked, "the credential of '\(principalID)' has been revoked")
        }
        guard let route = self.routes[frame.type] else {
            if frame.type.descriptor?.senders == .handshake {
                throw WireError(.invalidRequest, "the handshake is already complete on this connection")
            }
            throw WireError(.unknownMessageType, "message type \(frame.type) is not a request this server knows")
        }
        let caller = Caller(id: principalID, role: principal.role)
        try route.descriptor.senders.check(caller.role, sending: frame.type)
        let run = try route.prepare(frame.body, caller)
        let answer = route.descriptor.readsLog ? try await self.logReads.run(for: principalID) { try await run() } : try await run()
        if let action = answer.action {
            try await self.audit.logAction(action.name, by: principalID, subject: action.subject, details: action.details, kind: action.kind)
        }
        return answer.body
    }
}
