import CPKCS11
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A PKCS#11 module (the vendor's shared library), loaded and initialized once per process.
///
/// ``load(path:)`` returns the same instance for the same file however often it is called, because
/// `C_Initialize` belongs to the process, not to a caller. The module is initialized with
/// `CKF_OS_LOCKING_OK`, so it may be called from many threads; a `CKR_CRYPTOKI_ALREADY_INITIALIZED`
/// answer (another library in the process got there first) is accepted, and then ``finalize()`` leaves
/// the module to its owner.
///
/// Every function on this type calls into the module and may block: call it where blocking is fine
/// (start-up, a command-line tool, or a thread pool), never on an event loop.
public final class PKCS11Module: @unchecked Sendable {
    // @unchecked: the stored properties are immutable pointers; the module was initialized with
    // CKF_OS_LOCKING_OK, so the functions behind them may be called concurrently.

    /// The file the module was loaded from, as configured.
    public let path: String
    /// Whether this process's `C_Initialize` call initialized the module.
    public let initializedHere: Bool

    let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
    private let canonicalPath: String
    /// Keeps object creation apart from every other use of the object store (see ``ObjectStoreLock``).
    let objectStoreLock: ObjectStoreLock
    private let isFinalized = Atomic<Bool>(false)
    private let initializations = Atomic<UInt64>(0)

    private static let loaded = Mutex<[String: PKCS11Module]>([:])

    init(
        path: String, canonicalPath: String, functions: UnsafeMutablePointer<CK_FUNCTION_LIST>, initializedHere: Bool,
        objectStoreLock: ObjectStoreLock = ObjectStoreLock()
    ) {
        self.objectStoreLock = objectStoreLock
        self.path = path
        self.canonicalPath = canonicalPath
        self.functions = functions
        self.initializedHere = initializedHere
    }

    /// Loads the module at `path` and initializes it, or returns the instance this process already has.
    ///
    /// - Parameter path: the module's file, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    /// - Returns: the process-wide instance for that file.
    /// - Throws: ``ModuleLoadError`` when the file is missing, cannot be loaded or is not a PKCS#11 module;
    ///   ``PKCS11Error`` when `C_GetFunctionList` or `C_Initialize` fails.
    public static func load(path: String) throws -> PKCS11Module {
        guard let resolved = realpath(path, nil) else {
            throw ModuleLoadError(
                code: .moduleNotFound,
                path: path,
                reason: "no PKCS#11 module at '\(path)'; install the vendor's package (for SoftHSM2: apt-get install softhsm2) or set COUNTERSIGN_PKCS11_MODULE"
            )
        }
        let canonicalPath = String(cString: resolved)
        free(resolved)

        return try Self.loaded.withLock { loaded in
            if let module = loaded[canonicalPath] {
                return module
            }
            let module = try Self.open(path: path, canonicalPath: canonicalPath)
            loaded[canonicalPath] = module
            return module
        }
    }

    private static func open(path: String, canonicalPath: String) throws -> PKCS11Module {
        _ = dlerror()
        guard let library = dlopen(canonicalPath, RTLD_NOW | RTLD_LOCAL) else {
            let loaderMessage = dlerror().map { String(cString: $0) } ?? "unknown reason"
            throw ModuleLoadError(
                code: .moduleNotLoadable,
                path: path,
                reason: "'\(path)' could not be loaded as a shared library: \(loaderMessage)"
            )
        }
        // The library stays loaded for the life of the process: unloading a module whose threads or
        // atexit handlers are still registered crashes at exit, and nothing is gained by it.
        guard let symbol = dlsym(library, "C_GetFunctionList") else {
            dlclose(library)
            throw ModuleLoadError(
                code: .notAPKCS11Module,
                path: path,
                reason: "'\(path)' is a shared library but not a PKCS#11 module: it has no C_GetFunctionList"
            )
        }
        let getFunctionList = unsafeBitCast(symbol, to: CK_C_GetFunctionList.self)
        var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
        try PKCS11Error.check("C_GetFunctionList", getFunctionList(&list))
        guard let list, let initialize = list.pointee.C_Initialize else {
            throw ModuleLoadError(
                code: .notAPKCS11Module,
                path: path,
                reason: "'\(path)' returned no PKCS#11 function list"
            )
        }

        let initializedHere: Bool
        switch Self.initialize(initialize) {
        case .ok: initializedHere = true
        case .cryptokiAlreadyInitialized: initializedHere = false
        case let code: throw PKCS11Error(function: "C_Initialize", code: code)
        }
        return PKCS11Module(path: path, canonicalPath: canonicalPath, functions: list, initializedHere: initializedHere)
    }

    /// `C_Initialize` with OS locking: the module may be called from many threads.
    private static func initialize(_ initialize: CK_C_Initialize) -> ReturnCode {
        var arguments = CK_C_INITIALIZE_ARGS(
            CreateMutex: nil,
            DestroyMutex: nil,
            LockMutex: nil,
            UnlockMutex: nil,
            flags: CK_FLAGS(CKF_OS_LOCKING_OK),
            pReserved: nil
        )
        return ReturnCode(rawValue: withUnsafeMutablePointer(to: &arguments) { initialize(UnsafeMutableRawPointer($0)) })
    }

    /// How many times ``reinitialize()`` has run. Object and session handles belong to one initialization:
    /// whoever caches a handle keeps the epoch it was found in and looks it up again when the epoch moved.
    public var epoch: UInt64 { self.initializations.load(ordering: .acquiring) }

    /// `C_Finalize` then `C_Initialize`: the module forgets every session, handle and login and reads its
    /// slots and tokens afresh.
    ///
    /// Many modules (SoftHSM2 among them, and network HSM clients after the appliance restarts) find a
    /// token that went away and came back only after this. It ends every session of every user of the
    /// module in this process: call it only as the module's one user, after closing every session pool
    /// on it and with no call in flight. Calls on the object store wait while it runs.
    /// - Throws: ``PKCS11Error`` when `C_Initialize` fails; the module is then uninitialized and a later
    ///   call may try again.
    public func reinitialize() throws {
        let finalize = try self.function("C_Finalize", \.C_Finalize)
        let initialize = try self.function("C_Initialize", \.C_Initialize)
        try self.objectStoreLock.withWriteLock { () throws(PKCS11Error) in
            switch ReturnCode(rawValue: finalize(nil)) {
            case .ok, .cryptokiNotInitialized: break  // a failed earlier attempt may have left it finalized
            case let code: throw PKCS11Error(function: "C_Finalize", code: code)
            }
            self.initializations.add(1, ordering: .releasing)
            switch Self.initialize(initialize) {
            case .ok, .cryptokiAlreadyInitialized: return
            case let code: throw PKCS11Error(function: "C_Initialize", code: code)
            }
        }
    }

    /// Calls `C_Finalize` if this process initialized the module; later calls do nothing.
    ///
    /// Close every session pool first. After this, ``load(path:)`` initializes the module afresh.
    /// - Throws: ``PKCS11Error`` when `C_Finalize` fails.
    public func finalize() throws {
        guard !self.isFinalized.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Self.loaded.withLock { loaded in
            if loaded[self.canonicalPath] === self {
                loaded[self.canonicalPath] = nil
            }
        }
        guard self.initializedHere else { return }
        let finalize = try self.function("C_Finalize", \.C_Finalize)
        try PKCS11Error.check("C_Finalize", finalize(nil))
    }

    /// Looks up a function in the module's function list.
    ///
    /// - Throws: ``PKCS11Error`` with `CKR_FUNCTION_NOT_SUPPORTED` when the module leaves the entry empty.
    func function<Function>(
        _ name: String,
        _ entry: KeyPath<CK_FUNCTION_LIST, Function?>
    ) throws(PKCS11Error) -> Function {
        guard let function = self.functions.pointee[keyPath: entry] else {
            throw PKCS11Error(function: name, code: .functionNotSupported)
        }
        return function
    }

    /// What the module says about itself (`C_GetInfo`).
    public func info() throws -> ModuleInfo {
        let getInfo = try self.function("C_GetInfo", \.C_GetInfo)
        var info = CK_INFO()
        try PKCS11Error.check("C_GetInfo", getInfo(&info))
        return ModuleInfo(
            cryptokiVersion: Version(info.cryptokiVersion),
            manufacturer: paddedString(info.manufacturerID),
            libraryDescription: paddedString(info.libraryDescription),
            libraryVersion: Version(info.libraryVersion)
        )
    }
}

/// `C_GetInfo`'s answer.
public struct ModuleInfo: Sendable, Hashable {
    /// The PKCS#11 (Cryptoki) interface version the module implements, e.g. 2.40.
    public var cryptokiVersion: Version
    /// The module's manufacturer (`manufacturerID`), blank padding removed.
    public var manufacturer: String
    /// The module's description of itself (`libraryDescription`), blank padding removed.
    public var libraryDescription: String
    /// The version of the module's library itself, not of the PKCS#11 interface.
    public var libraryVersion: Version
}

/// A `CK_VERSION`.
public struct Version: Sendable, Hashable, CustomStringConvertible {
    /// The part before the dot.
    public var major: UInt8
    /// The hundredths after the dot, as PKCS#11 defines them: 40 in 2.40, 1 in 2.01.
    public var minor: UInt8

    init(_ version: CK_VERSION) {
        self.major = version.major
        self.minor = version.minor
    }

    /// `major.minor` in decimal, e.g. `2.40`. A minor below 10 prints with one digit: version 2.01 (`{2, 1}`) prints as `2.1`.
    public var description: String { "\(self.major).\(self.minor)" }
}

/// Decodes one of PKCS#11's fixed-size, blank-padded character fields.
func paddedString<Field>(_ field: Field) -> String {
    withUnsafeBytes(of: field) { bytes in
        var end = bytes.count
        while end > 0, bytes[end - 1] == 0x20 || bytes[end - 1] == 0 {
            end -= 1
        }
        return String(decoding: bytes[0..<end], as: UTF8.self)
    }
}
