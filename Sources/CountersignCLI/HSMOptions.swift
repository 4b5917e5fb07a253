import ArgumentParser
import Foundation
import PKCS11

/// Where the token is and how to log in: flags first, then the environment.
struct HSMOptions: ParsableArguments {
    static let defaultModulePath = "/usr/lib/softhsm/libsofthsm2.so"
    static let defaultTokenLabel = "countersign"

    @Option(name: .customLong("module"), help: "PKCS#11 module (env COUNTERSIGN_PKCS11_MODULE; default \(HSMOptions.defaultModulePath)).")
    var modulePath: String?

    @Option(name: .customLong("token-label"), help: "Token label (env COUNTERSIGN_TOKEN_LABEL; default \(HSMOptions.defaultTokenLabel)).")
    var tokenLabel: String?

    @Option(name: .customLong("token-serial"), help: "Select the token by serial number instead of label.")
    var tokenSerial: String?

    @Option(
        name: .customLong("pin-file"),
        help:
            "File holding the user PIN (env COUNTERSIGN_HSM_PIN_FILE, or the PIN itself in COUNTERSIGN_HSM_PIN). There is no --pin flag: a command line is readable by every user of the machine."
    )
    var pinFile: String?

    private var environment: [String: String] { ProcessInfo.processInfo.environment }

    var resolvedModulePath: String {
        self.modulePath ?? self.environment["COUNTERSIGN_PKCS11_MODULE"] ?? Self.defaultModulePath
    }

    var resolvedTokenLabel: String {
        self.tokenLabel ?? self.environment["COUNTERSIGN_TOKEN_LABEL"] ?? Self.defaultTokenLabel
    }

    func loadModule() throws -> PKCS11Module {
        try PKCS11Module.load(path: self.resolvedModulePath)
    }

    func findToken(on module: PKCS11Module) throws -> PKCS11Token {
        if let serial = self.tokenSerial {
            return try module.token(serialNumber: serial)
        }
        return try module.token(label: self.resolvedTokenLabel)
    }

    /// The user PIN from `--pin-file`, `COUNTERSIGN_HSM_PIN_FILE` or `COUNTERSIGN_HSM_PIN`.
    func pin() throws -> PIN {
        if let path = self.pinFile ?? self.environment["COUNTERSIGN_HSM_PIN_FILE"] {
            return try PINFile.read(path)
        }
        if let pin = self.environment["COUNTERSIGN_HSM_PIN"], !pin.isEmpty {
            return PIN(pin)
        }
        throw ValidationError("no HSM PIN: give --pin-file, or set COUNTERSIGN_HSM_PIN_FILE or COUNTERSIGN_HSM_PIN")
    }
}

/// Reads a PIN from a file: its first line, without the line break.
enum PINFile {
    static func read(_ path: String) throws -> PIN {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read the PIN file '\(path)'")
        }
        var text = String(decoding: data, as: UTF8.self)
        if let newline = text.firstIndex(where: \.isNewline) {
            text = String(text[..<newline])
        }
        guard !text.isEmpty else {
            throw ValidationError("the PIN file '\(path)' is empty")
        }
        return PIN(text)
    }
}

/// The mechanisms Countersign uses, and what for.
enum RequiredMechanisms {
    static let all: [(MechanismType, String)] = [
        (.ecKeyPairGen, "generate P-256 signing keys on the token"),
        (.ecdsa, "sign authorizations and audit checkpoints (ES256)"),
        (.aesKeyGen, "generate the AES-256 key that seals software keys"),
        (.aesGCM, "seal and open software signing keys"),
    ]
}
