/// A PKCS#11 function returned something other than `CKR_OK`.
///
/// Prints as `C_Login failed: CKR_PIN_INCORRECT (0xA0)`.
public struct PKCS11Error: Error, Hashable, Sendable, CustomStringConvertible {
    /// The PKCS#11 function that failed, e.g. `C_Login`.
    public var function: String
    /// What it returned.
    public var code: ReturnCode

    public init(function: String, code: ReturnCode) {
        self.function = function
        self.code = code
    }

    public var description: String {
        "\(self.function) failed: \(self.code)"
    }
}

extension PKCS11Error {
    /// Throws unless `rv` is `CKR_OK`.
    @inlinable
    static func check(_ function: String, _ rv: UInt) throws(PKCS11Error) {
        if rv != 0 {
            throw PKCS11Error(function: function, code: ReturnCode(rawValue: rv))
        }
    }
}

/// A failure with a stable code and a sentence, printed as `CODE: reason` (the swift-certificates habit).
public protocol CodedError: Error, CustomStringConvertible {
    associatedtype Code: RawRepresentable where Code.RawValue == String
    var code: Code { get }
    var reason: String { get }
}

extension CodedError {
    public var description: String {
        "\(self.code.rawValue): \(self.reason)"
    }
}

/// Loading a PKCS#11 module from a file failed before any PKCS#11 function could run.
public struct ModuleLoadError: CodedError, Hashable, Sendable {
    public enum Code: String, Hashable, Sendable {
        /// Nothing exists at the configured path.
        case moduleNotFound = "MODULE_NOT_FOUND"
        /// The file exists but the dynamic loader refused it (not a shared library, wrong architecture, missing dependency).
        case moduleNotLoadable = "MODULE_NOT_LOADABLE"
        /// The file is a shared library without the `C_GetFunctionList` entry point.
        case notAPKCS11Module = "NOT_A_PKCS11_MODULE"
    }

    public var code: Code
    public var path: String
    /// A sentence for people; includes the loader's own message where there is one.
    public var reason: String

}

/// No usable token matched the requested label or serial number.
public struct TokenLookupError: CodedError, Hashable, Sendable {
    public enum Code: String, Hashable, Sendable {
        case tokenNotFound = "TOKEN_NOT_FOUND"
        /// Several tokens carry the label; Countersign refuses to guess which one holds the keys.
        case ambiguousToken = "TOKEN_AMBIGUOUS"
    }

    public var code: Code
    public var reason: String

}

/// The session pool could not hand out a session.
public struct SessionPoolError: CodedError, Hashable, Sendable {
    public enum Code: String, Hashable, Sendable {
        /// Every session stayed busy for the whole acquire timeout.
        case acquireTimeout = "HSM_SESSION_TIMEOUT"
        /// The pool was closed (the server is shutting down).
        case poolClosed = "HSM_POOL_CLOSED"
        /// The token was lost and the module is being re-initialized (see ``RecoveringSessionPool``).
        case recovering = "HSM_RECOVERING"
        /// The token was lost and recovering it stopped (a wrong or locked PIN): only the operator can help.
        case tokenLost = "HSM_TOKEN_LOST"
    }

    public var code: Code
    public var reason: String

}

/// A key on the token is not what Countersign can use, or its material is malformed.
public struct KeyError: CodedError, Hashable, Sendable {
    public enum Code: String, Hashable, Sendable {
        case keyNotFound = "KEY_NOT_FOUND"
        case ambiguousKey = "KEY_AMBIGUOUS"
        case unsupportedCurve = "KEY_UNSUPPORTED_CURVE"
        case malformedPublicKey = "KEY_MALFORMED_PUBLIC_KEY"
        case malformedSignature = "KEY_MALFORMED_SIGNATURE"
        case malformedCiphertext = "KEY_MALFORMED_CIPHERTEXT"
    }

    public var code: Code
    public var reason: String

}
