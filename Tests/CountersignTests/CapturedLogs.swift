import Logging
import Synchronization

/// What a test server logged, line by line, for tests of what an operator reads.
final class CapturedLogs: Sendable {
    private let lines = Mutex<[String]>([])

    func append(_ line: String) {
        self.lines.withLock { $0.append(line) }
    }

    var all: [String] { self.lines.withLock { $0 } }

    /// A logger at `level` whose lines land here: `level message key=value …`, metadata sorted.
    func logger(level: Logger.Level = .info) -> Logger {
        var logger = Logger(label: "countersign.test") { _ in Handler(logs: self) }
        logger.logLevel = level
        return logger
    }

    struct Handler: LogHandler {
        let logs: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.metadata[key] }
            set { self.metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            self.logs.append("\(event.level) \(event.message) \(fields)")
        }
    }
}
