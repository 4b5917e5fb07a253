import NIOCore

/// Defers a flush to the end of the event loop's current round of work. The answers of one group commit are resumed
/// together and each is written with its own flush; deferred, they leave in one `writev` instead of one system call
/// each (with TLS, each is still its own record: NIOSSL encrypts write by write). A close flushes first, so nothing
/// written is left behind; the handler is never removed from a live pipeline.
///
/// The framed server puts it in front of the frame encoder. Netty has this as `FlushConsolidationHandler`;
/// swift-nio and swift-nio-extras do not (docs/architecture.md).
public final class FlushCoalescingHandler: ChannelOutboundHandler, RemovableChannelHandler {
    public typealias OutboundIn = ByteBuffer

    private var flushPending = false

    public init() {}

    public func flush(context: ChannelHandlerContext) {
        guard !self.flushPending else { return }
        self.flushPending = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = bound.value
            handler.flushNow(context: context)
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        self.flushNow(context: context)
        context.close(mode: mode, promise: promise)
    }

    private func flushNow(context: ChannelHandlerContext) {
        guard self.flushPending else { return }
        self.flushPending = false
        context.flush()
    }
}
