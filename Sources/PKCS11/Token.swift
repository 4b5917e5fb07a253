import CPKCS11
import Foundation

/// A token found on a module: where it is and what it says about itself.
public struct PKCS11Token: Sendable {
    /// The module the token was found on.
    public let module: PKCS11Module
    /// The slot the token was in when it was found. Modules number slots as they like (SoftHSM2 puts tokens on random slots):
    /// to find the token again, look it up by label or serial number.
    public let slot: SlotID
    /// The token's description of itself when it was found.
    public let info: TokenInfo

    /// The mechanisms the token offers (`C_GetMechanismList`).
    public func mechanisms() throws -> Set<MechanismType> {
        let getList = try self.module.function("C_GetMechanismList", \.C_GetMechanismList)
        var count: CK_ULONG = 0
        var types: [CK_MECHANISM_TYPE] = []
        try self.module.objectStoreLock.withReadLock { () throws(PKCS11Error) in
            try PKCS11Error.check("C_GetMechanismList", getList(CK_SLOT_ID(self.slot.rawValue), nil, &count))
            types = [CK_MECHANISM_TYPE](repeating: 0, count: Int(count))
            try PKCS11Error.check("C_GetMechanismList", getList(CK_SLOT_ID(self.slot.rawValue), &types, &count))
        }
        return Set(types.prefix(Int(count)).map { MechanismType(rawValue: UInt($0)) })
    }

    /// The token's current description (`C_GetTokenInfo`), e.g. for its session counts.
    public func currentInfo() throws -> TokenInfo {
        try self.module.tokenInfo(slot: self.slot)
    }

    /// Opens a read-write session (`C_OpenSession`). Prefer a ``PKCS11SessionPool``.
    public func openSession() throws -> SessionHandle {
        let open = try self.module.function("C_OpenSession", \.C_OpenSession)
        var handle: CK_SESSION_HANDLE = 0
        let flags = CK_FLAGS(CKF_SERIAL_SESSION | CKF_RW_SESSION)
        let rv = self.module.objectStoreLock.withReadLock { open(CK_SLOT_ID(self.slot.rawValue), flags, nil, nil, &handle) }
        try PKCS11Error.check("C_OpenSession", rv)
        return SessionHandle(rawValue: UInt(handle))
    }

    /// Closes a session (`C_CloseSession`). Closing the last session of a token logs the application out.
    public func closeSession(_ handle: SessionHandle) throws {
        let close = try self.module.function("C_CloseSession", \.C_CloseSession)
        // Closing the token's last session logs the application out, which touches every private object.
        try PKCS11Error.check("C_CloseSession", self.module.objectStoreLock.withReadLock { close(CK_SESSION_HANDLE(handle.rawValue)) })
    }
}

/// `C_GetTokenInfo`'s answer.
public struct TokenInfo: Sendable, Hashable {
    /// A session limit as the token reports it.
    public enum SessionLimit: Sendable, Hashable, CustomStringConvertible {
        /// `CK_EFFECTIVELY_INFINITE`: the token sets no limit.
        case unlimited
        /// `CK_UNAVAILABLE_INFORMATION`: the token does not say.
        case unknown
        /// At most this many sessions.
        case limited(Int)

        init(_ value: CK_ULONG) {
            switch value {
            case CK_ULONG(CK_EFFECTIVELY_INFINITE): self = .unlimited
            case CountersignCKUnavailableInformation: self = .unknown
            default: self = .limited(Int(clamping: value))
            }
        }

        /// `unlimited`, `unknown` or the number.
        public var description: String {
            switch self {
            case .unlimited: "unlimited"
            case .unknown: "unknown"
            case .limited(let count): String(count)
            }
        }
    }

    /// The label the token was given when it was initialized (blank padding removed); how Countersign finds its token.
    public var label: String
    /// The token's manufacturer (`manufacturerID`).
    public var manufacturer: String
    /// The token's model.
    public var model: String
    /// The token's serial number (at most 16 characters); tells tokens with the same label apart.
    public var serialNumber: String
    /// `CKF_TOKEN_INITIALIZED`: the token has been initialized; ``PKCS11Module/tokens()`` skips tokens that are not.
    public var isInitialized: Bool
    /// `CKF_LOGIN_REQUIRED`: some cryptographic functions need a logged-in user.
    public var isLoginRequired: Bool
    /// `CKF_USER_PIN_INITIALIZED`: the normal user's PIN has been set.
    public var isUserPINInitialized: Bool
    /// `CKF_PROTECTED_AUTHENTICATION_PATH`: a user can log in without the application passing a PIN (e.g. on a PIN pad).
    public var hasProtectedAuthenticationPath: Bool
    /// `ulMaxSessionCount`: the most sessions one application may have open on the token at once.
    public var maximumSessions: SessionLimit
    /// `ulMaxRwSessionCount`: the most read-write sessions one application may have open at once; it caps
    /// ``PKCS11SessionPool/capacity``.
    public var maximumReadWriteSessions: SessionLimit
    /// The version of the token's hardware (vendor-defined).
    public var hardwareVersion: Version
    /// The version of the token's firmware (vendor-defined).
    public var firmwareVersion: Version

    init(_ info: CK_TOKEN_INFO) {
        self.label = paddedString(info.label)
        self.manufacturer = paddedString(info.manufacturerID)
        self.model = paddedString(info.model)
        self.serialNumber = paddedString(info.serialNumber)
        self.isInitialized = info.flags & CK_FLAGS(CKF_TOKEN_INITIALIZED) != 0
        self.isLoginRequired = info.flags & CK_FLAGS(CKF_LOGIN_REQUIRED) != 0
        self.isUserPINInitialized = info.flags & CK_FLAGS(CKF_USER_PIN_INITIALIZED) != 0
        self.hasProtectedAuthenticationPath = info.flags & CK_FLAGS(CKF_PROTECTED_AUTHENTICATION_PATH) != 0
        self.maximumSessions = SessionLimit(info.ulMaxSessionCount)
        self.maximumReadWriteSessions = SessionLimit(info.ulMaxRwSessionCount)
        self.hardwareVersion = Version(info.hardwareVersion)
        self.firmwareVersion = Version(info.firmwareVersion)
    }
}

extension PKCS11Module {
    /// The slots that hold a token (`C_GetSlotList` with `tokenPresent`).
    public func slotsWithToken() throws -> [SlotID] {
        let getList = try self.function("C_GetSlotList", \.C_GetSlotList)
        var count: CK_ULONG = 0
        // SoftHSM rescans its token directories here, which races a key being created: hence the lock.
        var slots: [CK_SLOT_ID] = []
        try self.objectStoreLock.withReadLock { () throws(PKCS11Error) in
            try PKCS11Error.check("C_GetSlotList", getList(CK_BBOOL(CK_TRUE), nil, &count))
            slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
            try PKCS11Error.check("C_GetSlotList", getList(CK_BBOOL(CK_TRUE), &slots, &count))
        }
        return slots.prefix(Int(count)).map { SlotID(rawValue: UInt($0)) }
    }

    /// What the token in `slot` says about itself (`C_GetTokenInfo`).
    public func tokenInfo(slot: SlotID) throws -> TokenInfo {
        let getInfo = try self.function("C_GetTokenInfo", \.C_GetTokenInfo)
        var info = CK_TOKEN_INFO()
        let rv = self.objectStoreLock.withReadLock { getInfo(CK_SLOT_ID(slot.rawValue), &info) }
        try PKCS11Error.check("C_GetTokenInfo", rv)
        return TokenInfo(info)
    }

    /// Every initialized token on the module.
    public func tokens() throws -> [PKCS11Token] {
        try self.slotsWithToken().compactMap { slot in
            let info = try self.tokenInfo(slot: slot)
            return info.isInitialized ? PKCS11Token(module: self, slot: slot, info: info) : nil
        }
    }

    /// The one initialized token with this label.
    ///
    /// - Throws: ``TokenLookupError`` when no token or several tokens carry the label.
    public func token(label: String) throws -> PKCS11Token {
        try self.uniqueToken(described: "label '\(label)'") { $0.label == label }
    }

    /// The one initialized token with this serial number.
    ///
    /// - Throws: ``TokenLookupError`` when no token or several tokens carry the serial number.
    public func token(serialNumber: String) throws -> PKCS11Token {
        try self.uniqueToken(described: "serial number '\(serialNumber)'") { $0.serialNumber == serialNumber }
    }

    /// SoftHSM finds its tokens through `SOFTHSM2_CONF`; without it, in a system-wide directory where a
    /// project's token is not. The most common reason for "no token" in development, so it is said.
    private var whereTokensAre: String {
        guard self.path.lowercased().contains("softhsm") else { return "" }
        guard let configuration = ProcessInfo.processInfo.environment["SOFTHSM2_CONF"] else {
            return
                "; SOFTHSM2_CONF is not set, so SoftHSM looks in its system-wide token directory (for this project's development token: export SOFTHSM2_CONF=$PWD/.hsm/softhsm2.conf)"
        }
        return "; SoftHSM reads its tokens as \(configuration) says"
    }

    private func uniqueToken(described: String, where matches: (TokenInfo) -> Bool) throws -> PKCS11Token {
        let tokens = try self.tokens()
        let matching = tokens.filter { matches($0.info) }
        switch matching.count {
        case 1:
            return matching[0]
        case 0:
            let labels = tokens.map { "'\($0.info.label)'" }.joined(separator: ", ")
            throw TokenLookupError(
                code: .tokenNotFound,
                reason: "no initialized token with \(described) on module '\(self.path)'"
                    + (tokens.isEmpty ? "; the module has no initialized token" : "; tokens present: \(labels)") + self.whereTokensAre
            )
        default:
            let slots = matching.map(\.slot.description).joined(separator: ", ")
            throw TokenLookupError(
                code: .ambiguousToken,
                reason:
                    "\(matching.count) tokens with \(described) on module '\(self.path)' (slots \(slots)); give each token a unique label or select by serial number"
            )
        }
    }
}
