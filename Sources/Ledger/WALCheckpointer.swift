import GRDB
import Synchronization

/// Copies the write-ahead log back into the database file with as little of it as possible in the way of
/// commits.
///
/// SQLite's automatic checkpoint runs inside the commit that passes its threshold: that commit, and every
/// answer waiting on it, also waits for the pages to be copied and the database file to be synced. A
/// checkpoint on another connection copies concurrently with commits, but cannot by itself let the WAL
/// start over: that needs a moment when every committed frame has been copied, and under load the writer
/// keeps adding frames. So there are three parts:
///
/// - after every `backgroundInterval` transactions, a passive checkpoint on a connection of its own copies
///   the bulk, beside the writer;
/// - when the group committer finds nothing waiting (at most every `topUpInterval` transactions), it copies
///   the few frames left on the writer itself, so the WAL starts over from its beginning (measured: the p99
///   at half load went from 40 ms, with the WAL growing to the backstop, to 5–12 ms);
/// - the writer's own automatic checkpoint stays as a backstop (`backstopPages`) for a load that never
///   leaves the committer idle.
final class WALCheckpointer: Sendable {
    /// Pages the WAL may reach before a commit checkpoints it itself.
    static let backstopPages = 4_000

    private struct State {
        var sinceBackground = 0
        var sinceTopUp = 0
        var running = false
        var completed = 0
    }

    private let connection: DatabaseQueue
    private let backgroundInterval: Int
    private let topUpInterval: Int
    private let state = Mutex(State())

    init(path: String, backgroundInterval: Int = 200, topUpInterval: Int = 10) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        // The checkpoint syncs the WAL before copying it and the database file before the WAL may be reused.
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        self.connection = try DatabaseQueue(path: path, configuration: configuration)
        self.backgroundInterval = backgroundInterval
        self.topUpInterval = topUpInterval
    }

    /// Counts a committed transaction; starts a background checkpoint when enough have passed and none is
    /// running.
    func committed() {
        let start = self.state.withLock { state -> Bool in
            state.sinceBackground += 1
            state.sinceTopUp += 1
            guard state.sinceBackground >= self.backgroundInterval, !state.running else { return false }
            state.sinceBackground = 0
            state.running = true
            return true
        }
        guard start else { return }
        Task {
            // A failed checkpoint loses nothing: the frames stay in the WAL, and the next commit tries again
            // (the usual failure is SQLITE_BUSY, the writer's top-up running at the same moment).
            let done = (try? await self.connection.writeWithoutTransaction { db in try db.checkpoint(.passive) }) != nil
            self.state.withLock { state in
                state.running = false
                if done {
                    state.completed += 1
                } else {
                    state.sinceBackground = self.backgroundInterval
                }
            }
        }
    }

    /// The committer has nothing waiting: copy what is left, on the writer (`db`), if enough was committed
    /// since the last time.
    func idle(writer db: Database) {
        guard self.state.withLock({ $0.sinceTopUp >= self.topUpInterval }) else { return }
        // A top-up that loses to the background checkpoint (SQLITE_BUSY) is tried again at the next idle moment.
        if (try? db.checkpoint(.passive)) != nil {
            self.state.withLock { state in
                state.sinceTopUp = 0
                state.completed += 1
            }
        }
    }

    /// Whether a background checkpoint is copying pages now.
    var isRunning: Bool { self.state.withLock { $0.running } }

    /// Checkpoints completed, in the background or on the writer.
    var completed: Int { self.state.withLock { $0.completed } }
}
