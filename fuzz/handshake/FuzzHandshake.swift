import FuzzReplay
// libFuzzer target for the server's side of the handshake (`ServerHandshake`): any sequence of frames, decoded as
// the server decodes them, fed to the state machine. Built normally, it replays the files of the directories it is
// given. Beyond "no crash": a connection is authenticated only by an accepted signature, every reply answers the
// request id it was sent, and everything but a CHALLENGE or a WELCOME is an error frame.
import NIOCore
import NIOEmbedded
import Signing
import Wire

/// The harness's directory: `agent-1` is accepted when its signature starts with 0x01 (a mutation can find that; it
/// cannot forge a real one), `revoked-1` is revoked, `known-1` is refused, anyone else is unknown.
let verify: @Sendable (String, CredentialAlgorithm, [UInt8], [UInt8]) -> HandshakeVerdict = { principal, _, signature, transcript in
    precondition(transcript.starts(with: Handshake.context), "the transcript does not start with the context")
    switch principal {
    case "agent-1": return signature.first == 0x01 ? .accepted(.agent) : .refused("bad signature")
    case "revoked-1": return .revoked
    case "known-1": return .refused("bad signature")
    default: return .unknownPrincipal
    }
}

func fuzzHandshake(_ bytes: UnsafeRawBufferPointer) {
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maximumFrameLength: 64 * 1024)))
    // The pipeline and the channel hold each other until the channel is finished, whatever happens.
    defer { _ = try? channel.finish() }
    guard (try? channel.writeInbound(ByteBuffer(bytes: bytes))) != nil else { return }
    var handshake = ServerHandshake(challenge: { [UInt8](repeating: 7, count: Handshake.challengeLength) }, verify: verify)
    while let frame = try? channel.readInbound(as: Frame.self) {
        let wasAuthenticated: Bool = if case .authenticated = handshake.state { true } else { false }
        let step = handshake.receive(frame)
        precondition(step.reply.requestID == frame.requestID, "a reply to another request id")
        switch step.reply.type {
        case .challenge: precondition(step.event == .challenged)
        case .welcome: precondition(frame.type == .auth && !wasAuthenticated)
        default: precondition(step.reply.type == .error, "a reply that is neither a challenge, a welcome nor an error")
        }
        if case .authenticated(let principal) = handshake.state, !wasAuthenticated {
            precondition(
                principal == "agent-1" && step.event == .authenticated(principal: principal, role: .agent), "authenticated without an accepted signature")
        }
        if step.closes { break }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzHandshake(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if FUZZING
@_cdecl("fuzz_handshake_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc: argc, argv: argv, testOneInput)
}
#else
@main
struct Replay {
    static func main() throws {
        try replay(CommandLine.arguments.dropFirst(), fuzzHandshake)
    }
}
#endif
