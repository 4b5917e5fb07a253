import NIOCore

/// Constants of the framed-TCP protocol (see docs/protocol.md).
public enum WireProtocol {
    /// The protocol version this code speaks, carried in every frame.
    public static let version: UInt8 = 1
    /// Version, type and request id: the bytes every frame has after its length.
    public static let headerLength = 6
    /// The default largest value of a frame's length field (64 KiB).
    public static let defaultMaximumFrameLength = 64 * 1024
}

/// A message type. A response's type is its request's type with the high bit set; ``error`` answers anything.
public struct MessageType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let hello = MessageType(rawValue: 0x01)
    public static let auth = MessageType(rawValue: 0x02)
    public static let ping = MessageType(rawValue: 0x10)
    public static let authorize = MessageType(rawValue: 0x11)
    public static let getKeys = MessageType(rawValue: 0x12)
    public static let void = MessageType(rawValue: 0x13)
    public static let fetchAuthorization = MessageType(rawValue: 0x14)
    public static let agentsAdd = MessageType(rawValue: 0x20)
    public static let agentsList = MessageType(rawValue: 0x21)
    public static let agentsRevoke = MessageType(rawValue: 0x22)
    public static let approvalsList = MessageType(rawValue: 0x23)
    public static let approvalsShow = MessageType(rawValue: 0x24)
    public static let approvalsApprove = MessageType(rawValue: 0x25)
    public static let approvalsDeny = MessageType(rawValue: 0x26)
    public static let budgetsShow = MessageType(rawValue: 0x27)
    public static let contextsList = MessageType(rawValue: 0x28)
    public static let contextsSet = MessageType(rawValue: 0x29)
    public static let keysList = MessageType(rawValue: 0x2A)
    public static let keysRotate = MessageType(rawValue: 0x2B)
    public static let keysActivate = MessageType(rawValue: 0x2C)
    public static let keysRetire = MessageType(rawValue: 0x2D)
    public static let keysDestroy = MessageType(rawValue: 0x2E)
    public static let keysAdopt = MessageType(rawValue: 0x2F)
    public static let agentsRotateCredential = MessageType(rawValue: 0x30)
    public static let approversEnroll = MessageType(rawValue: 0x31)
    public static let auditCheckpoint = MessageType(rawValue: 0x40)
    public static let auditProof = MessageType(rawValue: 0x41)
    public static let auditConsistency = MessageType(rawValue: 0x42)
    public static let auditEntries = MessageType(rawValue: 0x43)

    public static let challenge = MessageType.hello.response
    public static let welcome = MessageType.auth.response
    public static let error = MessageType(rawValue: 0x7F)

    /// The type that answers this request.
    public var response: MessageType { MessageType(rawValue: self.rawValue | 0x80) }

    /// Every request type a server understands: those of ``catalog``.
    public static let requests: Set<MessageType> = Set(Self.catalog.map(\.type))

    /// `HELLO`, `AUTHORIZE_RESPONSE`, `ERROR`, …; `nil` for a type that is neither a request, a response, nor ERROR.
    public var name: String? {
        if self == .error { return "ERROR" }
        if let request = Self.descriptors[self] { return request.name }
        if self.rawValue & 0x80 != 0, let request = Self.descriptors[MessageType(rawValue: self.rawValue & 0x7F)] {
            return request.name + "_RESPONSE"
        }
        return nil
    }

    public var description: String {
        let hex = "0x" + String(self.rawValue, radix: 16, uppercase: true)
        return self.name.map { "\($0) (\(hex))" } ?? hex
    }
}

/// One frame: `length (u32 BE) ‖ version (u8) ‖ type (u8) ‖ request id (u32 BE) ‖ UTF-8 JSON body`.
public struct Frame: Sendable, Hashable {
    public var version: UInt8
    public var type: MessageType
    /// Chosen by the client; the response carries it back. Responses may arrive in any order.
    public var requestID: UInt32
    public var body: ByteBuffer

    public init(version: UInt8 = WireProtocol.version, type: MessageType, requestID: UInt32, body: ByteBuffer) {
        self.version = version
        self.type = type
        self.requestID = requestID
        self.body = body
    }
}
