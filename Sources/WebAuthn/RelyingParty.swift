import CountersignCore
import Crypto
import Foundation

/// The relying party's checks (WebAuthn Level 3, §7.1 registration and §7.2 authentication), for one relying party
/// id and the origins its pages are served from.
///
/// What is checked: the ceremony type, the challenge (the exact bytes this server issued), the origin (and that the
/// page was not in a cross-origin frame), the relying party id's hash, user presence and (by default) user
/// verification, the signature counter moving forward, the signature, and the key's algorithm (ES256 or EdDSA).
/// Attestation: `none`, and `packed` self-attestation (signed by the credential's own key); a certificate chain
/// (`x5c`) is refused, since nothing here could judge the maker's certificate. Unknown members of the client data
/// are ignored, as the specification requires.
public struct RelyingParty: Sendable {
    public let id: String
    public let origins: Set<String>
    public var requiresUserVerification = true

    public init(id: String, origins: Set<String>) {
        self.id = id
        self.origins = origins
    }

    /// A credential registered.
    public struct Registration: Sendable {
        public var credentialID: [UInt8]
        public var publicKey: COSEKey
        /// As stored, and as an auditor reads it from the enrollment's audit entry.
        public var encodedPublicKey: [UInt8]
        public var signCount: UInt32
        public var aaguid: [UInt8]
        public var attestationFormat: String
    }

    /// An assertion as the browser returns it.
    public struct Assertion: Sendable, Hashable {
        public var credentialID: [UInt8]
        public var clientDataJSON: [UInt8]
        public var authenticatorData: [UInt8]
        public var signature: [UInt8]

        public init(credentialID: [UInt8], clientDataJSON: [UInt8], authenticatorData: [UInt8], signature: [UInt8]) {
            self.credentialID = credentialID
            self.clientDataJSON = clientDataJSON
            self.authenticatorData = authenticatorData
            self.signature = signature
        }
    }

    /// Checks a `navigator.credentials.create()` response against the challenge issued for it.
    public func register(clientDataJSON: [UInt8], attestationObject: [UInt8], challenge: [UInt8]) throws(WebAuthnError) -> Registration {
        try self.checkClientData(clientDataJSON, type: "webauthn.create", challenge: challenge)
        let object: CBOR
        do {
            object = try CBOR.decode(attestationObject)
        } catch {
            throw WebAuthnError(.malformed, "the attestation object: \(error)")
        }
        guard case .text(let format)? = object["fmt"], case .bytes(let authDataBytes)? = object["authData"], case .map(let statement)? = object["attStmt"]
        else { throw WebAuthnError(.malformed, "the attestation object needs fmt, attStmt and authData") }
        let authenticatorData = try AuthenticatorData(authDataBytes)
        try self.checkAuthenticatorData(authenticatorData)
        guard let credential = authenticatorData.attestedCredential else {
            throw WebAuthnError(.malformed, "a registration's authenticator data carries no credential")
        }
        switch format {
        case "none":
            guard statement.isEmpty else { throw WebAuthnError(.attestation, "attestation 'none' must have an empty statement") }
        case "packed":
            guard object["attStmt"]?["x5c"] == nil else {
                throw WebAuthnError(.attestation, "attestation certificates are not accepted: register with attestation 'none'")
            }
            guard object["attStmt"]?["alg"]?.integer == Int64(credential.publicKey.algorithm), case .bytes(let signature)? = object["attStmt"]?["sig"] else {
                throw WebAuthnError(.attestation, "a packed self-attestation must name the credential's algorithm and carry a signature")
            }
            guard credential.publicKey.isValidSignature(signature, for: authDataBytes + Array(SHA256.hash(data: clientDataJSON))) else {
                throw WebAuthnError(.attestation, "the self-attestation signature does not verify")
            }
        default:
            throw WebAuthnError(.attestation, "attestation format '\(format)' is not accepted (only 'none' and packed self-attestation)")
        }
        return Registration(
            credentialID: credential.credentialID, publicKey: credential.publicKey, encodedPublicKey: credential.encodedPublicKey,
            signCount: authenticatorData.signCount, aaguid: credential.aaguid, attestationFormat: format)
    }

    /// Checks a `navigator.credentials.get()` response against the challenge issued for it and the stored credential.
    /// - Returns: the authenticator data (its counter is the one to store).
    public func verify(_ assertion: Assertion, challenge: [UInt8], publicKey: COSEKey, storedSignCount: UInt32) throws(WebAuthnError) -> AuthenticatorData {
        try self.checkClientData(assertion.clientDataJSON, type: "webauthn.get", challenge: challenge)
        // The signature first: bytes nobody signed are never parsed further.
        guard publicKey.isValidSignature(assertion.signature, for: assertion.authenticatorData + Array(SHA256.hash(data: assertion.clientDataJSON))) else {
            throw WebAuthnError(.signature, "the assertion's signature does not verify with the registered key")
        }
        let authenticatorData = try AuthenticatorData(assertion.authenticatorData)
        try self.checkAuthenticatorData(authenticatorData)
        guard authenticatorData.attestedCredential == nil else { throw WebAuthnError(.malformed, "an assertion carries no new credential") }
        // §7.2 step 22: a counter that does not move forward (where either is non-zero) means a clone or a replay.
        if authenticatorData.signCount != 0 || storedSignCount != 0, authenticatorData.signCount <= storedSignCount {
            throw WebAuthnError(
                .signCount, "the signature counter \(authenticatorData.signCount) is not above the last one seen (\(storedSignCount)): a cloned authenticator?")
        }
        return authenticatorData
    }

    /// The members of the client data the checks read; any other member is ignored, as §5.8.1 requires.
    private struct ClientData: Decodable {
        var type: String
        var challenge: String
        var origin: String
        var crossOrigin: Bool?
    }

    private func checkClientData(_ json: [UInt8], type: String, challenge: [UInt8]) throws(WebAuthnError) {
        let clientData: ClientData
        do {
            clientData = try JSONDecoder().decode(ClientData.self, from: Data(json))
        } catch {
            throw WebAuthnError(.malformed, "the client data is not a JSON object with type, challenge and origin")
        }
        guard clientData.type == type else { throw WebAuthnError(.wrongType, "the client data is of a '\(clientData.type)' ceremony, not '\(type)'") }
        guard let received = Self.base64URLDecode(clientData.challenge), received == challenge else {
            throw WebAuthnError(.challenge, "the client data's challenge is not the one issued for this ceremony")
        }
        guard self.origins.contains(clientData.origin) else { throw WebAuthnError(.origin, "origin '\(clientData.origin)' is not this console's") }
        guard clientData.crossOrigin != true else { throw WebAuthnError(.origin, "the ceremony ran in a cross-origin frame") }
    }

    private func checkAuthenticatorData(_ data: AuthenticatorData) throws(WebAuthnError) {
        guard data.rpIDHash == Array(SHA256.hash(data: Data(self.id.utf8))) else {
            throw WebAuthnError(.relyingParty, "the authenticator data is for another relying party than '\(self.id)'")
        }
        guard data.flags.contains(.userPresent) else { throw WebAuthnError(.userPresence, "the user was not present (UP flag clear)") }
        if self.requiresUserVerification, !data.flags.contains(.userVerified) {
            throw WebAuthnError(.userVerification, "the user was not verified (UV flag clear): a PIN or biometric is required")
        }
        if data.flags.contains(.backedUp), !data.flags.contains(.backupEligible) {
            throw WebAuthnError(.malformed, "backed up (BS) but not backup eligible (BE)")
        }
    }

    /// base64url without padding, strictly (the alphabet of RFC 4648 §5).
    public static func base64URLDecode(_ text: String) -> [UInt8]? { Base64URL.decode(text) }

    public static func base64URLEncode(_ bytes: some Sequence<UInt8>) -> String { Base64URL.encode(Array(bytes)) }
}
