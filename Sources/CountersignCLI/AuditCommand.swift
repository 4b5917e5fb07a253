import ArgumentParser
import Audit
import CountersignClient
import Crypto
import Foundation
import Ledger
import Signing
import Wire

/// `countersign audit …`: the tamper-evident log (auditor or admin credential, except `verify`).
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Prove, verify, export and follow the audit log.",
        subcommands: [Checkpoint.self, Proof.self, Consistency.self, Verify.self, Export.self, Tail.self]
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
                let proof = if let index = Int64(self.target) {
                    try await connection.auditProof(index: index)
                } else {
                    try await connection.auditProof(authorizationID: self.target)
                }
                try JSONOutput.print(proof)
            }
        }
    }

    struct Consistency: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Prove that the checkpoint of <new> entries extends the checkpoint of <old> entries.")

        @Argument var old: Int
        @Argument var new: Int?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                try JSONOutput.print(try await connection.auditConsistency(oldSize: self.old, newSize: self.new))
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute the log from the store file, check every checkpoint's signature, and report the first index that is not as signed."
        )

        @Option(help: "The store file (default .data/countersign.sqlite). It is opened read-only.")
        var store: String = ".data/countersign.sqlite"

        @Option(name: .customLong("jwks"), help: "A JWKS file with the audit key; without it the key set is fetched from the server.")
        var jwksFile: String?

        @Option(name: .customLong("from-checkpoint"), help: "A checkpoint (signed note) kept elsewhere, which the log must still match.")
        var fromCheckpoint: String?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            let keySet = try await self.client.keySet(file: self.jwksFile)
            let keys = keySet.keys.filter { $0.tier == "audit" }.compactMap { try? $0.publicKey() }
            guard !keys.isEmpty else { throw ValidationError("the key set has no audit key (tier \"audit\")") }
            let log = try AuditLogFile(path: self.store)
            var notes = try log.checkpoints().map(\.note)
            if let path = self.fromCheckpoint {
                guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read '\(path)'") }
                notes.append(String(decoding: data, as: UTF8.self))
            }
            let total = try log.entryCount()
            do {
                let report = try AuditVerifier(publicKeys: keys).verify(checkpoints: notes, forEachEntry: { try log.forEachEntry($0) }) { done in
                    FileHandle.standardError.write(Data("verified \(done) of \(total) entries…\n".utf8))
                }
                print("audit log OK: \(report.entries) entries, \(report.checkpoints) signed checkpoints, root \(Data(report.root).base64EncodedString())")
            } catch let problem as AuditVerifier.Problem {
                FileHandle.standardError.write(Data("audit log NOT OK \(problem)\n".utf8))
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
