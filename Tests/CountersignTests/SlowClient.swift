import CountersignClient
import Foundation
import NIOCore
import Signing
import Synchronization
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// A client on a plain blocking socket that reads its answers slowly while it keeps writing requests: what
/// a busy agent does, and what a server that closes over unread input (sending RST) makes lose answers.
final class SlowClient: @unchecked Sendable {
    private let descriptor: Int32

    init(port: Int) throws {
        self.descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(self.descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ClientError.unreachable(server: "127.0.0.1:\(port)", reason: "connect failed") }
    }

    private let isClosed = Atomic<Bool>(false)

    /// Ends the connection both ways (a FIN, or a reset over unread input) and keeps the descriptor: another
    /// thread still in `send` or `receive` gets an error, not someone else's socket.
    func shutdown() {
        Glibc.shutdown(self.descriptor, Int32(SHUT_RDWR))
    }

    /// Closes the socket with a reset (RST, `SO_LINGER` of 0), as a client that crashed or was killed: the server
    /// sees the connection gone, not half-closed.
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(self.descriptor, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        self.close()
    }

    /// Closes the socket now (without reading what the server sent). Only once no other thread uses it: a closed
    /// descriptor's number is reused by the next socket the process opens (a NIO connection of another test),
    /// and a thread still writing here would write into that connection.
    func close() {
        guard !self.isClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Glibc.close(self.descriptor)
    }

    deinit {
        self.close()
    }

    /// Writes the whole frame; false once the connection refuses writes.
    @discardableResult
    func send(_ frame: Frame) -> Bool {
        var buffer = ByteBuffer()
        frame.write(to: &buffer)
        let bytes = Array(buffer.readableBytesView)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(self.descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { return false }
            sent += count
        }
        return true
    }

    private func read(_ count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = bytes[got...].withUnsafeMutableBytes { recv(self.descriptor, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return nil }
            got += n
        }
        return bytes
    }

    /// The next frame, or nil at the end of the stream (or a reset).
    func receive() -> Frame? {
        guard let header = self.read(4) else { return nil }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard length >= 6, let rest = self.read(length) else { return nil }
        let requestID = UInt32(rest[2]) << 24 | UInt32(rest[3]) << 16 | UInt32(rest[4]) << 8 | UInt32(rest[5])
        return Frame(version: rest[0], type: MessageType(rawValue: rest[1]), requestID: requestID, body: ByteBuffer(bytes: rest[6...]))
    }

    /// HELLO, CHALLENGE, AUTH, WELCOME.
    func handshake(principal: String, key: CredentialPrivateKey) throws {
        self.send(Frame(type: .hello, requestID: 1, body: WireJSON.encode(Hello(principal: principal))))
        guard let frame = self.receive(), let challenge = try? WireJSON.decode(Challenge.self, from: frame.body, allowingUnknownMembers: true),
            let bytes = Base64URL.decode(challenge.challenge)
        else { throw ClientError.unexpectedResponse("no challenge") }
        let transcript = Handshake.transcript(version: WireProtocol.version, principal: principal, challenge: bytes)
        self.send(
            Frame(
                type: .auth, requestID: 2,
                body: WireJSON.encode(Auth(algorithm: key.algorithm, signature: Base64URL.encode(try key.signature(for: transcript))))))
        guard let welcome = self.receive(), welcome.type == .welcome else { throw ClientError.unexpectedResponse("no welcome") }
    }
}
