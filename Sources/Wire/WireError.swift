// The wire speaks the one vocabulary: whoever imports Wire sees its codes and WireError (as NIO re-exports NIOCore).
@_exported import CountersignCore

extension WireError {
    public static func frameTooLarge(length: UInt64, maximum: Int) -> WireError {
        WireError(.frameTooLarge, "the frame announces \(length) bytes; the limit is \(maximum)")
    }

    public static func frameTooShort(length: Int) -> WireError {
        WireError(.malformedFrame, "the frame announces \(length) bytes, fewer than the \(WireProtocol.headerLength)-byte header")
    }

    public static func truncatedFrame(expected: Int, received: Int) -> WireError {
        WireError(.truncatedFrame, "the connection ended \(received) bytes into a frame of \(expected)")
    }
}
