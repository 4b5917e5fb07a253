import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing
import Wire

@Suite("Frame codec")
struct FrameCodecTests {
    static func frame(_ type: MessageType, _ id: UInt32, _ body: String) -> Frame {
        Frame(type: type, requestID: id, body: ByteBuffer(string: body))
    }

    static func bytes(_ frames: [Frame]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for frame in frames { frame.write(to: &buffer) }
        return buffer
    }

    @Test("frames decode whole, split at every byte, and many to one read (ByteToMessageDecoderVerifier)")
    func verifier() throws {
        let frames = [
            Self.frame(.ping, 7, "{}"),
            Self.frame(.authorize, 0xFFFF_FFFF, #"{"amount":1250}"#),
            Self.frame(.getKeys, 0, ""),
            Self.frame(MessageType(rawValue: 0x55), 3, String(repeating: "x", count: 1000)),
        ]
        let pairs = frames.map { (Self.bytes([$0]), [$0]) } + [(Self.bytes(frames), frames)]
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { FrameDecoder() }
    }

    @Test("a frame delivered one byte at a time decodes once, at its last byte")
    func byteAtATime() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        let frame = Self.frame(.hello, 1, #"{"principal":"agent-7"}"#)
        let bytes = Self.bytes([frame])
        for index in 0..<bytes.readableBytes {
            #expect(try channel.readInbound(as: Frame.self) == nil)
            try channel.writeInbound(bytes.getSlice(at: index, length: 1)!)
        }
        #expect(try channel.readInbound(as: Frame.self) == frame)
        #expect(try channel.finish().isClean)
    }

    @Test("a length of 2^32-1 is refused from the length field alone")
    func hugeLength() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32.max)
        buffer.writeBytes([1, 0x10])  // nothing else follows: the decoder must not wait for 4 GiB
        let error = #expect(throws: WireError.self) { try channel.writeInbound(buffer) }
        #expect(error?.code == .frameTooLarge)
        #expect(error?.message == "the frame announces 4294967295 bytes; the limit is 65536")
        #expect(error?.closesConnection == true)
        _ = try? channel.finish()
    }

    @Test("the limit is the length field's value: the maximum passes, one more is refused")
    func limitBoundary() throws {
        let maximum = 1024
        let atLimit = Self.frame(.ping, 1, String(repeating: " ", count: maximum - WireProtocol.headerLength))
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maximumFrameLength: maximum)))
        try channel.writeInbound(Self.bytes([atLimit]))
        #expect(try channel.readInbound(as: Frame.self) == atLimit)
        let overLimit = Self.frame(.ping, 2, String(repeating: " ", count: maximum - WireProtocol.headerLength + 1))
        let error = #expect(throws: WireError.self) { try channel.writeInbound(Self.bytes([overLimit])) }
        #expect(error?.code == .frameTooLarge)
        _ = try? channel.finish()
    }

    @Test("a length below the header is MALFORMED_FRAME")
    func tooShort() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(5))
        buffer.writeBytes([1, 2, 3, 4, 5])
        let error = #expect(throws: WireError.self) { try channel.writeInbound(buffer) }
        #expect(error?.code == .malformedFrame)
        _ = try? channel.finish()
    }

    @Test("a connection that ends inside a frame is TRUNCATED_FRAME")
    func truncated() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        let bytes = Self.bytes([Self.frame(.ping, 9, "{}")])
        try channel.writeInbound(bytes.getSlice(at: 0, length: bytes.readableBytes - 1)!)
        let error = #expect(throws: WireError.self) { _ = try channel.finish() }
        #expect(error?.code == .truncatedFrame)
    }

    @Test("the encoder writes what the decoder reads")
    func roundTrip() throws {
        let channel = EmbeddedChannel(handlers: [MessageToByteHandler(FrameEncoder())])
        let frame = Self.frame(.authorize, 42, #"{"a":1}"#)
        try channel.writeOutbound(frame)
        let written = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(written == Self.bytes([frame]))
        var copy = written
        var decoder = FrameDecoder()
        #expect(try decoder.decodeFrame(from: &copy) == frame)
        #expect(try channel.finish().isClean)
    }

    @Test("a wrong version and an unknown type are carried to the server, which answers them")
    func versionAndTypeAreData() throws {
        let odd = Frame(version: 9, type: MessageType(rawValue: 0x5E), requestID: 5, body: ByteBuffer(string: "{}"))
        var buffer = Self.bytes([odd])
        var decoder = FrameDecoder()
        #expect(try decoder.decodeFrame(from: &buffer) == odd)
        #expect(MessageType(rawValue: 0x5E).name == nil)
        #expect(MessageType.authorize.response.name == "AUTHORIZE_RESPONSE")
    }
}
