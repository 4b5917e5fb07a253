import FuzzReplay
// libFuzzer target for the frame decoder and the strict readers of every request body (`make fuzz`: built with
// -sanitize=fuzzer,address -DFUZZING). Built normally, it replays the files of the directories it is given, which
// is how the tests run the committed corpus.
import NIOCore
import NIOEmbedded
import Wire

/// The first byte picks the size of the chunks the rest arrives in (as TCP may split it); each chunk goes through the
/// decoder in a channel pipeline, and each frame's body through the strict reader of its type.
func fuzzFrames(_ bytes: UnsafeRawBufferPointer) {
    guard let first = bytes.first else { return }
    let chunk = Int(first % 64) + 1
    let maximum = 64 * 1024
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maximumFrameLength: maximum)))
    // The pipeline and the channel hold each other until the channel is finished, whatever happens.
    defer { _ = try? channel.finish() }
    var offset = 1
    reading: while offset < bytes.count {
        let end = min(bytes.count, offset + chunk)
        do {
            try channel.writeInbound(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: bytes[offset..<end])))
        } catch {
            // A frame the decoder refuses (too long, too short): the server answers and closes; so does this.
            break reading
        }
        while let frame = try? channel.readInbound(as: Frame.self) {
            precondition(frame.body.readableBytes + WireProtocol.headerLength <= maximum, "a frame above the limit was let through")
            readBody(frame)
        }
        offset = end
    }
}

/// Reads a body as the server reads the request of its type; refusals are expected, crashes are not.
func readBody(_ frame: Frame) {
    func read<Request: Decodable & ValidatedRequest>(_ type: Request.Type) {
        if let request = try? WireJSON.decode(type, from: frame.body) { try? request.validate() }
    }
    switch frame.type {
    case .hello: read(Hello.self)
    case .authorize: read(AuthorizeRequest.self)
    case .fetchAuthorization: read(FetchAuthorizationRequest.self)
    case .void: read(AuthorizationReference.self)
    case .agentsAdd: read(AgentsAddRequest.self)
    case .agentsRevoke: read(AgentReference.self)
    case .contextsSet: read(ContextsSetRequest.self)
    case .keysRotate: read(KeysRotateRequest.self)
    case .keysActivate, .keysDestroy: read(KeyReference.self)
    case .keysRetire: read(KeysRetireRequest.self)
    case .keysAdopt: read(KeysAdoptRequest.self)
    case .agentsRotateCredential: read(AgentsRotateCredentialRequest.self)
    case .auditProof: read(AuditProofRequest.self)
    case .auditConsistency: read(AuditConsistencyRequest.self)
    case .auditEntries: read(AuditEntriesRequest.self)
    default: _ = try? WireJSON.decode(Empty.self, from: frame.body)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzFrames(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if FUZZING
@_cdecl("fuzz_frames_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc: argc, argv: argv, testOneInput)
}
#else
@main
struct Replay {
    static func main() throws {
        try replay(CommandLine.arguments.dropFirst(), fuzzFrames)
    }
}
#endif
