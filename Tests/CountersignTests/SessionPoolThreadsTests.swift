import Logging
import NIOPosix
import PKCS11
import TestSupport
import Testing

@Suite("The HSM session pool and its threads")
struct SessionPoolThreadsTests {
    @Test(
        "a pool given fewer threads than sessions says so once, with both counts; one given enough says nothing",
        arguments: [(threads: 1, warned: true), (threads: 2, warned: false), (threads: 3, warned: false)]
    )
    func fewerThreadsThanSessions(threads: Int, warned: Bool) async throws {
        let fixture = try SoftHSMFixture.shared()
        let logs = CapturedLogs()
        let threadPool = NIOThreadPool(numberOfThreads: threads)
        threadPool.start()
        let pool = PKCS11SessionPool(
            token: try fixture.token(), pin: fixture.pin(), configuration: .init(maximumSessions: 2),
            threadPool: threadPool, logger: logs.logger(level: .warning))
        #expect(pool.capacity == 2)
        let warnings = logs.all.filter { $0.contains("fewer threads than sessions") }
        if warned {
            #expect(warnings.count == 1)
            #expect(warnings.first?.hasPrefix("warning ") == true)
            #expect(warnings.first?.contains("sessions=2 threads=\(threads)") == true)
        } else {
            #expect(warnings.isEmpty)
        }
        await pool.close()
        try await threadPool.shutdownGracefully()
    }
}
