import CPKCS11

/// A PKCS#11 return value (`CK_RV`).
///
/// Known values print with their specification name and hex value, e.g. `CKR_PIN_INCORRECT (0xA0)`;
/// unknown and vendor-defined values keep their hex so an operator can look them up in the vendor's manual.
public struct ReturnCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The numeric `CK_RV` as the module returned it.
    public let rawValue: UInt

    /// Wraps any `CK_RV`, including unknown and vendor-defined (`CKR_VENDOR_DEFINED` and above) values.
    public init(rawValue: UInt) {
        self.rawValue = rawValue
    }

    /// The specification name (`CKR_…`), or `nil` for unknown and vendor-defined values.
    public var name: String? {
        Self.names[self.rawValue]
    }

    /// The name and hex value, e.g. `CKR_PIN_INCORRECT (0xA0)`; unknown and vendor-defined values print as such with their hex value.
    public var description: String {
        let hex = "0x" + String(self.rawValue, radix: 16, uppercase: true)
        if let name = self.name {
            return "\(name) (\(hex))"
        }
        if self.rawValue >= UInt(CountersignCKRVendorDefined) {
            return "vendor-defined return code (\(hex))"
        }
        return "unknown return code (\(hex))"
    }

    /// CKR_OK: the function succeeded.
    public static let ok = ReturnCode(rawValue: UInt(CKR_OK))
    /// CKR_GENERAL_ERROR: an unrecoverable error; the function may have partly succeeded and the token may be in an inconsistent state.
    public static let generalError = ReturnCode(rawValue: UInt(CKR_GENERAL_ERROR))
    /// CKR_FUNCTION_FAILED: the function could not be performed and the module gives no detailed reason; unlike
    /// CKR_GENERAL_ERROR, the situation is not necessarily hopeless.
    public static let functionFailed = ReturnCode(rawValue: UInt(CKR_FUNCTION_FAILED))
    /// CKR_ARGUMENTS_BAD: an argument to the function is inappropriate (a bug in the caller, not a token problem).
    public static let argumentsBad = ReturnCode(rawValue: UInt(CKR_ARGUMENTS_BAD))
    /// CKR_ATTRIBUTE_SENSITIVE: the attribute's value cannot be revealed because the object is sensitive or unextractable.
    public static let attributeSensitive = ReturnCode(rawValue: UInt(CKR_ATTRIBUTE_SENSITIVE))
    /// CKR_ATTRIBUTE_TYPE_INVALID: the template names an attribute type that is invalid (for reading: the object has no such attribute).
    public static let attributeTypeInvalid = ReturnCode(rawValue: UInt(CKR_ATTRIBUTE_TYPE_INVALID))
    /// CKR_DEVICE_ERROR: some problem occurred with the token or its slot.
    public static let deviceError = ReturnCode(rawValue: UInt(CKR_DEVICE_ERROR))
    /// CKR_DEVICE_MEMORY: the token does not have enough memory to perform the function.
    public static let deviceMemory = ReturnCode(rawValue: UInt(CKR_DEVICE_MEMORY))
    /// CKR_DEVICE_REMOVED: the token was removed from its slot while the function ran.
    public static let deviceRemoved = ReturnCode(rawValue: UInt(CKR_DEVICE_REMOVED))
    /// CKR_ENCRYPTED_DATA_INVALID: the input to a decryption is not valid ciphertext; SoftHSM2 also returns it when an AES-GCM
    /// tag does not verify.
    public static let encryptedDataInvalid = ReturnCode(rawValue: UInt(CKR_ENCRYPTED_DATA_INVALID))
    /// CKR_FUNCTION_NOT_SUPPORTED: the module does not implement the function (also reported here when its function list
    /// entry is empty).
    public static let functionNotSupported = ReturnCode(rawValue: UInt(CKR_FUNCTION_NOT_SUPPORTED))
    /// CKR_KEY_FUNCTION_NOT_PERMITTED: the key's attributes do not allow this use, e.g. signing with a key whose `CKA_SIGN` is false.
    public static let keyFunctionNotPermitted = ReturnCode(rawValue: UInt(CKR_KEY_FUNCTION_NOT_PERMITTED))
    /// CKR_KEY_HANDLE_INVALID: the key handle is not valid (e.g. the key was destroyed, or the handle is from before a re-initialization).
    public static let keyHandleInvalid = ReturnCode(rawValue: UInt(CKR_KEY_HANDLE_INVALID))
    /// CKR_KEY_UNEXTRACTABLE: the key cannot be wrapped because its `CKA_EXTRACTABLE` is false.
    public static let keyUnextractable = ReturnCode(rawValue: UInt(CKR_KEY_UNEXTRACTABLE))
    /// CKR_MECHANISM_INVALID: the mechanism is unknown to the token or not supported for this function.
    public static let mechanismInvalid = ReturnCode(rawValue: UInt(CKR_MECHANISM_INVALID))
    /// CKR_OBJECT_HANDLE_INVALID: the object handle is not valid (e.g. the object was destroyed, or the handle is from before a
    /// re-initialization).
    public static let objectHandleInvalid = ReturnCode(rawValue: UInt(CKR_OBJECT_HANDLE_INVALID))
    /// CKR_OPERATION_ACTIVE: an operation already active on the session (e.g. an unfinished search or signature) prevents this one.
    public static let operationActive = ReturnCode(rawValue: UInt(CKR_OPERATION_ACTIVE))
    /// CKR_PIN_INCORRECT: the PIN given to `C_Login` is wrong; repeated attempts may lock the token.
    public static let pinIncorrect = ReturnCode(rawValue: UInt(CKR_PIN_INCORRECT))
    /// CKR_PIN_LOCKED: the PIN is locked (typically after too many wrong attempts); login is impossible until the security officer
    /// unblocks it.
    public static let pinLocked = ReturnCode(rawValue: UInt(CKR_PIN_LOCKED))
    /// CKR_PIN_EXPIRED: the PIN has expired and must be changed (`C_SetPIN`) before the operation can be done.
    public static let pinExpired = ReturnCode(rawValue: UInt(CKR_PIN_EXPIRED))
    /// CKR_PIN_INVALID: the PIN contains characters the token does not accept (the specification reserves it for functions that set a PIN).
    public static let pinInvalid = ReturnCode(rawValue: UInt(CKR_PIN_INVALID))
    /// CKR_PIN_LEN_RANGE: the PIN is too long or too short for the token.
    public static let pinLengthRange = ReturnCode(rawValue: UInt(CKR_PIN_LEN_RANGE))
    /// CKR_SESSION_CLOSED: the session was closed while the function ran.
    public static let sessionClosed = ReturnCode(rawValue: UInt(CKR_SESSION_CLOSED))
    /// CKR_SESSION_COUNT: a session could not be opened because the token has too many sessions open already.
    public static let sessionCount = ReturnCode(rawValue: UInt(CKR_SESSION_COUNT))
    /// CKR_SESSION_HANDLE_INVALID: the session handle was not valid when the function was called (closed, or from before a
    /// re-initialization).
    public static let sessionHandleInvalid = ReturnCode(rawValue: UInt(CKR_SESSION_HANDLE_INVALID))
    /// CKR_SIGNATURE_INVALID: the signature or MAC given for verification is invalid.
    public static let signatureInvalid = ReturnCode(rawValue: UInt(CKR_SIGNATURE_INVALID))
    /// CKR_SLOT_ID_INVALID: the slot ID is not valid (e.g. the slot disappeared when the token was removed).
    public static let slotIDInvalid = ReturnCode(rawValue: UInt(CKR_SLOT_ID_INVALID))
    /// CKR_TEMPLATE_INCONSISTENT: the template for creating or generating an object has conflicting attributes.
    public static let templateInconsistent = ReturnCode(rawValue: UInt(CKR_TEMPLATE_INCONSISTENT))
    /// CKR_TOKEN_NOT_PRESENT: the token was not in its slot when the function was called.
    public static let tokenNotPresent = ReturnCode(rawValue: UInt(CKR_TOKEN_NOT_PRESENT))
    /// CKR_TOKEN_NOT_RECOGNIZED: the module or slot does not recognize the token in the slot.
    public static let tokenNotRecognized = ReturnCode(rawValue: UInt(CKR_TOKEN_NOT_RECOGNIZED))
    /// CKR_USER_ALREADY_LOGGED_IN: `C_Login` was called although the user is already logged in (``PKCS11Session/login(_:)``
    /// accepts it).
    public static let userAlreadyLoggedIn = ReturnCode(rawValue: UInt(CKR_USER_ALREADY_LOGGED_IN))
    /// CKR_USER_NOT_LOGGED_IN: the action needs a logged-in user and none is; tokens forget the login when their last session closes.
    public static let userNotLoggedIn = ReturnCode(rawValue: UInt(CKR_USER_NOT_LOGGED_IN))
    /// CKR_USER_PIN_NOT_INITIALIZED: the normal user's PIN has not been set yet (`C_InitPIN`).
    public static let userPINNotInitialized = ReturnCode(rawValue: UInt(CKR_USER_PIN_NOT_INITIALIZED))
    /// CKR_BUFFER_TOO_SMALL: the output does not fit in the buffer given. A cryptographic operation (e.g. `C_Sign`) stays active
    /// after it: call again with a larger buffer, or starting another such operation on the session fails with CKR_OPERATION_ACTIVE.
    public static let bufferTooSmall = ReturnCode(rawValue: UInt(CKR_BUFFER_TOO_SMALL))
    /// CKR_CRYPTOKI_NOT_INITIALIZED: the module has not been initialized with `C_Initialize` (or was finalized since).
    public static let cryptokiNotInitialized = ReturnCode(rawValue: UInt(CKR_CRYPTOKI_NOT_INITIALIZED))
    /// CKR_CRYPTOKI_ALREADY_INITIALIZED: `C_Initialize` was called although the module is already initialized in this process.
    public static let cryptokiAlreadyInitialized = ReturnCode(rawValue: UInt(CKR_CRYPTOKI_ALREADY_INITIALIZED))

    /// Whether this code says the PIN itself is wrong: logging in with it again could lock the token.
    public var isPINProblem: Bool {
        [.pinIncorrect, .pinLocked, .pinExpired, .pinInvalid, .pinLengthRange, .userPINNotInitialized].contains(self)
    }

    /// Whether the session that produced this code can no longer be used and must be closed.
    ///
    /// The pool drops such sessions instead of handing them out again; the token may have been
    /// removed or restarted, which also ends the login.
    public var invalidatesSession: Bool {
        switch self {
        case .sessionHandleInvalid, .sessionClosed, .deviceRemoved, .deviceError, .tokenNotPresent,
            .tokenNotRecognized, .userNotLoggedIn, .cryptokiNotInitialized:
            return true
        default:
            return false
        }
    }

    private static let names: [UInt: String] = [
        UInt(CKR_OK): "CKR_OK",
        UInt(CKR_CANCEL): "CKR_CANCEL",
        UInt(CKR_HOST_MEMORY): "CKR_HOST_MEMORY",
        UInt(CKR_SLOT_ID_INVALID): "CKR_SLOT_ID_INVALID",
        UInt(CKR_GENERAL_ERROR): "CKR_GENERAL_ERROR",
        UInt(CKR_FUNCTION_FAILED): "CKR_FUNCTION_FAILED",
        UInt(CKR_ARGUMENTS_BAD): "CKR_ARGUMENTS_BAD",
        UInt(CKR_NO_EVENT): "CKR_NO_EVENT",
        UInt(CKR_NEED_TO_CREATE_THREADS): "CKR_NEED_TO_CREATE_THREADS",
        UInt(CKR_CANT_LOCK): "CKR_CANT_LOCK",
        UInt(CKR_ATTRIBUTE_READ_ONLY): "CKR_ATTRIBUTE_READ_ONLY",
        UInt(CKR_ATTRIBUTE_SENSITIVE): "CKR_ATTRIBUTE_SENSITIVE",
        UInt(CKR_ATTRIBUTE_TYPE_INVALID): "CKR_ATTRIBUTE_TYPE_INVALID",
        UInt(CKR_ATTRIBUTE_VALUE_INVALID): "CKR_ATTRIBUTE_VALUE_INVALID",
        UInt(CKR_ACTION_PROHIBITED): "CKR_ACTION_PROHIBITED",
        UInt(CKR_DATA_INVALID): "CKR_DATA_INVALID",
        UInt(CKR_DATA_LEN_RANGE): "CKR_DATA_LEN_RANGE",
        UInt(CKR_DEVICE_ERROR): "CKR_DEVICE_ERROR",
        UInt(CKR_DEVICE_MEMORY): "CKR_DEVICE_MEMORY",
        UInt(CKR_DEVICE_REMOVED): "CKR_DEVICE_REMOVED",
        UInt(CKR_ENCRYPTED_DATA_INVALID): "CKR_ENCRYPTED_DATA_INVALID",
        UInt(CKR_ENCRYPTED_DATA_LEN_RANGE): "CKR_ENCRYPTED_DATA_LEN_RANGE",
        UInt(CKR_FUNCTION_CANCELED): "CKR_FUNCTION_CANCELED",
        UInt(CKR_FUNCTION_NOT_PARALLEL): "CKR_FUNCTION_NOT_PARALLEL",
        UInt(CKR_FUNCTION_NOT_SUPPORTED): "CKR_FUNCTION_NOT_SUPPORTED",
        UInt(CKR_KEY_HANDLE_INVALID): "CKR_KEY_HANDLE_INVALID",
        UInt(CKR_KEY_SIZE_RANGE): "CKR_KEY_SIZE_RANGE",
        UInt(CKR_KEY_TYPE_INCONSISTENT): "CKR_KEY_TYPE_INCONSISTENT",
        UInt(CKR_KEY_NOT_NEEDED): "CKR_KEY_NOT_NEEDED",
        UInt(CKR_KEY_CHANGED): "CKR_KEY_CHANGED",
        UInt(CKR_KEY_NEEDED): "CKR_KEY_NEEDED",
        UInt(CKR_KEY_INDIGESTIBLE): "CKR_KEY_INDIGESTIBLE",
        UInt(CKR_KEY_FUNCTION_NOT_PERMITTED): "CKR_KEY_FUNCTION_NOT_PERMITTED",
        UInt(CKR_KEY_NOT_WRAPPABLE): "CKR_KEY_NOT_WRAPPABLE",
        UInt(CKR_KEY_UNEXTRACTABLE): "CKR_KEY_UNEXTRACTABLE",
        UInt(CKR_MECHANISM_INVALID): "CKR_MECHANISM_INVALID",
        UInt(CKR_MECHANISM_PARAM_INVALID): "CKR_MECHANISM_PARAM_INVALID",
        UInt(CKR_OBJECT_HANDLE_INVALID): "CKR_OBJECT_HANDLE_INVALID",
        UInt(CKR_OPERATION_ACTIVE): "CKR_OPERATION_ACTIVE",
        UInt(CKR_OPERATION_NOT_INITIALIZED): "CKR_OPERATION_NOT_INITIALIZED",
        UInt(CKR_PIN_INCORRECT): "CKR_PIN_INCORRECT",
        UInt(CKR_PIN_INVALID): "CKR_PIN_INVALID",
        UInt(CKR_PIN_LEN_RANGE): "CKR_PIN_LEN_RANGE",
        UInt(CKR_PIN_EXPIRED): "CKR_PIN_EXPIRED",
        UInt(CKR_PIN_LOCKED): "CKR_PIN_LOCKED",
        UInt(CKR_SESSION_CLOSED): "CKR_SESSION_CLOSED",
        UInt(CKR_SESSION_COUNT): "CKR_SESSION_COUNT",
        UInt(CKR_SESSION_HANDLE_INVALID): "CKR_SESSION_HANDLE_INVALID",
        UInt(CKR_SESSION_PARALLEL_NOT_SUPPORTED): "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
        UInt(CKR_SESSION_READ_ONLY): "CKR_SESSION_READ_ONLY",
        UInt(CKR_SESSION_EXISTS): "CKR_SESSION_EXISTS",
        UInt(CKR_SESSION_READ_ONLY_EXISTS): "CKR_SESSION_READ_ONLY_EXISTS",
        UInt(CKR_SESSION_READ_WRITE_SO_EXISTS): "CKR_SESSION_READ_WRITE_SO_EXISTS",
        UInt(CKR_SIGNATURE_INVALID): "CKR_SIGNATURE_INVALID",
        UInt(CKR_SIGNATURE_LEN_RANGE): "CKR_SIGNATURE_LEN_RANGE",
        UInt(CKR_TEMPLATE_INCOMPLETE): "CKR_TEMPLATE_INCOMPLETE",
        UInt(CKR_TEMPLATE_INCONSISTENT): "CKR_TEMPLATE_INCONSISTENT",
        UInt(CKR_TOKEN_NOT_PRESENT): "CKR_TOKEN_NOT_PRESENT",
        UInt(CKR_TOKEN_NOT_RECOGNIZED): "CKR_TOKEN_NOT_RECOGNIZED",
        UInt(CKR_TOKEN_WRITE_PROTECTED): "CKR_TOKEN_WRITE_PROTECTED",
        UInt(CKR_UNWRAPPING_KEY_SIZE_RANGE): "CKR_UNWRAPPING_KEY_SIZE_RANGE",
        UInt(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT): "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT",
        UInt(CKR_USER_ALREADY_LOGGED_IN): "CKR_USER_ALREADY_LOGGED_IN",
        UInt(CKR_USER_NOT_LOGGED_IN): "CKR_USER_NOT_LOGGED_IN",
        UInt(CKR_USER_PIN_NOT_INITIALIZED): "CKR_USER_PIN_NOT_INITIALIZED",
        UInt(CKR_USER_TYPE_INVALID): "CKR_USER_TYPE_INVALID",
        UInt(CKR_USER_ANOTHER_ALREADY_LOGGED_IN): "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
        UInt(CKR_USER_TOO_MANY_TYPES): "CKR_USER_TOO_MANY_TYPES",
        UInt(CKR_WRAPPED_KEY_INVALID): "CKR_WRAPPED_KEY_INVALID",
        UInt(CKR_WRAPPED_KEY_LEN_RANGE): "CKR_WRAPPED_KEY_LEN_RANGE",
        UInt(CKR_WRAPPING_KEY_HANDLE_INVALID): "CKR_WRAPPING_KEY_HANDLE_INVALID",
        UInt(CKR_WRAPPING_KEY_SIZE_RANGE): "CKR_WRAPPING_KEY_SIZE_RANGE",
        UInt(CKR_WRAPPING_KEY_TYPE_INCONSISTENT): "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
        UInt(CKR_RANDOM_SEED_NOT_SUPPORTED): "CKR_RANDOM_SEED_NOT_SUPPORTED",
        UInt(CKR_RANDOM_NO_RNG): "CKR_RANDOM_NO_RNG",
        UInt(CKR_DOMAIN_PARAMS_INVALID): "CKR_DOMAIN_PARAMS_INVALID",
        UInt(CKR_CURVE_NOT_SUPPORTED): "CKR_CURVE_NOT_SUPPORTED",
        UInt(CKR_BUFFER_TOO_SMALL): "CKR_BUFFER_TOO_SMALL",
        UInt(CKR_SAVED_STATE_INVALID): "CKR_SAVED_STATE_INVALID",
        UInt(CKR_INFORMATION_SENSITIVE): "CKR_INFORMATION_SENSITIVE",
        UInt(CKR_STATE_UNSAVEABLE): "CKR_STATE_UNSAVEABLE",
        UInt(CKR_CRYPTOKI_NOT_INITIALIZED): "CKR_CRYPTOKI_NOT_INITIALIZED",
        UInt(CKR_CRYPTOKI_ALREADY_INITIALIZED): "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        UInt(CKR_MUTEX_BAD): "CKR_MUTEX_BAD",
        UInt(CKR_MUTEX_NOT_LOCKED): "CKR_MUTEX_NOT_LOCKED",
        UInt(CKR_NEW_PIN_MODE): "CKR_NEW_PIN_MODE",
        UInt(CKR_NEXT_OTP): "CKR_NEXT_OTP",
        UInt(CKR_EXCEEDED_MAX_ITERATIONS): "CKR_EXCEEDED_MAX_ITERATIONS",
        UInt(CKR_FIPS_SELF_TEST_FAILED): "CKR_FIPS_SELF_TEST_FAILED",
        UInt(CKR_LIBRARY_LOAD_FAILED): "CKR_LIBRARY_LOAD_FAILED",
        UInt(CKR_PIN_TOO_WEAK): "CKR_PIN_TOO_WEAK",
        UInt(CKR_PUBLIC_KEY_INVALID): "CKR_PUBLIC_KEY_INVALID",
        UInt(CKR_FUNCTION_REJECTED): "CKR_FUNCTION_REJECTED",
    ]
}
