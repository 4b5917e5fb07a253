import ArgumentParser
import Audit
import CanonicalJSON
import CountersignClient
import CountersignConfiguration
import Crypto
import Foundation
import Ledger
import Logging
import PostgresLedger
import Signing
import Wire

/// `countersign audit …`: the tamper-evident log (auditor or admin credential, except `verify`).
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Prove, verify, export and follow the audit log.",
        subcommands: [Checkpoint.self, Proof.self, CheckProof.self, Consistency.self, Verify.self, Export.self, Tail.self, Witness.self]
    )

    struct Checkpoint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the latest signed checkpoint (a C2SP signed note).")

        @Flag(help: "Print JSON: the note with its size, root hash and time.")
        var json = false

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let checkpoint = try await connection.auditCheckpoint()
                if self.json {
                    try JSONOutput.print(checkpoint)
                } else {
                    print(checkpoint.note, terminator: "")
                }
            }
        }
    }

    struct Proof: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a self-contained inclusion proof (entry, index, audit path, signed checkpoint) that anyone can check offline."
        )

        @Argument(help: "An entry index, or an authorization id.")
        var target: String

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let proof =
                    if let index = Int64(self.target) {
                        try await connection.auditProof(index: index)
                    } else {
                        try await connection.auditProof(authorizationID: self.target)
                    }
                try JSONOutput.print(proof)
            }
        }
    }

    struct Consistency: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Prove that today's log extends a checkpoint you kept (--old-checkpoint, checked here), or print the proof between two sizes."
        )

        @Argument(help: "The older size (or give --old-checkpoint).")
        var old: Int?
        @Argument(help: "The newer size (default: the latest checkpoint).")
        var new: Int?

        @Option(
            name: .customLong("old-checkpoint"),
            help: "A checkpoint (signed note) you kept, e.g. from `audit checkpoint > kept.note`: the proof is checked against it.")
        var oldCheckpoint: String?

        @Option(name: .customLong("jwks"), help: "A JWKS file or URL with the audit key (default: from the server).")
        var jwks: String?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            guard let path = self.oldCheckpoint else {
                guard let old = self.old else { throw ValidationError("give the older size, or --old-checkpoint <file>") }
                try await self.client.withConnection { connection in
                    try JSONOutput.print(try await connection.auditConsistency(oldSize: old, newSize: self.new))
                }
                return
            }
            let kept = try AuditProofCheck.checkpoint(fromFile: path)
            let proof = try await self.client.withConnection { try await $0.auditConsistency(oldSize: kept.checkpoint.size, newSize: self.new) }
            let keys = try await AuditProofCheck.auditKeys(self.client, jwks: self.jwks)
            let newer = try AuditProofCheck.signedCheckpoint(proof.newCheckpoint, keys: keys, what: "the server's new checkpoint")
            _ = try AuditProofCheck.signedCheckpoint(kept.note, keys: keys, what: "the kept checkpoint")
            let hashes = try proof.proof.map { try AuditProofCheck.hash($0) }
            guard newer.checkpoint.size == proof.newSize,
                Merkle.verifyConsistency(
                    oldSize: kept.checkpoint.size, newSize: newer.checkpoint.size, oldRoot: kept.checkpoint.rootHash, newRoot: newer.checkpoint.rootHash,
                    proof: hashes)
            else {
                throw ValidationError(
                    "NOT CONSISTENT: the log of \(newer.checkpoint.size) entries does not extend the kept checkpoint of \(kept.checkpoint.size) entries; the log was rewritten"
                )
            }
            print(
                "consistent: the log of \(newer.checkpoint.size) entries (signed \(Terminal.time(newer.checkpoint.time))) extends the kept checkpoint of \(kept.checkpoint.size) entries (signed \(Terminal.time(kept.checkpoint.time)))"
            )
        }
    }

    struct CheckProof: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check-proof",
            abstract:
                "Check an inclusion proof (as `audit proof` prints it) offline: the entry's leaf hash, its path to the checkpoint's root, and the checkpoint's signature."
        )

        @Argument(help: "The proof's JSON file ('-' for standard input).")
        var file: String

        @Option(name: .customLong("jwks"), help: "A JWKS file or URL with the audit key (default: the server's, over HTTP without a credential).")
        var jwks: String?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            let data = self.file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : (FileManager.default.contents(atPath: self.file) ?? Data())
            let proof: AuditInclusionProof
            do {
                proof = try StrictJSONDecoder(allowsUnknownMembers: true).decode(AuditInclusionProof.self, from: Array(data))
            } catch {
                throw ValidationError("'\(self.file)' is not an inclusion proof: \(error)")
            }
            let keys = try await AuditProofCheck.auditKeys(self.client, jwks: self.jwks)
            let signed = try AuditProofCheck.signedCheckpoint(proof.checkpoint, keys: keys, what: "the proof's checkpoint")
            let leaf = Merkle.leafHash(Data(proof.entry.utf8))
            guard try AuditProofCheck.hash(proof.leafHash) == leaf else {
                throw ValidationError("INVALID: the leaf hash is not SHA-256(0x00 ‖ entry)")
            }
            guard signed.checkpoint.size == proof.treeSize,
                Merkle.verifyInclusion(
                    leafHash: leaf, index: Int(proof.index), treeSize: proof.treeSize, proof: try proof.auditPath.map { try AuditProofCheck.hash($0) },
                    root: signed.checkpoint.rootHash)
            else {
                throw ValidationError("INVALID: the audit path does not lead from entry \(proof.index) to the signed root of \(signed.checkpoint.size) entries")
            }
            print(
                "proof OK: entry \(proof.index) is in the log of \(signed.checkpoint.size) entries signed at \(Terminal.time(signed.checkpoint.time)) by the audit key"
            )
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute the log from the store file, check every checkpoint's signature, and report the first index that is not as signed."
        )

        @Option(help: "The store file (default .data/countersign.sqlite). It is opened read-only.")
        var store: String = ".data/countersign.sqlite"

        @Option(
            name: .customLong("config"),
            help: "A countersignd configuration whose store is PostgreSQL: the cluster's log is read from the database instead of a file.")
        var configuration: String?

        @Option(name: .customLong("jwks"), help: "A JWKS file with the audit key; without it the key set is fetched from the server.")
        var jwksFile: String?

        @Option(name: .customLong("from-checkpoint"), help: "A checkpoint (signed note) kept elsewhere, which the log must still match.")
        var fromCheckpoint: String?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            let keys = try await AuditProofCheck.auditKeys(self.client, jwks: self.jwksFile)
            let log: StoredAuditLog
            if let path = self.configuration {
                guard case .postgres(let settings) = try ServerConfiguration.load(path: path).store else {
                    throw ValidationError("the store of '\(path)' is not PostgreSQL; give its file with --store")
                }
                log = try await .postgres(PostgresStoreConfiguration(settings), logger: Logger(label: "countersign"))
            } else {
                log = try .file(self.store)
            }
            var notes = log.notes
            if let path = self.fromCheckpoint {
                guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read '\(path)'") }
                notes.append(String(decoding: data, as: UTF8.self))
            }
            do {
                let report = try AuditVerifier(publicKeys: keys).verify(checkpoints: notes, forEachEntry: log.forEachEntry) { done in
                    Terminal.note("verified \(done) of \(log.count) entries…")
                }
                print("audit log OK: \(report.entries) entries, \(report.checkpoints) signed checkpoints, root \(Data(report.root).base64EncodedString())")
            } catch let problem as AuditVerifier.Problem {
                Terminal.note("audit log NOT OK \(problem)")
                throw ExitCode(2)
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print entries from an index on, one JSON object per line (for SIEMs).")

        @Option(help: "The first index to export.")
        var since: Int64 = 0

        @Option(help: "jsonl (the only format).")
        var format: String = "jsonl"

        @OptionGroup var client: ClientOptions

        func run() async throws {
            guard self.format == "jsonl" else { throw ValidationError("--format is jsonl") }
            try await self.client.withConnection { connection in
                var next = self.since
                while true {
                    let page = try await connection.auditEntries(from: next, limit: 1000)
                    for item in page.entries { print(item.entry) }
                    guard let last = page.entries.last else { return }
                    next = last.index + 1
                }
            }
        }
    }

    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Follow the log: print new entries as they are appended (Ctrl-C to stop).")

        @Option(help: "Start at this index (default: the current end).")
        var from: Int64?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                var next: Int64
                if let from = self.from {
                    next = from
                } else {
                    next = Int64(try await connection.auditEntries(from: 0, limit: 1).size)
                }
                while true {
                    let page = try await connection.auditEntries(from: next, limit: 1000)
                    for item in page.entries { Terminal.emit(item.entry) }
                    if let last = page.entries.last {
                        next = last.index + 1
                    } else {
                        try await Task.sleep(for: .seconds(1))
                    }
                }
            }
        }
    }
}

/// The offline checks of proofs: what an auditor verifies without trusting the server.
enum AuditProofCheck {
    static func hash(_ base64: String) throws -> Merkle.Hash {
        guard let data = Data(base64Encoded: base64), data.count == 32 else { throw ValidationError("'\(base64)' is not a base64 SHA-256 hash") }
        return Array(data)
    }

    static func auditKeys(_ client: ClientOptions, jwks: String?) async throws -> [P256.Signing.PublicKey] {
        let keys = try await client.keySet(file: jwks).keys.filter { $0.tier == "audit" }.compactMap { try? $0.publicKey() }
        guard !keys.isEmpty else { throw ValidationError("the key set has no audit key (tier \"audit\")") }
        return keys
    }

    static func checkpoint(fromFile path: String) throws -> Checkpoint.Signed {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read '\(path)'") }
        do {
            return try Checkpoint.parse(String(decoding: data, as: UTF8.self))
        } catch {
            throw ValidationError("'\(path)' is not a checkpoint: \(error)")
        }
    }

    static func signedCheckpoint(_ note: String, keys: [P256.Signing.PublicKey], what: String) throws -> Checkpoint.Signed {
        let signed: Checkpoint.Signed
        do {
            signed = try Checkpoint.parse(note)
        } catch {
            throw ValidationError("INVALID: \(what) is not a signed note: \(error)")
        }
        guard keys.contains(where: signed.isSigned(by:)) else { throw ValidationError("INVALID: \(what) is not signed by an audit key of the key set") }
        return signed
    }
}
