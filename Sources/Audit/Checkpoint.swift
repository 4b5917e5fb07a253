import Crypto
import Foundation

/// A signed statement of the log's size and root at a time, in the C2SP `tlog-checkpoint` signed-note form:
///
///     <origin>\n<tree size>\n<base64 root hash>\ntime <seconds since 1970>\n
///     \n
///     — <key name> <base64(key id ‖ DER ECDSA P-256 signature)>\n
///
/// The signature covers the body (the first four lines, final newline included) with ECDSA P-256 over
/// SHA-256; the 4-byte key id is the first bytes of SHA-256 over the key's DER SubjectPublicKeyInfo, as
/// C2SP signed-note specifies for ECDSA keys.
public struct Checkpoint: Sendable, Hashable {
    public var origin: String
    public var size: Int
    public var rootHash: Merkle.Hash
    public var time: Int64

    public init(origin: String, size: Int, rootHash: Merkle.Hash, time: Int64) {
        self.origin = origin
        self.size = size
        self.rootHash = rootHash
        self.time = time
    }

    /// The text the signature covers.
    public var body: String {
        "\(self.origin)\n\(self.size)\n\(Data(self.rootHash).base64EncodedString())\ntime \(self.time)\n"
    }

    /// The signed note: the body, a blank line, and the signature line.
    public func note(keyName: String, publicKey: P256.Signing.PublicKey, signature: P256.Signing.ECDSASignature) -> String {
        let blob = Self.keyID(publicKey) + Array(signature.derRepresentation)
        return self.body + "\n\u{2014} \(keyName) \(Data(blob).base64EncodedString())\n"
    }

    public static func keyID(_ publicKey: P256.Signing.PublicKey) -> [UInt8] {
        Array(SHA256.hash(data: publicKey.derRepresentation).prefix(4))
    }

    /// A signed note taken apart.
    public struct Signed: Sendable, Hashable {
        public var checkpoint: Checkpoint
        public var keyName: String
        public var keyID: [UInt8]
        public var signature: [UInt8]
        public var note: String

        /// Whether the note is signed by `publicKey`.
        public func isSigned(by publicKey: P256.Signing.PublicKey) -> Bool {
            guard self.keyID == Checkpoint.keyID(publicKey), let signature = try? P256.Signing.ECDSASignature(derRepresentation: self.signature) else {
                return false
            }
            return publicKey.isValidSignature(signature, for: Data(self.checkpoint.body.utf8))
        }
    }

    /// Parses a signed note.
    /// - Throws: ``CheckpointError`` naming what is malformed.
    public static func parse(_ note: String) throws(CheckpointError) -> Signed {
        guard let separator = note.range(of: "\n\n", options: .backwards) else { throw CheckpointError("no blank line before the signature") }
        let body = String(note[..<separator.lowerBound]) + "\n"
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        guard lines.count == 4, let size = AddCheckpoint.decimal(lines[1]), let root = Data(base64Encoded: String(lines[2])), root.count == 32,
            root.base64EncodedString() == lines[2], lines[3].hasPrefix("time "), let time = AddCheckpoint.decimal(lines[3].dropFirst(5)).map(Int64.init)
        else {
            // One spelling of each number and hash: what is verified and cosigned is the body exactly as written.
            throw CheckpointError("the body is not origin, size, root hash and time")
        }
        let signatureLine = note[separator.upperBound...].trimmingCharacters(in: .newlines)
        let parts = signatureLine.split(separator: " ")
        guard parts.count == 3, parts[0] == "\u{2014}", let blob = Data(base64Encoded: String(parts[2])), blob.count > 4 else {
            throw CheckpointError("the signature line is not '— <name> <base64>'")
        }
        return Signed(
            checkpoint: Checkpoint(origin: String(lines[0]), size: size, rootHash: Array(root), time: time), keyName: String(parts[1]),
            keyID: Array(blob.prefix(4)), signature: Array(blob.dropFirst(4)), note: note
        )
    }
}

public struct CheckpointError: Error, Hashable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "not a checkpoint: \(self.reason)" }
}
