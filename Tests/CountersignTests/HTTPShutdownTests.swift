import Foundation
import TestSupport
import Testing

/// The operator's HTTP port at the stop: an idle keep-alive client (a Prometheus scraper between scrapes) must not
/// hold the shutdown.
@Suite("HTTP listener at the stop", .timeLimit(.minutes(1)))
struct HTTPShutdownTests {
    @Test("a keep-alive connection idle between requests is closed at the stop, and the stop completes")
    func idleKeepAliveDoesNotHoldTheStop() async throws {
        let server = try await TestServer.start(.init())
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        // A broken stop fails the test instead of blocking its thread.
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(server.httpPort).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(connected == 0)
        let request = "GET /healthz HTTP/1.1\r\nHost: countersign\r\nConnection: keep-alive\r\n\r\n"
        #expect(request.withCString { write(descriptor, $0, strlen($0)) } == request.utf8.count)
        var buffer = [UInt8](repeating: 0, count: 4096)
        var received: [UInt8] = []
        // The whole answer (its head and its body may come in two reads).
        while !String(decoding: received, as: UTF8.self).hasSuffix("\r\n\r\nok\n") {
            let count = read(descriptor, &buffer, buffer.count)
            guard count > 0 else { break }
            received += buffer.prefix(count)
        }
        let head = String(decoding: received, as: UTF8.self)
        #expect(head.hasPrefix("HTTP/1.1 200"), "\(head)")
        #expect(!head.lowercased().contains("connection: close"), "the connection stays open (HTTP/1.1's default): \(head)")

        // The connection is open and idle; the stop closes it and completes.
        try await server.stop()
        let after = read(descriptor, &buffer, buffer.count)
        #expect(after == 0, "the server closed the idle keep-alive connection (read returned \(after))")
    }
}
