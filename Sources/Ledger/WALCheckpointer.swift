import GRDB
import Synchronization

/// Copies the write-ahead log back into the database file beside the writer, not in its way.
///
/// SQLite's automatic checkpoint runs inside the commit that passes its threshold: that commit (and every
/// answer waiting on it) also waits for the pages to be copied and the database file to be synced. Here the
/// writer's threshold is only a backstop, and after every `interval` committed transactions a passive
/// checkpoint runs on a connection of its own, concurrently with the next commits.
final class WALCheckpointer: Sendable {
    /// Pages the WAL may reach before a commit checkpoints it itself (when this one has fallen behind).
    static let backstopPages = 20_000

    private let connection: DatabaseQueue
    private let interval: Int
    /// Transactions since the last checkpoint started, whether one is running, how many completed.
    private let state = Mutex((transactions: 0, running: false, completed: 0))

    init(path: String, interval: Int = 200) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        // The checkpoint syncs the WAL before copying it and the database file before the WAL may be reused.
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        self.connection = try DatabaseQueue(path: path, configuration: configuration)
        self.interval = interval
    }

    /// Counts a committed transaction; starts a checkpoint when enough have passed and none is running.
    func committed() {
        let start = self.state.withLock { state -> Bool in
            state.transactions += 1
            guard state.transactions >= self.interval, !state.running else { return false }
            state.transactions = 0
            state.running = true
            return true
        }
        guard start else { return }
        Task {
            // A failed checkpoint loses nothing: the frames stay in the WAL for the next one.
            let done = (try? await self.connection.writeWithoutTransaction { db in try db.checkpoint(.passive) }) != nil
            self.state.withLock { state in
                state.running = false
                if done { state.completed += 1 }
            }
        }
    }

    /// Checkpoints completed.
    var completed: Int { self.state.withLock { $0.completed } }
}
