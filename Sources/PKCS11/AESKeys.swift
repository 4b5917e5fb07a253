import CPKCS11
import Synchronization

/// What an AES key on the token may be used for. A key gets exactly one use.
public enum AESKeyUsage: Sendable, Hashable {
    /// `CKA_ENCRYPT` and `CKA_DECRYPT`: seal data (e.g. software private keys) with ``PKCS11Session/encryptAESGCM(_:with:authenticating:)``.
    case encryptDecrypt
    /// `CKA_WRAP` and `CKA_UNWRAP`: wrap other token keys.
    case wrapUnwrap
}

/// Data sealed by the token with AES-256-GCM: a 12-byte nonce, the ciphertext, a 16-byte tag.
public struct AESGCMSealedData: Sendable, Hashable {
    /// The nonce (IV) length in bytes: 96 bits, the length GCM is designed for.
    public static let nonceLength = 12
    /// The authentication tag length in bytes: 128 bits.
    public static let tagLength = 16

    /// `nonce ‖ ciphertext ‖ tag`, the form to store.
    public var combined: [UInt8]

    /// Wraps stored `nonce ‖ ciphertext ‖ tag` bytes, e.g. read back from disk, to open them with
    /// ``PKCS11Session/decryptAESGCM(_:with:authenticating:)``.
    ///
    /// Only the length is checked here; changed bytes are found when the data is opened.
    /// - Throws: ``KeyError`` `KEY_MALFORMED_CIPHERTEXT` when `combined` is shorter than a nonce and a tag (28 bytes).
    public init(combined: [UInt8]) throws {
        guard combined.count >= Self.nonceLength + Self.tagLength else {
            throw KeyError(code: .malformedCiphertext, reason: "sealed data of \(combined.count) bytes is shorter than a GCM nonce and tag")
        }
        self.combined = combined
    }

    /// The nonce: the first ``nonceLength`` bytes of ``combined``.
    public var nonce: ArraySlice<UInt8> { self.combined.prefix(Self.nonceLength) }
    /// Everything after the nonce: the ciphertext, then the tag. A slice of ``combined``, so its indices start at ``nonceLength``.
    public var ciphertextAndTag: ArraySlice<UInt8> { self.combined.dropFirst(Self.nonceLength) }
}

extension PKCS11Session {
    /// Generates an AES-256 key on the token (`C_GenerateKey`, `CKM_AES_KEY_GEN`).
    ///
    /// The key is a private, sensitive, never-extractable token object with exactly the capabilities of `usage`.
    public func generateAES256Key(label: String, id: [UInt8], usage: AESKeyUsage) throws -> ObjectHandle {
        let generate = try self.module.function("C_GenerateKey", \.C_GenerateKey)
        let template: Template = [
            .objectClass(.secretKey),
            .keyType(.aes),
            .ulong(.valueLength, 32),
            .bool(.token, true),
            .bool(.private, true),
            .bool(.sensitive, true),
            .bool(.extractable, false),
            .bool(.encrypt, usage == .encryptDecrypt),
            .bool(.decrypt, usage == .encryptDecrypt),
            .bool(.wrap, usage == .wrapUnwrap),
            .bool(.unwrap, usage == .wrapUnwrap),
            .bool(.sign, false),
            .bool(.verify, false),
            .bool(.derive, false),
            .string(.label, label),
            .bytes(.id, id),
        ]
        var mechanism = CK_MECHANISM(mechanism: CK_MECHANISM_TYPE(CKM_AES_KEY_GEN), pParameter: nil, ulParameterLen: 0)
        var key: CK_OBJECT_HANDLE = 0
        try template.withUnsafeAttributes { attributes, count in
            try PKCS11Error.check("C_GenerateKey", self.module.objectStoreLock.withWriteLock { generate(self.rawHandle, &mechanism, attributes, count, &key) })
        }
        return ObjectHandle(rawValue: UInt(key))
    }

    /// Seals `plaintext` with an AES key on the token (`CKM_AES_GCM`, a fresh 96-bit nonce from the token's RNG,
    /// 128-bit tag).
    ///
    /// - Parameters:
    ///   - plaintext: what to seal, e.g. a software private key's bytes.
    ///   - key: an AES key with ``AESKeyUsage/encryptDecrypt``.
    ///   - additionalData: bound to the ciphertext; decryption fails unless the same bytes are given
    ///     (e.g. the key name and version, so sealed blobs cannot be swapped).
    public func encryptAESGCM(_ plaintext: [UInt8], with key: ObjectHandle, authenticating additionalData: [UInt8]) throws -> AESGCMSealedData {
        let nonce = try self.generateRandom(count: AESGCMSealedData.nonceLength)
        let output = try self.runGCM(
            function: ("C_EncryptInit", "C_Encrypt"),
            initialize: try self.module.function("C_EncryptInit", \.C_EncryptInit),
            run: try self.module.function("C_Encrypt", \.C_Encrypt),
            input: plaintext,
            outputCapacity: plaintext.count + AESGCMSealedData.tagLength,
            key: key,
            nonce: nonce,
            additionalData: additionalData
        )
        return try AESGCMSealedData(combined: nonce + output)
    }

    /// Opens data sealed by ``encryptAESGCM(_:with:authenticating:)``.
    ///
    /// - Throws: ``PKCS11Error`` (`CKR_ENCRYPTED_DATA_INVALID` on SoftHSM) when the data, nonce, tag or
    ///   additional data were changed.
    public func decryptAESGCM(_ sealed: AESGCMSealedData, with key: ObjectHandle, authenticating additionalData: [UInt8]) throws -> [UInt8] {
        try self.runGCM(
            function: ("C_DecryptInit", "C_Decrypt"),
            initialize: try self.module.function("C_DecryptInit", \.C_DecryptInit),
            run: try self.module.function("C_Decrypt", \.C_Decrypt),
            input: Array(sealed.ciphertextAndTag),
            outputCapacity: sealed.ciphertextAndTag.count,
            key: key,
            nonce: Array(sealed.nonce),
            additionalData: additionalData
        )
    }

    private typealias CryptInit = @convention(c) (CK_SESSION_HANDLE, UnsafeMutablePointer<CK_MECHANISM>?, CK_OBJECT_HANDLE) -> CK_RV
    private typealias Crypt =
        @convention(c) (CK_SESSION_HANDLE, UnsafeMutablePointer<UInt8>?, CK_ULONG, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<CK_ULONG>?) -> CK_RV

    private func runGCM(
        function names: (String, String),
        initialize: CryptInit,
        run: Crypt,
        input: [UInt8],
        outputCapacity: Int,
        key: ObjectHandle,
        nonce: [UInt8],
        additionalData: [UInt8]
    ) throws -> [UInt8] {
        var nonce = nonce
        var additionalData = additionalData
        try nonce.withUnsafeMutableBufferPointer { nonceBuffer in
            try additionalData.withUnsafeMutableBufferPointer { aadBuffer in
                var parameters = CK_GCM_PARAMS(
                    pIv: nonceBuffer.baseAddress,
                    ulIvLen: CK_ULONG(nonceBuffer.count),
                    ulIvBits: CK_ULONG(nonceBuffer.count * 8),
                    pAAD: aadBuffer.baseAddress,
                    ulAADLen: CK_ULONG(aadBuffer.count),
                    ulTagBits: CK_ULONG(AESGCMSealedData.tagLength * 8)
                )
                try withUnsafeMutablePointer(to: &parameters) { parametersPointer in
                    var mechanism = CK_MECHANISM(
                        mechanism: CK_MECHANISM_TYPE(CKM_AES_GCM),
                        pParameter: UnsafeMutableRawPointer(parametersPointer),
                        ulParameterLen: CK_ULONG(MemoryLayout<CK_GCM_PARAMS>.size)
                    )
                    let rv = self.module.objectStoreLock.withReadLock { initialize(self.rawHandle, &mechanism, CK_OBJECT_HANDLE(key.rawValue)) }
                    try PKCS11Error.check(names.0, rv)
                }
            }
        }
        var input = input
        var output = [UInt8](repeating: 0, count: max(outputCapacity, 1))
        var length = CK_ULONG(output.count)
        let rv = self.module.objectStoreLock.withReadLock { run(self.rawHandle, &input, CK_ULONG(input.count), &output, &length) }
        try PKCS11Error.check(names.1, rv)
        explicitZeroArray(&input)
        return Array(output.prefix(Int(length)))
    }
}

func explicitZeroArray(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { explicitZero($0) }
}
