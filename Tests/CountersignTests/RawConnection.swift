import NIOCore
import NIOPosix
import Wire

/// A connection that speaks frames (or any bytes) by hand, to test what a misbehaving client gets.
final class RawConnection {
    private var iterator: NIOAsyncChannelInboundStream<Frame>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

    private init(inbound: NIOAsyncChannelInboundStream<Frame>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
        self.iterator = inbound.makeAsyncIterator()
        self.outbound = outbound
    }

    /// Connects to the server on `port`, runs `body`, and closes.
    static func with<Result>(port: Int, _ body: (RawConnection) async throws -> Result) async throws -> Result {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maximumFrameLength: 1 << 24)))
                    return try NIOAsyncChannel<Frame, ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true)
                    )
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await body(RawConnection(inbound: inbound, outbound: outbound))
        }
    }

    func write(bytes: [UInt8]) async throws {
        try await self.outbound.write(ByteBuffer(bytes: bytes))
    }

    func write(_ frame: Frame) async throws {
        var buffer = ByteBuffer()
        frame.write(to: &buffer)
        try await self.outbound.write(buffer)
    }

    func write<Body: Encodable>(_ type: MessageType, id: UInt32, _ body: Body) async throws {
        try await self.write(Frame(type: type, requestID: id, body: WireJSON.encode(body)))
    }

    /// The next frame from the server, or `nil` once it closed the connection.
    func next() async throws -> Frame? {
        do {
            return try await self.iterator.next()
        } catch is ChannelError {
            return nil
        }
    }

    /// The next frame's error body, or `nil` if the next frame is not an error.
    func nextError() async throws -> WireError? {
        guard let frame = try await self.next(), frame.type == .error else { return nil }
        return try WireJSON.decode(WireError.self, from: frame.body)
    }

    /// Ends what this side sends (TCP half-close); the server can still answer.
    func finishWriting() {
        self.outbound.finish()
    }
}
