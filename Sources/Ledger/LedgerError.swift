import CountersignCore

/// The store refused or failed.
public typealias LedgerError = LayerError<StoreLayer>

/// The store's failures: a failure of the store itself (`STORE_UNAVAILABLE`, and the codes that stay inside the
/// server) reaches a client as `STORE_UNAVAILABLE` "the store does not answer", its details are for the log; a
/// refusal (`PRINCIPAL_EXISTS`, `APPROVAL_CLOSED`, …) as it is.
public enum StoreLayer: ErrorLayer {
    public static func wireError(for error: LedgerError) -> WireError {
        if error.code == .storeUnavailable || error.code.audience == .server {
            return WireError(.storeUnavailable, "the store does not answer")
        }
        return WireError(error.code, error.reason)
    }
}
