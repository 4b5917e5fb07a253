import Crypto
import Signing

/// What the server's directory says of a signature over the handshake transcript.
public enum HandshakeVerdict: Sendable, Hashable {
    case accepted(Role)
    case unknownPrincipal
    /// A known principal, but not this algorithm and signature (the reason is for the server's log).
    case refused(String)
    case revoked
}

/// The server's side of the handshake, without I/O: HELLO is answered with a CHALLENGE, AUTH with a WELCOME or a
/// refusal that says the same whatever went wrong. The connection feeds it frames until ``state`` is
/// authenticated; the event of each step is for its log and metrics.
public struct ServerHandshake: Sendable {
    public enum State: Sendable, Hashable {
        case awaitingHello
        case awaitingAuth(principal: String, challenge: [UInt8])
        case authenticated(principal: String)
    }

    /// What happened, for the log and the metrics.
    public enum Event: Sendable, Hashable {
        case challenged
        case invalidHello
        case authenticated(principal: String, role: Role)
        case authenticationFailed(principal: String, reason: String)
        case revoked(principal: String)
        /// A frame out of place (a request before the handshake, an unknown type).
        case outOfOrder
    }

    public struct Step: Sendable {
        public var reply: Frame
        /// Close the connection after the reply.
        public var closes: Bool
        public var event: Event
    }

    public private(set) var state: State = .awaitingHello
    private let challenge: @Sendable () -> [UInt8]
    private let verify: @Sendable (_ principal: String, _ algorithm: CredentialAlgorithm, _ signature: [UInt8], _ transcript: [UInt8]) -> HandshakeVerdict

    /// - Parameters:
    ///   - challenge: `Handshake.challengeLength` fresh random bytes per HELLO.
    ///   - verify: the directory's verdict on a signature by `principal` over `transcript`.
    public init(
        challenge: @escaping @Sendable () -> [UInt8],
        verify: @escaping @Sendable (_ principal: String, _ algorithm: CredentialAlgorithm, _ signature: [UInt8], _ transcript: [UInt8]) -> HandshakeVerdict
    ) {
        self.challenge = challenge
        self.verify = verify
    }

    /// Spent on refusals that need no verification, so that a refusal takes as long whatever its reason.
    private static let decoyKey = CredentialPrivateKey.generate(.es256).publicKey

    /// The reply to `frame` in the current state, and the next state.
    public mutating func receive(_ frame: Frame) -> Step {
        func refuse(_ error: WireError, _ event: Event, next: State) -> Step {
            self.state = next
            return Step(reply: Frame(type: .error, requestID: frame.requestID, body: WireJSON.encode(error)), closes: error.closesConnection, event: event)
        }
        switch (self.state, frame.type) {
        case (.awaitingHello, .hello):
            let hello: Hello
            do {
                hello = try WireJSON.decode(Hello.self, from: frame.body)
                try hello.validate()
            } catch {
                return refuse(error, .invalidHello, next: .awaitingHello)
            }
            // The challenge is sent whether or not the principal exists, so ids cannot be probed.
            let challenge = self.challenge()
            self.state = .awaitingAuth(principal: hello.principal, challenge: challenge)
            let body = Challenge(challenge: Base64URL.encode(challenge), algorithms: CredentialAlgorithm.allCases)
            return Step(reply: Frame(type: .challenge, requestID: frame.requestID, body: WireJSON.encode(body)), closes: false, event: .challenged)

        case (.awaitingAuth(let principal, let challenge), .auth):
            // The challenge is spent by this one attempt, whatever its outcome.
            let failed = WireError(.authenticationFailed, "authentication failed: unknown principal, wrong algorithm or bad signature")
            let transcript = Handshake.transcript(version: frame.version, principal: principal, challenge: challenge)
            guard let auth = try? WireJSON.decode(Auth.self, from: frame.body), let signature = Base64URL.decode(auth.signature) else {
                _ = Self.decoyKey.isValidSignature([UInt8](repeating: 1, count: 64), for: transcript)
                return refuse(
                    failed, .authenticationFailed(principal: principal, reason: "the AUTH body is not an algorithm and a base64url signature"),
                    next: .awaitingHello)
            }
            switch self.verify(principal, auth.algorithm, signature, transcript) {
            case .unknownPrincipal:
                _ = Self.decoyKey.isValidSignature([UInt8](repeating: 1, count: 64), for: transcript)
                return refuse(failed, .authenticationFailed(principal: principal, reason: "no such principal"), next: .awaitingHello)
            case .refused(let reason):
                return refuse(failed, .authenticationFailed(principal: principal, reason: reason), next: .awaitingHello)
            case .revoked:
                return refuse(
                    WireError(.principalRevoked, "the credential of '\(principal)' has been revoked"), .revoked(principal: principal), next: .awaitingHello)
            case .accepted(let role):
                self.state = .authenticated(principal: principal)
                let welcome = Welcome(principal: principal, role: role)
                return Step(
                    reply: Frame(type: .welcome, requestID: frame.requestID, body: WireJSON.encode(welcome)), closes: false,
                    event: .authenticated(principal: principal, role: role)
                )
            }

        case (_, let type) where !MessageType.requests.contains(type):
            return refuse(WireError(.unknownMessageType, "message type \(type) is not a request this server knows"), .outOfOrder, next: self.state)
        case (.awaitingHello, _):
            return refuse(WireError(.handshakeRequired, "send HELLO and AUTH before any other request"), .outOfOrder, next: self.state)
        case (.awaitingAuth, _):
            return refuse(WireError(.handshakeRequired, "answer the challenge with AUTH before any other request"), .outOfOrder, next: self.state)
        case (.authenticated, _):
            return refuse(WireError(.invalidRequest, "the handshake is already complete"), .outOfOrder, next: self.state)
        }
    }
}
