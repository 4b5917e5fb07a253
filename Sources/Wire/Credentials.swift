import CountersignCore
import Crypto
import Foundation
import Signing

/// The algorithms a principal's credential key may use.
public enum CredentialAlgorithm: String, Codable, Sendable, Hashable, CaseIterable {
    case es256 = "ES256"
    case ed25519 = "Ed25519"
}

/// The handshake: what the client signs to prove it holds its credential key.
///
/// The transcript binds the signature to this protocol, its version, the principal and the challenge:
/// `"countersign-handshake-v1" ‖ 0x00 ‖ version (u8) ‖ principal length (u16 BE) ‖ principal (UTF-8) ‖ challenge (32 bytes)`.
public enum Handshake {
    public static let context = Array("countersign-handshake-v1".utf8)
    public static let challengeLength = 32

    public static func transcript(version: UInt8, principal: String, challenge: [UInt8]) -> [UInt8] {
        let principalBytes = Array(principal.utf8)
        var bytes = Self.context
        bytes.append(0x00)
        bytes.append(version)
        bytes.append(UInt8(truncatingIfNeeded: principalBytes.count >> 8))
        bytes.append(UInt8(truncatingIfNeeded: principalBytes.count))
        bytes += principalBytes
        bytes += challenge
        return bytes
    }
}

/// A principal's public credential key, the only credential material the server stores.
public enum CredentialPublicKey: Sendable {
    case es256(P256.Signing.PublicKey)
    case ed25519(Curve25519.Signing.PublicKey)

    /// - Parameter rawRepresentation: the X9.62 uncompressed point (ES256) or the 32 raw bytes (Ed25519).
    public init(algorithm: CredentialAlgorithm, rawRepresentation: some ContiguousBytes) throws {
        switch algorithm {
        case .es256: self = .es256(try P256.Signing.PublicKey(x963Representation: rawRepresentation))
        case .ed25519: self = .ed25519(try Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation))
        }
    }

    public init(algorithm: CredentialAlgorithm, base64URL: String) throws {
        guard let bytes = Base64URL.decode(base64URL) else { throw WireError(.invalidRequest, "not base64url") }
        try self.init(algorithm: algorithm, rawRepresentation: bytes)
    }

    public var algorithm: CredentialAlgorithm {
        switch self {
        case .es256: .es256
        case .ed25519: .ed25519
        }
    }

    public var rawRepresentation: Data {
        switch self {
        case .es256(let key): key.x963Representation
        case .ed25519(let key): key.rawRepresentation
        }
    }

    /// Whether `signature` signs `message` under this key.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        switch self {
        case .es256(let key):
            guard let parsed = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.isValidSignature(parsed, for: message)
        case .ed25519(let key):
            return key.isValidSignature(signature, for: message)
        }
    }
}

/// A principal's private credential key. Lives in the principal's credential file, never on the server.
public enum CredentialPrivateKey: Sendable {
    case es256(P256.Signing.PrivateKey)
    case ed25519(Curve25519.Signing.PrivateKey)

    public static func generate(_ algorithm: CredentialAlgorithm) -> CredentialPrivateKey {
        switch algorithm {
        case .es256: .es256(P256.Signing.PrivateKey())
        case .ed25519: .ed25519(Curve25519.Signing.PrivateKey())
        }
    }

    public init(algorithm: CredentialAlgorithm, rawRepresentation: some ContiguousBytes) throws {
        switch algorithm {
        case .es256: self = .es256(try P256.Signing.PrivateKey(rawRepresentation: rawRepresentation))
        case .ed25519: self = .ed25519(try Curve25519.Signing.PrivateKey(rawRepresentation: rawRepresentation))
        }
    }

    public var algorithm: CredentialAlgorithm {
        switch self {
        case .es256: .es256
        case .ed25519: .ed25519
        }
    }

    public var publicKey: CredentialPublicKey {
        switch self {
        case .es256(let key): .es256(key.publicKey)
        case .ed25519(let key): .ed25519(key.publicKey)
        }
    }

    var rawRepresentation: Data {
        switch self {
        case .es256(let key): key.rawRepresentation
        case .ed25519(let key): key.rawRepresentation
        }
    }

    /// Signs `message`: ECDSA P-256 with SHA-256 (raw r‖s) or Ed25519.
    public func signature(for message: [UInt8]) throws -> [UInt8] {
        switch self {
        case .es256(let key): Array(try key.signature(for: message).rawRepresentation)
        case .ed25519(let key): Array(try key.signature(for: message))
        }
    }
}

/// A principal's credential file: who it is and its private key. Written with mode 0600.
///
/// ```json
/// {"algorithm":"ES256","principal":"agent-7","private_key":"<base64url>","server":"127.0.0.1:7600"}
/// ```
public struct CredentialFile: Codable, Sendable {
    public var principal: String
    public var algorithm: CredentialAlgorithm
    /// base64url of the raw private key (the P-256 scalar, or the Ed25519 seed).
    public var privateKey: String
    /// Where the server listens, as a convenience for the CLI.
    public var server: String?

    enum CodingKeys: String, CodingKey {
        case principal, algorithm
        case privateKey = "private_key"
        case server
    }

    public init(principal: String, key: CredentialPrivateKey, server: String?) {
        self.principal = principal
        self.algorithm = key.algorithm
        self.privateKey = Base64URL.encode(key.rawRepresentation)
        self.server = server
    }

    public func key() throws -> CredentialPrivateKey {
        guard let bytes = Base64URL.decode(self.privateKey) else {
            throw WireError(.invalidRequest, "the credential file's private_key is not base64url")
        }
        return try CredentialPrivateKey(algorithm: self.algorithm, rawRepresentation: bytes)
    }

    /// Reads a credential file.
    public static func read(path: String) throws -> CredentialFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw WireError(.invalidRequest, "cannot read the credential file '\(path)'")
        }
        do {
            return try JSONDecoder().decode(CredentialFile.self, from: data)
        } catch {
            throw WireError(.invalidRequest, "'\(path)' is not a Countersign credential file")
        }
    }

    /// Writes the file readable by its owner only (0600), refusing to overwrite an existing one.
    public func write(path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let data = try encoder.encode(self)
        do {
            try PrivateFile.create(path, with: data)
        } catch {
            throw WireError(.invalidRequest, "cannot create the credential file: \(error.reason)")
        }
    }
}
