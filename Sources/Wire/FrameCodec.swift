import NIOCore

/// Splits a byte stream into ``Frame``s.
///
/// The length field is checked against the maximum before anything else happens: a frame that announces
/// more than the maximum is refused with `FRAME_TOO_LARGE` at once, without waiting for (or buffering) its
/// body, whatever the announced length, up to 2^32-1.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame

    private enum State {
        case waitingForHeader
        case waitingForFrame(length: Int)
    }

    private var state = State.waitingForHeader
    private let maximumFrameLength: Int

    /// - Parameter maximumFrameLength: the largest accepted value of the length field.
    public init(maximumFrameLength: Int = WireProtocol.defaultMaximumFrameLength) {
        precondition(maximumFrameLength >= WireProtocol.headerLength)
        self.maximumFrameLength = maximumFrameLength
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try self.decodeFrame(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while let frame = try self.decodeFrame(from: &buffer) {
            context.fireChannelRead(Self.wrapInboundOut(frame))
        }
        if case .waitingForFrame(let length) = self.state {
            throw WireError.truncatedFrame(expected: length, received: buffer.readableBytes)
        }
        if buffer.readableBytes > 0 {
            throw WireError.truncatedFrame(expected: 4, received: buffer.readableBytes)
        }
        return .needMoreData
    }

    /// Decodes one frame if the buffer holds all of it. Exposed for clients that read without a pipeline.
    public mutating func decodeFrame(from buffer: inout ByteBuffer) throws -> Frame? {
        if case .waitingForHeader = self.state {
            guard let length = buffer.readInteger(as: UInt32.self) else { return nil }
            guard length <= self.maximumFrameLength else {
                throw WireError.frameTooLarge(length: UInt64(length), maximum: self.maximumFrameLength)
            }
            guard length >= WireProtocol.headerLength else {
                throw WireError.frameTooShort(length: Int(length))
            }
            self.state = .waitingForFrame(length: Int(length))
        }
        guard case .waitingForFrame(let length) = self.state, buffer.readableBytes >= length else { return nil }
        let version = buffer.readInteger(as: UInt8.self)!
        let type = buffer.readInteger(as: UInt8.self)!
        let requestID = buffer.readInteger(as: UInt32.self)!
        let body = buffer.readSlice(length: length - WireProtocol.headerLength)!
        self.state = .waitingForHeader
        return Frame(version: version, type: MessageType(rawValue: type), requestID: requestID, body: body)
    }
}

@available(*, unavailable)
extension FrameDecoder: Sendable {}

/// Writes ``Frame``s with their length prefix.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Frame

    public init() {}

    public func encode(data frame: Frame, out: inout ByteBuffer) throws {
        frame.write(to: &out)
    }
}

extension Frame {
    /// Appends the frame's bytes, length prefix first.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(WireProtocol.headerLength + self.body.readableBytes))
        buffer.writeInteger(self.version)
        buffer.writeInteger(self.type.rawValue)
        buffer.writeInteger(self.requestID)
        var body = self.body
        buffer.writeBuffer(&body)
    }
}
