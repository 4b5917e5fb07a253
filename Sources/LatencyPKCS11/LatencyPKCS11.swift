import CPKCS11

#if canImport(Glibc)
import Glibc
#endif

// A PKCS#11 module for benchmarks that models a network HSM: every call goes to a real module
// ($COUNTERSIGN_LATENCY_MODULE, SoftHSM2 unless given), and each C_Sign then waits a fixed delay
// ($COUNTERSIGN_LATENCY_MS, 4 ms unless given) without using CPU, as a round trip to a remote token would.
// `make bench` loads it as hsm.module for its "network HSM" scenario (docs/benchmarks.md).
//
// C function pointers cannot capture context, so the real list and the delay are process-wide; they are set once,
// by the first C_GetFunctionList, before any other call.

nonisolated(unsafe) private var realList: UnsafeMutablePointer<CK_FUNCTION_LIST>?
nonisolated(unsafe) private var wrappedList: UnsafeMutablePointer<CK_FUNCTION_LIST>?
nonisolated(unsafe) private var delay = timespec(tv_sec: 0, tv_nsec: 4_000_000)

@_cdecl("C_GetFunctionList")
public func latencyGetFunctionList(_ list: UnsafeMutablePointer<UnsafeMutablePointer<CK_FUNCTION_LIST>?>?) -> CK_RV {
    guard let list else { return CK_RV(CKR_ARGUMENTS_BAD) }
    if let wrappedList {
        list.pointee = wrappedList
        return CK_RV(CKR_OK)
    }
    let path = getenv("COUNTERSIGN_LATENCY_MODULE").map { String(cString: $0) } ?? "/usr/lib/softhsm/libsofthsm2.so"
    if let text = getenv("COUNTERSIGN_LATENCY_MS").map({ String(cString: $0) }), let milliseconds = Double(text), milliseconds >= 0 {
        let nanoseconds = Int(milliseconds * 1_000_000)
        delay = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
    }
    guard let library = dlopen(path, RTLD_NOW | RTLD_LOCAL), let symbol = dlsym(library, "C_GetFunctionList") else {
        return CK_RV(CKR_GENERAL_ERROR)
    }
    var real: UnsafeMutablePointer<CK_FUNCTION_LIST>?
    let rv = unsafeBitCast(symbol, to: CK_C_GetFunctionList.self)(&real)
    guard rv == CKR_OK, let real else { return rv == CKR_OK ? CK_RV(CKR_GENERAL_ERROR) : rv }
    realList = real
    let wrapped = UnsafeMutablePointer<CK_FUNCTION_LIST>.allocate(capacity: 1)
    wrapped.initialize(to: real.pointee)
    wrapped.pointee.C_GetFunctionList = latencyGetFunctionList
    wrapped.pointee.C_Sign = { session, data, length, signature, signatureLength in
        let rv = realList!.pointee.C_Sign(session, data, length, signature, signatureLength)
        // Only a signature made (not the length query, nor a failure) waited for the remote token's answer.
        if rv == CKR_OK, signature != nil {
            var request = delay
            var remaining = timespec()
            while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
        }
        return rv
    }
    wrappedList = wrapped
    list.pointee = wrapped
    return CK_RV(CKR_OK)
}
