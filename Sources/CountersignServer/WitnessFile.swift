import Audit
import CountersignCore
import Crypto
import Foundation
import Ledger

/// Signed checkpoints kept outside the store: each one the server signs is appended to a file (one JSON line,
/// synced), and at start the store must still extend the last one there. Someone who can rewrite the store
/// can also delete its checkpoint rows; a copy of the last checkpoint elsewhere still shows the rewrite.
///
/// This is a witness that only keeps: it checks consistency at the next start, not when it is handed a
/// checkpoint. The C2SP witness protocol (one that refuses a fork as it happens, on another machine) is
/// described in docs/operations.md as the next step.
struct WitnessFile: Sendable {
    let path: String

    private struct Line: Codable {
        var note: String
    }

    /// Appends `note` and syncs it to disk. A line left torn by a crash is ended first, so it stays one
    /// unreadable line and never swallows the new one.
    func append(_ note: String) throws {
        var line = try JSONEncoder().encode(Line(note: note)) + Data("\n".utf8)
        let descriptor = try PrivateFile.open(self.path, O_RDWR | O_APPEND | O_CREAT)
        defer { close(descriptor) }
        let size = lseek(descriptor, 0, SEEK_END)
        var last: UInt8 = 0
        if size > 0, pread(descriptor, &last, 1, size - 1) == 1, last != UInt8(ascii: "\n") {
            line = Data("\n".utf8) + line
        }
        try PrivateFile.writeSynced(line, to: descriptor, path: self.path)
    }

    /// The last whole checkpoint kept, read from the file's tail (it grows for ever); a torn last line (a
    /// crash, a full disk) is passed over. `nil` when the file does not exist yet.
    /// - Throws: ``StartupError`` when the file exists but cannot be read.
    func last() throws -> String? {
        guard FileManager.default.fileExists(atPath: self.path) else { return nil }
        guard let handle = FileHandle(forReadingAtPath: self.path) else {
            throw StartupError("cannot read the witness file '\(self.path)'")
        }
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: size > 1 << 20 ? size - (1 << 20) : 0)
        let tail = try handle.readToEnd() ?? Data()
        for line in tail.split(separator: UInt8(ascii: "\n")).reversed() {
            if let kept = try? JSONDecoder().decode(Line.self, from: Data(line)) { return kept.note }
        }
        return nil
    }

    /// Refuses a store that does not extend the last checkpoint kept here.
    /// - Throws: ``StartupError`` saying what differs.
    func check(store: any Store, auditKeys: [P256.Signing.PublicKey]) async throws {
        guard let note = try self.last() else { return }
        let problem = "the audit log in the store does not extend the checkpoint kept in the witness file '\(self.path)'"
        guard let kept = try? Checkpoint.parse(note), auditKeys.contains(where: kept.isSigned(by:)) else {
            throw StartupError("\(problem): that checkpoint is not signed by the audit key")
        }
        let size = kept.checkpoint.size
        guard store.auditSize >= size else {
            throw StartupError(
                "\(problem): it holds \(store.auditSize) entries, the kept checkpoint covers \(size): entries were removed or the store was replaced")
        }
        let root = Merkle.root(try await store.auditLeafHashes(size: size)[...])
        guard root == kept.checkpoint.rootHash else {
            throw StartupError("\(problem): its first \(size) entries do not hash to the kept checkpoint's root: the log was rewritten")
        }
    }
}
