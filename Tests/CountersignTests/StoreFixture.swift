import CountersignCore
import Foundation
import Ledger
import Logging
import PostgresLedger
import PostgresNIO
import TestSupport
import Testing

/// The two implementations of `Store`, for tests that run against both.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String { self.rawValue }
}

/// The PostgreSQL that `make test` starts (hsm-config/postgres.sh): `COUNTERSIGN_TEST_POSTGRES` is
/// `host:port/database:user`, the password in `COUNTERSIGN_TEST_POSTGRES_PASSWORD_FILE`. Each test gets a database
/// of its own. Without it a PostgreSQL test is skipped, unless `COUNTERSIGN_REQUIRE_POSTGRES` is set (as by
/// `make test`, so CI): then it fails.
struct PostgresTestServer: Sendable {
    var host: String
    var port: Int
    var database: String
    var user: String
    var passwordFile: String

    static let shared: PostgresTestServer? = {
        let environment = ProcessInfo.processInfo.environment
        guard let address = environment["COUNTERSIGN_TEST_POSTGRES"], let passwordFile = environment["COUNTERSIGN_TEST_POSTGRES_PASSWORD_FILE"] else {
            return nil
        }
        // host:port/database:user
        let hostPort = address.split(separator: "/", maxSplits: 1)
        guard hostPort.count == 2, let colon = hostPort[0].lastIndex(of: ":"), let port = Int(hostPort[0][hostPort[0].index(after: colon)...]) else {
            return nil
        }
        let databaseUser = hostPort[1].split(separator: ":", maxSplits: 1)
        guard databaseUser.count == 2 else { return nil }
        return PostgresTestServer(
            host: String(hostPort[0][..<colon]), port: port, database: String(databaseUser[0]), user: String(databaseUser[1]), passwordFile: passwordFile)
    }()

    static var isRequired: Bool { ProcessInfo.processInfo.environment["COUNTERSIGN_REQUIRE_POSTGRES"] != nil }

    /// The shared server, or `nil` (the test returns) when there is none and none is required.
    static func available() throws -> PostgresTestServer? {
        if let shared { return shared }
        if isRequired { throw FixtureError(reason: "COUNTERSIGN_REQUIRE_POSTGRES is set but COUNTERSIGN_TEST_POSTGRES is not: run the tests with make test") }
        return nil
    }

    func configuration(database: String) -> PostgresStoreConfiguration {
        var configuration = PostgresStoreConfiguration(
            host: self.host, port: self.port, database: database, user: self.user, passwordFile: self.passwordFile, poolSize: 8, tls: .disable)
        configuration.operationTimeout = .seconds(10)
        return configuration
    }

    /// A new, empty database owned by the test user.
    func freshDatabase() async throws -> PostgresStoreConfiguration {
        let name = "cs_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16))"
        let password = String(decoding: FileManager.default.contents(atPath: self.passwordFile) ?? Data(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: self.host, port: self.port, username: self.user, password: password, database: self.database, tls: .disable),
            id: 1, logger: Logger(label: "test")
        )
        do {
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: Logger(label: "test"))
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
        return self.configuration(database: name)
    }

    /// A connection of its own to `database` as the test user (to play another server's part in a transaction).
    func connect(database: String) async throws -> PostgresConnection {
        let password = String(decoding: FileManager.default.contents(atPath: self.passwordFile) ?? Data(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return try await PostgresConnection.connect(
            configuration: .init(host: self.host, port: self.port, username: self.user, password: password, database: database, tls: .disable),
            id: 1, logger: Logger(label: "test")
        )
    }

    /// Runs SQL on `database` as the test user (to tamper with a store, or look inside it).
    func execute(_ sql: String, database: String) async throws {
        _ = try await self.integers(sql, database: database)
    }

    /// The first column of every row, as integers (`::bigint` in the SQL).
    func integers(_ sql: String, database: String) async throws -> [Int64] {
        let connection = try await self.connect(database: database)
        do {
            var values: [Int64] = []
            let rows = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test"))
            for try await row in rows {
                if let value = try? row.decode(Int64.self) { values.append(value) }
            }
            try await connection.close()
            return values
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

/// A fresh store of either kind: an SQLite file in a temporary directory, or a new PostgreSQL database.
struct StoreFixture: Sendable {
    let kind: StoreKind
    /// The SQLite file, or the PostgreSQL configuration: enough to open the same store again (a restart, a second server).
    let path: String?
    let postgres: PostgresStoreConfiguration?

    /// `nil` when the kind is PostgreSQL and none is running (and none is required).
    static func make(_ kind: StoreKind) async throws -> StoreFixture? {
        switch kind {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("countersign-store-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            return StoreFixture(kind: kind, path: directory.appendingPathComponent("ledger.sqlite").path, postgres: nil)
        case .postgres:
            guard let server = try PostgresTestServer.available() else { return nil }
            return StoreFixture(kind: kind, path: nil, postgres: try await server.freshDatabase())
        }
    }

    /// Opens the store (again): for PostgreSQL, one more server on the same database.
    func open(wallClock: WallClock = .system, time: MonotonicTime = .continuous, lostAfter: Duration? = nil) async throws -> any Store {
        if let path {
            return try LedgerStore(path: path, wallClock: wallClock)
        }
        var configuration = self.postgres!
        if let lostAfter { configuration.lostAfter = lostAfter }
        return try await PostgresStore(configuration: configuration, logger: Logger(label: "store"), wallClock: wallClock, time: time)
    }
}
