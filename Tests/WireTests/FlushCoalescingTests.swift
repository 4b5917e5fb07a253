import NIOCore
import NIOEmbedded
import Testing
import Wire

@Suite("Flush coalescing")
struct FlushCoalescingTests {
    private func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FlushCoalescingHandler())
        return channel
    }

    @Test("answers flushed in one round of the event loop leave together, after it")
    func coalesces() throws {
        let channel = try self.channel()
        defer { _ = try? channel.finish() }
        channel.writeAndFlush(ByteBuffer(string: "one"), promise: nil)
        channel.writeAndFlush(ByteBuffer(string: "two"), promise: nil)
        // Written, not yet flushed: nothing has reached the socket.
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "one"))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "two"))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        // A later round flushes its own writes.
        channel.writeAndFlush(ByteBuffer(string: "three"), promise: nil)
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "three"))
    }

    @Test("a write's promise completes once its flush has run")
    func promises() throws {
        let channel = try self.channel()
        defer { _ = try? channel.finish() }
        let written = channel.writeAndFlush(ByteBuffer(string: "one"))
        channel.embeddedEventLoop.run()
        #expect(throws: Never.self) { try written.wait() }
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "one"))
    }

    @Test("a close flushes what was written first: the last answer is not lost")
    func closeFlushes() throws {
        let channel = try self.channel()
        channel.writeAndFlush(ByteBuffer(string: "last"), promise: nil)
        let closed = channel.close()
        channel.embeddedEventLoop.run()
        try closed.wait()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "last"))
    }
}
