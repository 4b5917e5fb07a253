import CPKCS11
@_spi(Testing) import PKCS11
import Synchronization

/// A PKCS#11 module whose `C_Sign` fails or hangs on demand, and whose token can be "lost" until the module is
/// re-initialized: the real module's function list with a few entries replaced. The token, its keys and every
/// other function are real.
///
/// `C_Finalize` and `C_Initialize` are never passed to the real module (other tests in the process use it):
/// they are counted, and they end a loss. C function pointers cannot capture context, so the faults are
/// process-wide: tests that inject faults belong to one serialized suite.
public enum FaultInjection {
    public enum Fault: Sendable {
        /// `C_Sign` works.
        case none
        /// `C_Sign` returns this code (after letting the real call finish, so the session stays clean).
        case fail(ReturnCode)
        /// `C_Sign` blocks until the gate opens, as a token that stopped answering.
        case hang(Gate)
    }

    private static let fault = Mutex<Fault>(.none)
    private static let calls = Atomic<Int>(0)
    private static let finalizations = Atomic<Int>(0)
    /// While lost: whether the token's objects are hidden, and how many `C_Initialize` calls still fail.
    private static let loss = Mutex<(isLost: Bool, failingInitializations: Int)>((false, 0))
    nonisolated(unsafe) private static var realSign: CK_C_Sign?
    nonisolated(unsafe) private static var realFindObjects: CK_C_FindObjects?
    private static let login = Mutex<ReturnCode?>(nil)
    private static let logins = Atomic<Int>(0)

    /// How many times `C_Login` was called through the wrapper.
    public static var loginCalls: Int { self.logins.load(ordering: .relaxed) }
    nonisolated(unsafe) private static var realLogin: CK_C_Login?

    /// From now on `C_Login` answers `code` (as after the PIN was changed on the token); `nil` ends that.
    public static func failLogin(with code: ReturnCode?) {
        self.login.withLock { $0 = code }
    }

    public static func set(_ fault: Fault) {
        self.fault.withLock { $0 = fault }
    }

    /// Loses the token as SoftHSM does when its directory goes away and comes back: searches find nothing and
    /// `C_Sign` says the key handle is invalid, until the module is finalized and initialized again. The
    /// first `failingInitializations` calls of `C_Initialize` after the loss fail with `CKR_DEVICE_ERROR`
    /// (the token is still away).
    public static func loseToken(failingInitializations: Int = 0) {
        self.loss.withLock { $0 = (true, failingInitializations) }
    }

    /// Ends a loss without a re-initialization, and any failing initializations left.
    public static func restoreToken() {
        self.loss.withLock { $0 = (false, 0) }
    }

    public static var isTokenLost: Bool { self.loss.withLock { $0.isLost } }

    /// How many times `C_Finalize` was called through the wrapper.
    public static var finalizeCalls: Int { self.finalizations.load(ordering: .relaxed) }

    /// How many times `C_Sign` was called through the wrapper.
    public static var signCalls: Int { self.calls.load(ordering: .relaxed) }

    /// A module that calls through the wrapped function list. Made once; later calls return the same one.
    public static func module(wrapping module: PKCS11Module) -> PKCS11Module {
        wrapped.withLock { wrapped in
            if let existing = wrapped { return existing }
            let list = UnsafeMutablePointer<CK_FUNCTION_LIST>.allocate(capacity: 1)
            list.initialize(to: module.functionList.pointee)
            self.realSign = list.pointee.C_Sign
            self.realFindObjects = list.pointee.C_FindObjects
            list.pointee.C_Sign = { session, data, length, signature, signatureLength in
                FaultInjection.calls.wrappingAdd(1, ordering: .relaxed)
                let fault = FaultInjection.fault.withLock { $0 }
                if case .hang(let gate) = fault {
                    gate.wait()
                }
                let rv = FaultInjection.realSign!(session, data, length, signature, signatureLength)
                if FaultInjection.isTokenLost {
                    return CK_RV(CKR_KEY_HANDLE_INVALID)
                }
                if case .fail(let code) = fault {
                    return CK_RV(code.rawValue)
                }
                return rv
            }
            list.pointee.C_FindObjects = { session, objects, maximum, count in
                let rv = FaultInjection.realFindObjects!(session, objects, maximum, count)
                if rv == CK_RV(CKR_OK), FaultInjection.isTokenLost { count?.pointee = 0 }
                return rv
            }
            self.realLogin = list.pointee.C_Login
            list.pointee.C_Login = { session, user, pin, length in
                FaultInjection.logins.wrappingAdd(1, ordering: .relaxed)
                if let code = FaultInjection.login.withLock({ $0 }) { return CK_RV(code.rawValue) }
                return FaultInjection.realLogin!(session, user, pin, length)
            }
            list.pointee.C_Finalize = { _ in
                FaultInjection.finalizations.wrappingAdd(1, ordering: .relaxed)
                return CK_RV(CKR_OK)
            }
            list.pointee.C_Initialize = { _ in
                FaultInjection.loss.withLock { loss in
                    guard loss.isLost else { return CK_RV(CKR_OK) }
                    if loss.failingInitializations > 0 {
                        loss.failingInitializations -= 1
                        return CK_RV(CKR_DEVICE_ERROR)
                    }
                    loss.isLost = false
                    return CK_RV(CKR_OK)
                }
            }
            let faulty = PKCS11Module.wrapping(module, functions: list)
            wrapped = faulty
            return faulty
        }
    }

    private static let wrapped = Mutex<PKCS11Module?>(nil)
}
