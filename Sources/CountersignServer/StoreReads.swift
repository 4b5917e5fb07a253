import CountersignCore

/// Reads from the store for a request: a store's refusal is answered with its own code (``CountersignError``),
/// any other failure as `STORE_UNAVAILABLE`, whose details stay in the log.
func storeRead<T: Sendable>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as any CountersignError {
        throw error.wireError
    } catch {
        throw WireError(.storeUnavailable, "the store does not answer")
    }
}
