import CPKCS11
@_spi(Testing) import PKCS11
import Synchronization

/// A PKCS#11 module whose `C_Sign` fails or hangs on demand: the real module's function list with one entry
/// replaced. The token, its keys and every other function are real.
///
/// C function pointers cannot capture context, so the fault is process-wide: tests that inject faults
/// belong to one serialized suite.
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
    nonisolated(unsafe) private static var realSign: CK_C_Sign?

    public static func set(_ fault: Fault) {
        self.fault.withLock { $0 = fault }
    }

    /// How many times `C_Sign` was called through the wrapper.
    public static var signCalls: Int { self.calls.load(ordering: .relaxed) }

    /// A module that calls through the wrapped function list. Made once; later calls return the same one.
    public static func module(wrapping module: PKCS11Module) -> PKCS11Module {
        wrapped.withLock { wrapped in
            if let existing = wrapped { return existing }
            let list = UnsafeMutablePointer<CK_FUNCTION_LIST>.allocate(capacity: 1)
            list.initialize(to: module.functionList.pointee)
            self.realSign = list.pointee.C_Sign
            list.pointee.C_Sign = { session, data, length, signature, signatureLength in
                FaultInjection.calls.wrappingAdd(1, ordering: .relaxed)
                let fault = FaultInjection.fault.withLock { $0 }
                if case .hang(let gate) = fault {
                    gate.wait()
                }
                let rv = FaultInjection.realSign!(session, data, length, signature, signatureLength)
                if case .fail(let code) = fault {
                    return CK_RV(code.rawValue)
                }
                return rv
            }
            let faulty = PKCS11Module.wrapping(module, functions: list)
            wrapped = faulty
            return faulty
        }
    }

    private static let wrapped = Mutex<PKCS11Module?>(nil)
}
