import CountersignCore

/// The store refused or failed. A failure of the store itself (`STORE_UNAVAILABLE`, and the codes that stay inside
/// the server) reaches a client as `STORE_UNAVAILABLE` "the store does not answer": its details are for the log.
public struct LedgerError: CountersignError, Hashable {
    public typealias Code = ErrorCode

    public var code: ErrorCode
    public var reason: String

    public init(_ code: ErrorCode, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var wireError: WireError {
        if self.code == .storeUnavailable || self.code.audience == .server {
            return WireError(.storeUnavailable, "the store does not answer")
        }
        return WireError(self.code, self.reason)
    }
}
