import CountersignCore
import Crypto
import Foundation
import Policy

/// A key version's name: `<name>/v<version>`, the JWS `kid`.
public struct KeyID: Hashable, Sendable, CustomStringConvertible, Codable {
    public var name: String
    public var version: Int

    public init(name: String, version: Int) {
        self.name = name
        self.version = version
    }

    /// Parses `<name>/v<version>`.
    public init?(kid: String) {
        // One spelling per version: digits without a sign or a leading zero (`v2`, never `v+2` or `v02`).
        guard let slash = kid.lastIndex(of: "/"), kid[kid.index(after: slash)...].hasPrefix("v"), slash > kid.startIndex else { return nil }
        let digits = kid[kid.index(slash, offsetBy: 2)...]
        guard let first = digits.first, first != "0", digits.allSatisfy({ $0.isASCII && $0.isNumber }), let version = Int(digits) else { return nil }
        self.init(name: String(kid[..<slash]), version: version)
    }

    public var kid: String { "\(self.name)/v\(self.version)" }
    public var description: String { self.kid }
}

/// A key that signs authorizations: ES256 over the JWS signing input.
///
/// Software keys and HSM keys are the same to callers; only ``backend`` tells them apart.
public protocol AuthorizationSigningKey: Sendable {
    var keyID: KeyID { get }
    var backend: KeyBackend { get }
    /// The public key, X9.62 uncompressed (65 bytes).
    var publicKeyX963: Data { get }

    /// Signs `message` with ECDSA P-256 over SHA-256, returning the raw 64-byte `r‖s`.
    /// - Throws: ``SigningError`` when the key's backend cannot sign now.
    func sign(_ message: [UInt8]) async throws -> [UInt8]
}

/// A software P-256 key held in memory.
public final class SoftwareSigningKey: AuthorizationSigningKey, @unchecked Sendable {
    // @unchecked: the private key is immutable after init and BoringSSL signs with it from many threads.
    private let privateKey: P256.Signing.PrivateKey
    public let keyID: KeyID
    public let publicKeyX963: Data
    public var backend: KeyBackend { .software }

    public init(keyID: KeyID, privateKey: P256.Signing.PrivateKey) {
        self.keyID = keyID
        self.privateKey = privateKey
        self.publicKeyX963 = privateKey.publicKey.x963Representation
    }

    /// - Parameter rawRepresentation: the 32-byte private scalar.
    public convenience init(keyID: KeyID, rawRepresentation: some ContiguousBytes) throws {
        self.init(keyID: keyID, privateKey: try P256.Signing.PrivateKey(rawRepresentation: rawRepresentation))
    }

    public func sign(_ message: [UInt8]) async throws -> [UInt8] {
        Array(try self.privateKey.signature(for: message).rawRepresentation)
    }
}

/// A signing key could not sign: `HSM_UNAVAILABLE` (the HSM is down, slow, or its circuit breaker is open) or
/// `SIGNING_UNAVAILABLE` (no active key for the tier). Both retryable.
public typealias SigningError = LayerError<SigningLayer>

/// The layer of ``SigningError``: its failures are told to clients as they are.
public enum SigningLayer: ErrorLayer {}
