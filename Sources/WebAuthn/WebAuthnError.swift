/// Why a registration or an assertion is refused: a stable reason and a sentence (never a secret).
public struct WebAuthnError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: String, Sendable, Hashable {
        /// Not the structure WebAuthn defines.
        case malformed
        /// A ceremony of the other kind (`webauthn.create` for `webauthn.get`, or the reverse).
        case wrongType = "wrong_type"
        /// Not the challenge this server issued for this ceremony.
        case challenge
        /// Made for another origin, in a cross-origin frame, or for another relying party id.
        case origin
        case relyingParty = "relying_party"
        /// The user was not present, or not verified when verification is required.
        case userPresence = "user_presence"
        case userVerification = "user_verification"
        /// The signature counter did not move forward: a cloned authenticator, or a replay.
        case signCount = "sign_count"
        case signature
        /// A key or an attestation this server does not accept.
        case unsupportedKey = "unsupported_key"
        case attestation
    }

    public let reason: Reason
    public let message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { "\(self.reason.rawValue): \(self.message)" }
}
