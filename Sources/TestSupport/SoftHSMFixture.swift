import Foundation
import PKCS11

/// A fresh SoftHSM2 set-up for one test process: a temporary token directory with its own
/// `softhsm2.conf`, tokens made by the project's own `hsm-config/init-token.sh`, and the module loaded
/// with `SOFTHSM2_CONF` pointing there; and a second directory, with a token of its own, for child processes.
///
/// The child processes' token is in a directory the test process's module never reads. SoftHSM 2.6 reads
/// every token of its directory (`C_GetTokenInfo` on each slot, which finding a token by label does), and
/// when another process rewrites a token's files meanwhile, it may find one half written: from then on that
/// token answers `CKR_GENERAL_ERROR` in this process until the module is initialized again (measured: a
/// reader calling `C_GetTokenInfo` in a loop beside `pkcs11-tool` making and deleting keys on another token
/// of the same directory failed for good within seconds; beside failed logins, now and then). A token of its
/// own in the same directory is not enough: every later lookup by label in the test process would fail.
///
/// SoftHSM reads its configuration once, in `C_Initialize`, and `C_Initialize` belongs to the process,
/// so there is one fixture per process: ``shared()``. Tests keep out of each other's way by labelling
/// their keys uniquely (``uniqueLabel(_:)``).
public final class SoftHSMFixture: Sendable {
    /// The token every test signs with; the fixture knows its PIN.
    public static let tokenLabel = "countersign-test"
    /// A second token that nobody logs in to, so a wrong PIN is judged by the token rather than answered
    /// with `CKR_USER_ALREADY_LOGGED_IN`.
    public static let untouchedTokenLabel = "countersign-test-untouched"
    /// The token that child processes (the `countersign` CLI) use, in ``childConfigurationFile``'s directory.
    public static let cliTokenLabel = "countersign-test-cli"
    /// The token of the `countersignd` processes, which their tests make in a directory of their own: SoftHSM's
    /// object store is not safe for two processes creating objects on one token at once.
    public static let daemonTokenLabel = "countersign-test-daemon"

    public let directory: URL
    /// The test process's SoftHSM configuration: the signing token and the untouched one.
    public let configurationFile: URL
    /// The child processes' SoftHSM configuration (``environment(pin:)``): the CLI's token, in another directory.
    public let childConfigurationFile: URL
    public let modulePath: String
    public let module: PKCS11Module
    /// The user PIN of every token, made up per run.
    public let userPIN: String

    public static func shared() throws -> SoftHSMFixture {
        try sharedFixture.get()
    }

    /// The repository's root, found from this file's place in it.
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // TestSupport
        .deletingLastPathComponent()  // Sources
        .deletingLastPathComponent()

    fileprivate init() throws {
        self.modulePath = ProcessInfo.processInfo.environment["COUNTERSIGN_PKCS11_MODULE"] ?? "/usr/lib/softhsm/libsofthsm2.so"
        self.directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("countersign-tests-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))")
        self.userPIN = "test-" + UUID().uuidString.prefix(12)
        let soPIN = "so-" + UUID().uuidString.prefix(12)
        for label in [Self.tokenLabel, Self.untouchedTokenLabel] {
            try Self.initializeTokenBlocking(in: self.directory, label: label, soPIN: soPIN, userPIN: self.userPIN, module: self.modulePath)
        }
        let children = self.directory.appendingPathComponent("children")
        try Self.initializeTokenBlocking(in: children, label: Self.cliTokenLabel, soPIN: soPIN, userPIN: self.userPIN, module: self.modulePath)
        self.configurationFile = self.directory.appendingPathComponent("softhsm2.conf")
        self.childConfigurationFile = children.appendingPathComponent("softhsm2.conf")
        setenv("SOFTHSM2_CONF", self.configurationFile.path, 1)
        self.module = try PKCS11Module.load(path: self.modulePath)
    }

    /// The token the tests sign with.
    public func token() throws -> PKCS11Token {
        try self.module.token(label: Self.tokenLabel)
    }

    public func pin() -> PIN {
        PIN(self.userPIN)
    }

    /// The environment a child process (the `countersign` CLI) needs to reach its token (``cliTokenLabel``).
    public func environment(pin: String? = nil) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = self.childConfigurationFile.path
        environment["COUNTERSIGN_PKCS11_MODULE"] = self.modulePath
        environment["COUNTERSIGN_TOKEN_LABEL"] = Self.cliTokenLabel
        environment["COUNTERSIGN_HSM_PIN"] = pin ?? self.userPIN
        environment["COUNTERSIGN_HSM_PIN_FILE"] = nil
        return environment
    }

    /// Runs `hsm-config/init-token.sh` for one token in `directory`, on a thread of its own: a test must not block
    /// one of Swift's cooperative threads (two on this machine) while a child process runs, since every in-process
    /// server and client of the run needs them.
    @discardableResult
    public static func initializeToken(in directory: URL, label: String, soPIN: String, userPIN: String, module: String) async throws -> ProcessResult {
        let (script, environment) = Self.initTokenCommand(in: directory, label: label, soPIN: soPIN, userPIN: userPIN, module: module)
        return try Self.checked(try await ProcessResult.run(executable: Self.bash, arguments: [script], environment: environment))
    }

    /// The same, blocking the calling thread: only for the fixture's own synchronous set-up, once per process.
    static func initializeTokenBlocking(in directory: URL, label: String, soPIN: String, userPIN: String, module: String) throws {
        let (script, environment) = Self.initTokenCommand(in: directory, label: label, soPIN: soPIN, userPIN: userPIN, module: module)
        _ = try Self.checked(try ProcessResult.runBlocking(executable: Self.bash, arguments: [script], environment: environment))
    }

    private static let bash = URL(fileURLWithPath: "/bin/bash")

    private static func initTokenCommand(
        in directory: URL, label: String, soPIN: String, userPIN: String, module: String
    ) -> (script: String, environment: [String: String]) {
        var environment = ProcessInfo.processInfo.environment
        environment["COUNTERSIGN_HSM_DIR"] = directory.path
        environment["COUNTERSIGN_TOKEN_LABEL"] = label
        environment["COUNTERSIGN_HSM_SO_PIN"] = soPIN
        environment["COUNTERSIGN_HSM_PIN"] = userPIN
        environment["COUNTERSIGN_PKCS11_MODULE"] = module
        return (Self.repositoryRoot.appendingPathComponent("hsm-config/init-token.sh").path, environment)
    }

    private static func checked(_ result: ProcessResult) throws -> ProcessResult {
        guard result.status == 0 else {
            throw FixtureError(reason: "init-token.sh failed with status \(result.status): \(result.standardError)")
        }
        return result
    }

    /// A label no other test in this run uses.
    public static func uniqueLabel(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    }
}

private let sharedFixture = Result { try SoftHSMFixture() }

public struct FixtureError: Error, CustomStringConvertible {
    public var reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String { self.reason }
}

/// A finished child process.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var standardOutput: String
    public var standardError: String

    /// Runs a program to completion and collects its output, blocking the calling thread: only for synchronous
    /// set-up. From async code use ``run(executable:arguments:environment:)``, which never blocks a cooperative
    /// thread (two of them on this machine: a test blocking one while its child talks to an in-process server
    /// starves the server and the child times out).
    public static func runBlocking(executable: URL, arguments: [String], environment: [String: String]) throws -> ProcessResult {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = environment
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read both pipes before waiting so a chatty child never blocks on a full pipe.
        let errorData = ErrorCollector(error.fileHandleForReading)
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return ProcessResult(
            status: process.terminationStatus,
            standardOutput: String(decoding: outputData, as: UTF8.self),
            standardError: String(decoding: errorData.wait(), as: UTF8.self)
        )
    }

    /// Runs a program to completion on a thread of its own, so that an in-process server keeps the cooperative
    /// threads it needs to answer the child.
    public static func run(executable: URL, arguments: [String], environment: [String: String]) async throws -> ProcessResult {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try Self.runBlocking(executable: executable, arguments: arguments, environment: environment) })
            }
        }
    }

    /// The path of an executable product built next to the test bundle, e.g. `countersign`.
    public static func builtProduct(_ name: String) -> URL {
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return testBinary.deletingLastPathComponent().appendingPathComponent(name)
    }
}

/// Reads a pipe to its end on a thread of its own.
private final class ErrorCollector: @unchecked Sendable {
    // @unchecked: `data` is written by the reading thread before `done` is signalled and read only after.
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread {
            self.data = handle.readDataToEndOfFile()
            self.done.signal()
        }
    }

    func wait() -> Data {
        self.done.wait()
        return self.data
    }
}

extension Process {
    /// Waits for the process to exit on a thread of its own, never on a cooperative thread that an in-process
    /// server of another test may need.
    public func exited() async {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                self.waitUntilExit()
                continuation.resume()
            }
        }
    }
}
