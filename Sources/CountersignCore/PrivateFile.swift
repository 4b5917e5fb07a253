import Foundation

/// Files only their owner may read (mode 0600), written whole and synced to disk before anyone is told they are:
/// credential files, the witness file, a witness's state and its key.
public enum PrivateFile {
    /// Opens `path` with `flags`, creating it with mode 0600 if `flags` say so.
    /// - Throws: ``StartupError`` naming the file and the system's reason.
    public static func open(_ path: String, _ flags: Int32) throws(StartupError) -> Int32 {
        let descriptor = Foundation.open(path, flags | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw StartupError("cannot open '\(path)': \(String(cString: strerror(errno)))") }
        return descriptor
    }

    /// Writes `data` whole at the descriptor's position (short writes continued) and syncs it.
    public static func writeSynced(_ data: Data, to descriptor: Int32, path: String) throws(StartupError) {
        let complete = data.withUnsafeBytes { bytes -> Bool in
            var offset = 0
            while offset < bytes.count {
                let written = Foundation.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { return false }
                offset += written
            }
            return true
        }
        guard complete, fsync(descriptor) == 0 else { throw StartupError("cannot write '\(path)': \(String(cString: strerror(errno)))") }
    }

    /// Creates `path` with `data`, refusing to overwrite an existing file.
    public static func create(_ path: String, with data: Data) throws(StartupError) {
        let descriptor = try Self.open(path, O_WRONLY | O_CREAT | O_EXCL)
        defer { close(descriptor) }
        try Self.writeSynced(data, to: descriptor, path: path)
    }

    /// Replaces `path` with `data` atomically: a synced file beside it renamed over it, then the directory synced,
    /// so a crash leaves the old contents or the new, never a mixture.
    public static func replace(_ path: String, with data: Data) throws(StartupError) {
        let temporary = path + ".tmp"
        let descriptor = try Self.open(temporary, O_WRONLY | O_CREAT | O_TRUNC)
        defer { close(descriptor) }
        try Self.writeSynced(data, to: descriptor, path: temporary)
        guard rename(temporary, path) == 0 else { throw StartupError("cannot replace '\(path)': \(String(cString: strerror(errno)))") }
        let parent = (path as NSString).deletingLastPathComponent
        let directory = Foundation.open(parent.isEmpty ? "." : parent, O_RDONLY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
    }
}
