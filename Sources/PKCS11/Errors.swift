/// A PKCS#11 function returned something other than `CKR_OK`.
///
/// Prints as `C_Login failed: CKR_PIN_INCORRECT (0xA0)`.
public struct PKCS11Error: Error, Hashable, Sendable, CustomStringConvertible {
    /// The PKCS#11 function that failed, e.g. `C_Login`.
    public var function: String
    /// What it returned.
    public var code: ReturnCode

    /// A failure of `function` (e.g. `C_Sign`), which returned `code`.
    public init(function: String, code: ReturnCode) {
        self.function = function
        self.code = code
    }

    /// `<function> failed: <code>`, e.g. `C_Login failed: CKR_PIN_INCORRECT (0xA0)`.
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
    /// The type of ``code``; its raw value is the stable string printed before the colon.
    associatedtype Code: RawRepresentable where Code.RawValue == String
    /// What went wrong, for programs to match on.
    var code: Code { get }
    /// A sentence for people about this failure; match on ``code``, not on it.
    var reason: String { get }
}

extension CodedError {
    /// `CODE: reason`, e.g. `TOKEN_NOT_FOUND: no initialized token with label 'countersign' on module '…'`.
    public var description: String {
        "\(self.code.rawValue): \(self.reason)"
    }
}

/// Loading a PKCS#11 module from a file failed before any PKCS#11 function could run.
public struct ModuleLoadError: CodedError, Hashable, Sendable {
    /// Why the module could not be loaded.
    public enum Code: String, Hashable, Sendable {
        /// Nothing exists at the configured path.
        case moduleNotFound = "MODULE_NOT_FOUND"
        /// The file exists but the dynamic loader refused it (not a shared library, wrong architecture, missing dependency).
        case moduleNotLoadable = "MODULE_NOT_LOADABLE"
        /// The file is a shared library without the `C_GetFunctionList` entry point.
        case notAPKCS11Module = "NOT_A_PKCS11_MODULE"
    }

    /// Why loading failed.
    public var code: Code
    /// The module's path as configured (before symbolic links are resolved).
    public var path: String
    /// A sentence for people; includes the loader's own message where there is one.
    public var reason: String

}

/// No usable token matched the requested label or serial number.
public struct TokenLookupError: CodedError, Hashable, Sendable {
    /// Why no single token could be chosen.
    public enum Code: String, Hashable, Sendable {
        /// No initialized token matched (or, in a recovery, the token with the label now has another serial number).
        case tokenNotFound = "TOKEN_NOT_FOUND"
        /// Several tokens carry the label; Countersign refuses to guess which one holds the keys.
        case ambiguousToken = "TOKEN_AMBIGUOUS"
    }

    /// Why the lookup failed.
    public var code: Code
    /// A sentence for people: what was looked for, on which module, and what was found instead.
    public var reason: String

}

/// The session pool could not hand out a session.
public struct SessionPoolError: CodedError, Hashable, Sendable {
    /// Why the pool refused.
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

    /// Why the pool refused.
    public var code: Code
    /// A sentence for people about the refusal.
    public var reason: String

}

/// A key on the token is not what Countersign can use, or its material is malformed.
public struct KeyError: CodedError, Hashable, Sendable {
    /// What is wrong with the key.
    public enum Code: String, Hashable, Sendable {
        /// No key of the class looked for carries the label or id.
        case keyNotFound = "KEY_NOT_FOUND"
        /// Several keys of the class looked for carry the label or id.
        case ambiguousKey = "KEY_AMBIGUOUS"
        /// The EC key is not on P-256 (its `CKA_EC_PARAMS` differ).
        case unsupportedCurve = "KEY_UNSUPPORTED_CURVE"
        /// `CKA_EC_POINT` is not an uncompressed P-256 point, or the point is not on the curve.
        case malformedPublicKey = "KEY_MALFORMED_PUBLIC_KEY"
        /// The token returned something other than a 64-byte P-256 ECDSA signature `r‖s`.
        case malformedSignature = "KEY_MALFORMED_SIGNATURE"
        /// Sealed data is too short to hold a GCM nonce and tag.
        case malformedCiphertext = "KEY_MALFORMED_CIPHERTEXT"
    }

    /// What is wrong with the key.
    public var code: Code
    /// A sentence for people: which key, where known, and what was found.
    public var reason: String

}
