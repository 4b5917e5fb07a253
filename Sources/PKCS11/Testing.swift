import CPKCS11

extension PKCS11Module {
    /// A module that calls through `functions` instead of the loaded library's own list, for tests that
    /// inject faults. The result shares `module`'s path and its object-store lock (both reach the same
    /// library); it never finalizes (the original owns that).
    @_spi(Testing)
    public static func wrapping(_ module: PKCS11Module, functions: UnsafeMutablePointer<CK_FUNCTION_LIST>) -> PKCS11Module {
        PKCS11Module(
            path: module.path, canonicalPath: "wrapped:\(module.path)", functions: functions, initializedHere: false,
            objectStoreLock: module.objectStoreLock
        )
    }

    /// The function list this module calls.
    @_spi(Testing)
    public var functionList: UnsafeMutablePointer<CK_FUNCTION_LIST> { self.functions }
}

extension PKCS11Session {
    /// A P-256 key pair whose private half may be extractable or not sensitive: what a careless operator might
    /// make with `pkcs11-tool`, so that tests can show Countersign refuses to adopt it.
    @_spi(Testing)
    public func generateLooseP256KeyPair(label: String, id: [UInt8], sensitive: Bool, extractable: Bool) throws -> KeyPairHandles {
        try self.generateP256KeyPair(label: label, id: id, sensitive: sensitive, extractable: extractable)
    }
}
