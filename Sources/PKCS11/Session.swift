import CPKCS11
import Synchronization

/// A logged-in session on a token, lent to one task at a time by a ``PKCS11SessionPool``.
///
/// The type is non-copyable and only ever borrowed, so it cannot outlive the pool's lease. Its methods
/// block on the token; the pool runs them on its thread pool.
public struct PKCS11Session: ~Copyable {
    /// The token the session is on.
    public let token: PKCS11Token
    /// The session's handle; valid until the session is closed or the module is re-initialized.
    public let handle: SessionHandle

    /// Wraps an open session. Prefer ``PKCS11SessionPool/withSession(_:)``, which also logs in.
    public init(token: PKCS11Token, handle: SessionHandle) {
        self.token = token
        self.handle = handle
    }

    var module: PKCS11Module { self.token.module }
    var rawHandle: CK_SESSION_HANDLE { CK_SESSION_HANDLE(self.handle.rawValue) }

    /// Logs the application in as the normal user (`C_Login`); already being logged in is fine.
    ///
    /// Login belongs to the application: one successful login covers every session on the token until
    /// the last one closes.
    /// - Throws: ``PKCS11Error``, e.g. `C_Login failed: CKR_PIN_INCORRECT (0xA0)`.
    public func login(_ pin: PIN) throws {
        let login = try self.module.function("C_Login", \.C_Login)
        let rv = pin.withUnsafeBytes { bytes in
            self.module.objectStoreLock.withReadLock {
                // C_Login takes a non-const pointer but does not write through it.
                login(
                    self.rawHandle, CK_USER_TYPE(CKU_USER), UnsafeMutablePointer(mutating: bytes.bindMemory(to: UInt8.self).baseAddress), CK_ULONG(bytes.count))
            }
        }
        switch ReturnCode(rawValue: rv) {
        case .ok, .userAlreadyLoggedIn: return
        case let code: throw PKCS11Error(function: "C_Login", code: code)
        }
    }

    // MARK: Objects

    /// Every object that matches `template` (`C_FindObjectsInit` / `C_FindObjects` / `C_FindObjectsFinal`).
    public func findObjects(matching template: Template) throws -> [ObjectHandle] {
        let findInit = try self.module.function("C_FindObjectsInit", \.C_FindObjectsInit)
        let find = try self.module.function("C_FindObjects", \.C_FindObjects)
        let findFinal = try self.module.function("C_FindObjectsFinal", \.C_FindObjectsFinal)
        try template.withUnsafeAttributes { attributes, count in
            // Searching re-reads SoftHSM's object store: it shares the object-store lock with creation.
            try PKCS11Error.check("C_FindObjectsInit", self.module.objectStoreLock.withReadLock { findInit(self.rawHandle, attributes, count) })
        }
        // A search left open blocks the next one on this session, so it is always finished.
        defer { _ = self.module.objectStoreLock.withReadLock { findFinal(self.rawHandle) } }
        var found: [ObjectHandle] = []
        var batch = [CK_OBJECT_HANDLE](repeating: 0, count: 32)
        while true {
            var returned: CK_ULONG = 0
            let rv = self.module.objectStoreLock.withReadLock { find(self.rawHandle, &batch, CK_ULONG(batch.count), &returned) }
            try PKCS11Error.check("C_FindObjects", rv)
            found.append(contentsOf: batch.prefix(Int(returned)).map { ObjectHandle(rawValue: UInt($0)) })
            if returned < batch.count { return found }
        }
    }

    /// The one key of `objectClass` with this label and/or id.
    ///
    /// - Throws: ``KeyError`` when none or several match.
    public func findKey(_ objectClass: ObjectClass, label: String? = nil, id: [UInt8]? = nil) throws -> ObjectHandle {
        var template: Template = [.objectClass(objectClass)]
        if let label { template.append(.string(.label, label)) }
        if let id { template.append(.bytes(.id, id)) }
        let found = try self.findObjects(matching: template)
        let described = [label.map { "label '\($0)'" }, id.map { "id \(hex($0))" }].compactMap { $0 }.joined(separator: " and ")
        switch found.count {
        case 1: return found[0]
        case 0: throw KeyError(code: .keyNotFound, reason: "no \(objectClass.name) with \(described) on token '\(self.token.info.label)'")
        default:
            throw KeyError(
                code: .ambiguousKey, reason: "\(found.count) objects of class \(objectClass.name) with \(described) on token '\(self.token.info.label)'")
        }
    }

    /// Destroys an object on the token (`C_DestroyObject`).
    public func destroyObject(_ object: ObjectHandle) throws {
        let destroy = try self.module.function("C_DestroyObject", \.C_DestroyObject)
        try PKCS11Error.check("C_DestroyObject", self.module.objectStoreLock.withWriteLock { destroy(self.rawHandle, CK_OBJECT_HANDLE(object.rawValue)) })
    }

    // MARK: Attributes

    /// Reads one attribute's bytes (`C_GetAttributeValue`, sized first, then read).
    ///
    /// - Throws: ``PKCS11Error`` with `CKR_ATTRIBUTE_SENSITIVE` for a sensitive or unextractable value,
    ///   `CKR_ATTRIBUTE_TYPE_INVALID` when the object has no such attribute.
    public func attribute(_ type: AttributeType, of object: ObjectHandle) throws -> [UInt8] {
        let getValue = try self.module.function("C_GetAttributeValue", \.C_GetAttributeValue)
        var attribute = CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(type.rawValue), pValue: nil, ulValueLen: 0)
        let sized = self.module.objectStoreLock.withReadLock { getValue(self.rawHandle, CK_OBJECT_HANDLE(object.rawValue), &attribute, 1) }
        try PKCS11Error.check("C_GetAttributeValue", sized)
        // Some modules report CKR_OK with CK_UNAVAILABLE_INFORMATION instead of an error code.
        if attribute.ulValueLen == CountersignCKUnavailableInformation {
            throw PKCS11Error(function: "C_GetAttributeValue", code: .attributeSensitive)
        }
        var value = [UInt8](repeating: 0, count: Int(attribute.ulValueLen))
        try value.withUnsafeMutableBytes { buffer in
            attribute.pValue = buffer.baseAddress
            defer { attribute.pValue = nil }
            let rv = self.module.objectStoreLock.withReadLock { getValue(self.rawHandle, CK_OBJECT_HANDLE(object.rawValue), &attribute, 1) }
            try PKCS11Error.check("C_GetAttributeValue", rv)
        }
        return Array(value.prefix(Int(attribute.ulValueLen)))
    }

    /// Reads a `CK_BBOOL` attribute.
    public func boolAttribute(_ type: AttributeType, of object: ObjectHandle) throws -> Bool {
        let bytes = try self.attribute(type, of: object)
        return bytes.contains { $0 != 0 }
    }

    // MARK: Random

    /// Bytes from the token's random number generator (`C_GenerateRandom`).
    public func generateRandom(count: Int) throws -> [UInt8] {
        let generate = try self.module.function("C_GenerateRandom", \.C_GenerateRandom)
        var bytes = [UInt8](repeating: 0, count: count)
        let rv = self.module.objectStoreLock.withReadLock { generate(self.rawHandle, &bytes, CK_ULONG(count)) }
        try PKCS11Error.check("C_GenerateRandom", rv)
        return bytes
    }
}

extension ObjectClass {
    var name: String {
        switch self {
        case .publicKey: "public key"
        case .privateKey: "private key"
        case .secretKey: "secret key"
        default: "object class 0x" + String(self.rawValue, radix: 16)
        }
    }
}

func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}
