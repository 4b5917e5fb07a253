/// The authenticator's statement (WebAuthn §6.1): whose relying party, which flags, the signature counter, and at
/// registration the new credential.
public struct AuthenticatorData: Sendable {
    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let userPresent = Flags(rawValue: 0x01)
        public static let userVerified = Flags(rawValue: 0x04)
        public static let backupEligible = Flags(rawValue: 0x08)
        public static let backedUp = Flags(rawValue: 0x10)
        public static let attestedCredentialData = Flags(rawValue: 0x40)
        public static let extensionData = Flags(rawValue: 0x80)
    }

    /// The new credential, at registration.
    public struct AttestedCredential: Sendable {
        public var aaguid: [UInt8]
        public var credentialID: [UInt8]
        public var publicKey: COSEKey
        /// The COSE_Key as the authenticator encoded it: what is stored.
        public var encodedPublicKey: [UInt8]
    }

    public var rpIDHash: [UInt8]
    public var flags: Flags
    public var signCount: UInt32
    public var attestedCredential: AttestedCredential?
    /// The bytes as signed.
    public var bytes: [UInt8]

    public init(_ bytes: [UInt8]) throws(WebAuthnError) {
        guard bytes.count >= 37 else { throw WebAuthnError(.malformed, "authenticator data of \(bytes.count) bytes is shorter than 37") }
        self.bytes = bytes
        self.rpIDHash = Array(bytes[0..<32])
        self.flags = Flags(rawValue: bytes[32])
        self.signCount = bytes[33..<37].reduce(0) { $0 << 8 | UInt32($1) }
        var offset = 37
        if self.flags.contains(.attestedCredentialData) {
            guard bytes.count >= offset + 18 else { throw WebAuthnError(.malformed, "the attested credential data ends early") }
            let aaguid = Array(bytes[offset..<offset + 16])
            let length = Int(bytes[offset + 16]) << 8 | Int(bytes[offset + 17])
            offset += 18
            guard length <= 1023, bytes.count >= offset + length else { throw WebAuthnError(.malformed, "a credential id of \(length) bytes does not fit") }
            let credentialID = Array(bytes[offset..<offset + length])
            offset += length
            let key: CBOR
            let keyLength: Int
            do {
                (key, keyLength) = try CBOR.decode(prefixOf: bytes[offset...])
            } catch {
                throw WebAuthnError(.malformed, "the credential public key: \(error)")
            }
            self.attestedCredential = AttestedCredential(
                aaguid: aaguid, credentialID: credentialID, publicKey: try COSEKey(key), encodedPublicKey: Array(bytes[offset..<offset + keyLength]))
            offset += keyLength
        }
        if self.flags.contains(.extensionData) {
            do {
                let (extensions, length) = try CBOR.decode(prefixOf: bytes[offset...])
                guard case .map = extensions else { throw WebAuthnError(.malformed, "the extensions are not a CBOR map") }
                offset += length
            } catch let error as WebAuthnError {
                throw error
            } catch {
                throw WebAuthnError(.malformed, "the extensions: \(error)")
            }
        }
        guard offset == bytes.count else { throw WebAuthnError(.malformed, "\(bytes.count - offset) byte(s) after the authenticator data") }
    }
}
