import CanonicalJSON
import Crypto
import Foundation

/// The body of a C2SP `tlog-witness` `add-checkpoint` request: the size of the checkpoint the log last had
/// cosigned, a consistency proof from it, and the new checkpoint (a signed note).
///
///     old <size>\n
///     <base64 hash>\n   (zero to 63 lines)
///     \n
///     <checkpoint note>
public struct AddCheckpoint: Sendable, Hashable {
    public var oldSize: Int
    public var proof: [Merkle.Hash]
    public var note: String

    public init(oldSize: Int, proof: [Merkle.Hash], note: String) {
        self.oldSize = oldSize
        self.proof = proof
        self.note = note
    }

    public var body: String {
        "old \(self.oldSize)\n" + self.proof.map { Data($0).base64EncodedString() + "\n" }.joined() + "\n" + self.note
    }

    /// Reads a request body strictly: one spelling of every size, at most 63 proof lines of 32-byte hashes.
    /// - Throws: ``WitnessRefusal`` with `badRequest`.
    public static func parse(_ body: String) throws(WitnessRefusal) -> AddCheckpoint {
        guard let blank = body.range(of: "\n\n") else { throw .badRequest("no empty line before the checkpoint") }
        let header = body[..<blank.lowerBound].split(separator: "\n", omittingEmptySubsequences: false)
        let note = String(body[blank.upperBound...])
        guard let first = header.first, first.hasPrefix("old "), let oldSize = Self.decimal(first.dropFirst(4)) else {
            throw .badRequest("the first line must be 'old <size>' in decimal without leading zeros")
        }
        let lines = header.dropFirst()
        guard lines.count <= 63 else { throw .badRequest("more than 63 consistency proof lines") }
        var proof: [Merkle.Hash] = []
        for line in lines {
            guard let hash = Data(base64Encoded: String(line)), hash.count == 32, hash.base64EncodedString() == line else {
                throw .badRequest("a consistency proof line is not one base64 SHA-256 hash")
            }
            proof.append(Array(hash))
        }
        return AddCheckpoint(oldSize: oldSize, proof: proof, note: note)
    }

    public static func decimal(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), text == "0" || !text.hasPrefix("0"), text.count <= 18 else { return nil }
        return Int(text)
    }
}

/// Why a witness did not cosign, with the HTTP status C2SP `tlog-witness` gives it.
public enum WitnessRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    /// 400: the request cannot be read, or its old size is above the checkpoint's.
    case badRequest(String)
    /// 403: no signature on the checkpoint verifies with a key the witness trusts for its origin.
    case forbidden
    /// 404: the witness does not know the checkpoint's origin.
    case unknownOrigin(String)
    /// 409: the old size is not the size the witness last cosigned (given), or the same size with another root (a fork).
    case conflict(latestSize: Int, fork: Bool)
    /// 422: the consistency proof does not verify: the log is not an extension of what the witness saw.
    case inconsistent
    /// 503: the witness cannot record or sign now; nothing was cosigned.
    case unavailable(String)

    public var status: Int {
        switch self {
        case .badRequest: 400
        case .forbidden: 403
        case .unknownOrigin: 404
        case .conflict: 409
        case .inconsistent: 422
        case .unavailable: 503
        }
    }

    public var description: String {
        switch self {
        case .badRequest(let reason): "bad request: \(reason)"
        case .forbidden: "the checkpoint is not signed by a key this witness trusts for its origin"
        case .unknownOrigin(let origin): "this witness does not follow the log '\(origin)'"
        case .conflict(let size, false): "the witness last cosigned \(size) entries; ask again from that size"
        case .conflict(let size, true): "the witness cosigned a checkpoint of \(size) entries with another root: the log was forked"
        case .inconsistent: "the consistency proof does not verify: the log is not an extension of the checkpoint the witness cosigned"
        case .unavailable(let reason): "the witness cannot cosign now: \(reason)"
        }
    }
}

/// An Ed25519 cosigner (C2SP `tlog-cosignature`, `cosignature/v1`): its name, key id and signature lines.
public struct Cosigner: Sendable {
    public let name: String
    public let publicKey: Curve25519.Signing.PublicKey

    public init(name: String, publicKey: Curve25519.Signing.PublicKey) {
        self.name = name
        self.publicKey = publicKey
    }

    /// SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key)[:4].
    public var keyID: [UInt8] {
        Array(SHA256.hash(data: Data(self.name.utf8) + [0x0A, 0x04] + self.publicKey.rawRepresentation).prefix(4))
    }

    /// The verifier key in signed-note form: `<name>+<hex key id>+<base64(0x04 ‖ public key)>`.
    public var verifierKey: String {
        "\(self.name)+\(HexDigits.string(self.keyID))+\(Data([0x04] + self.publicKey.rawRepresentation).base64EncodedString())"
    }

    /// Reads a verifier key written by ``verifierKey``.
    public init(verifierKey: String) throws(WitnessRefusal) {
        // The name and the hex id cannot hold a '+'; the base64 key can.
        let parts = verifierKey.split(separator: "+", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let raw = Data(base64Encoded: String(parts[2])), raw.count == 33, raw.first == 0x04,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw.dropFirst())
        else { throw .badRequest("not an Ed25519 verifier key '<name>+<key id>+<base64 key>'") }
        self.init(name: String(parts[0]), publicKey: key)
        guard HexDigits.string(self.keyID) == parts[1] else {
            throw .badRequest("the verifier key's id does not match its name and key")
        }
    }

    /// What a cosignature signs: `cosignature/v1`, the time, and the checkpoint's body.
    public static func message(body: String, time: UInt64) -> Data {
        Data("cosignature/v1\ntime \(time)\n\(body)".utf8)
    }

    /// The signature line `— <name> base64(key id ‖ u64 time ‖ signature)` for `body` at `time`.
    public static func line(name: String, keyID: [UInt8], time: UInt64, signature: Data) -> String {
        let timestamp = withUnsafeBytes(of: time.bigEndian) { Array($0) }
        return "\u{2014} \(name) \(Data(keyID + timestamp + signature).base64EncodedString())\n"
    }

    /// The time of this cosigner's valid cosignature of `body` among `lines`, if there is one.
    public func verify(lines: String, body: String) -> UInt64? {
        for line in lines.split(separator: "\n") {
            let prefix = "\u{2014} \(self.name) "
            guard line.hasPrefix(prefix), let blob = Data(base64Encoded: String(line.dropFirst(prefix.count))), blob.count == 4 + 8 + 64,
                Array(blob.prefix(4)) == self.keyID
            else { continue }
            let time = blob.dropFirst(4).prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            if self.publicKey.isValidSignature(blob.suffix(64), for: Self.message(body: body, time: time)) { return time }
        }
        return nil
    }
}

/// A witness's memory of one log: the latest checkpoint it cosigned.
public struct WitnessedLog: Codable, Sendable, Hashable {
    public var size: Int
    public var rootHash: Data
    public var note: String

    public init(size: Int, rootHash: Data, note: String) {
        self.size = size
        self.rootHash = rootHash
        self.note = note
    }
}

/// The decision of a C2SP witness on one `add-checkpoint`: pure, so the caller can make check-and-persist atomic.
public struct WitnessPolicy: Sendable {
    /// Origin → the keys trusted to sign its checkpoints (every version of the log's audit key).
    public let logs: [String: [P256.Signing.PublicKey]]

    public init(logs: [String: [P256.Signing.PublicKey]]) {
        self.logs = logs
    }

    /// Checks `request` against `latest` (what the witness last cosigned for its origin, if anything).
    /// - Returns: the origin and the state to persist before cosigning.
    public func accept(
        _ request: AddCheckpoint, latest: (String) -> WitnessedLog?
    ) throws(WitnessRefusal) -> (origin: String, state: WitnessedLog, body: String) {
        let signed: Checkpoint.Signed
        do {
            signed = try Checkpoint.parse(request.note)
        } catch {
            throw .badRequest("\(error)")
        }
        let checkpoint = signed.checkpoint
        guard let keys = self.logs[checkpoint.origin] else { throw .unknownOrigin(checkpoint.origin) }
        guard keys.contains(where: { signed.isSigned(by: $0) }) else { throw .forbidden }
        guard request.oldSize <= checkpoint.size else { throw .badRequest("the old size \(request.oldSize) is above the checkpoint's \(checkpoint.size)") }
        if request.oldSize == 0 || request.oldSize == checkpoint.size, !request.proof.isEmpty {
            throw .badRequest("the proof must be empty when the old size is 0 or the checkpoint's own")
        }
        let previous = latest(checkpoint.origin)
        guard request.oldSize == (previous?.size ?? 0) else { throw .conflict(latestSize: previous?.size ?? 0, fork: false) }
        if let previous {
            if request.oldSize == checkpoint.size {
                guard previous.rootHash == Data(checkpoint.rootHash) else { throw .conflict(latestSize: previous.size, fork: true) }
            } else if previous.size > 0 {
                guard
                    Merkle.verifyConsistency(
                        oldSize: previous.size, newSize: checkpoint.size, oldRoot: Array(previous.rootHash), newRoot: checkpoint.rootHash, proof: request.proof
                    )
                else { throw .inconsistent }
            }
        }
        return (checkpoint.origin, WitnessedLog(size: checkpoint.size, rootHash: Data(checkpoint.rootHash), note: request.note), checkpoint.body)
    }
}
