import Foundation
import PKCS11
import TestSupport
import Testing

@Suite("Loading modules and finding tokens")
struct ModuleTests {
    @Test("loading the same module twice returns the one process-wide instance")
    func loadOnce() throws {
        let fixture = try SoftHSMFixture.shared()
        let again = try PKCS11Module.load(path: fixture.modulePath)
        #expect(again === fixture.module)
        #expect(fixture.module.initializedHere)
    }

    @Test("the module describes itself")
    func moduleInfo() throws {
        let info = try SoftHSMFixture.shared().module.info()
        #expect(info.manufacturer == "SoftHSM")
        #expect(info.cryptokiVersion.major == 2)
    }

    @Test("a token is found by label and by serial number, and reports its limits and mechanisms")
    func findToken() throws {
        let fixture = try SoftHSMFixture.shared()
        let token = try fixture.token()
        #expect(token.info.label == SoftHSMFixture.tokenLabel)
        #expect(token.info.isInitialized && token.info.isUserPINInitialized && token.info.isLoginRequired)
        let bySerial = try fixture.module.token(serialNumber: token.info.serialNumber)
        #expect(bySerial.slot == token.slot)
        let mechanisms = try token.mechanisms()
        for mechanism: MechanismType in [.ecKeyPairGen, .ecdsa, .aesKeyGen, .aesGCM] {
            #expect(mechanisms.contains(mechanism), "\(mechanism)")
        }
    }

    @Test("an unknown token label is refused and the message lists the labels present")
    func unknownLabel() throws {
        let module = try SoftHSMFixture.shared().module
        let error = try #require(throws: TokenLookupError.self) { try module.token(label: "no-such-token") }
        #expect(error.code == .tokenNotFound)
        #expect(error.description.contains("no-such-token"))
        #expect(error.description.contains("'\(SoftHSMFixture.tokenLabel)'"))
    }

    @Test("a missing module file is refused with MODULE_NOT_FOUND")
    func missingModule() throws {
        let error = try #require(throws: ModuleLoadError.self) {
            try PKCS11Module.load(path: "/nonexistent/libnothing.so")
        }
        #expect(error.code == .moduleNotFound)
        #expect(error.description.hasPrefix("MODULE_NOT_FOUND: no PKCS#11 module at '/nonexistent/libnothing.so'"))
    }

    @Test("a file that is not a shared library is refused with MODULE_NOT_LOADABLE")
    func notALibrary() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("not-a-library-\(UUID()).so").path
        try Data("this is not an ELF file\n".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = try #require(throws: ModuleLoadError.self) { try PKCS11Module.load(path: path) }
        #expect(error.code == .moduleNotLoadable)
        #expect(error.reason.contains(path))
    }

    @Test("a shared library without C_GetFunctionList is refused with NOT_A_PKCS11_MODULE")
    func notAPKCS11Module() throws {
        let libc = try #require(Self.loadedLibrary(named: "libc.so.6"), "libc.so.6 is mapped into every test process")
        let error = try #require(throws: ModuleLoadError.self) { try PKCS11Module.load(path: libc) }
        #expect(error.code == .notAPKCS11Module)
        #expect(error.reason.contains("C_GetFunctionList"))
    }

    @Test("the three loading failures are distinct")
    func loadingFailuresAreDistinct() {
        let codes: Set<ModuleLoadError.Code> = [.moduleNotFound, .moduleNotLoadable, .notAPKCS11Module]
        #expect(Set(codes.map(\.rawValue)).count == 3)
    }

    /// The path of a library this process has mapped, from `/proc/self/maps`.
    static func loadedLibrary(named name: String) -> String? {
        // procfs reports a size of 0, so the file is read to its end rather than by its size.
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/maps") else { return nil }
        defer { try? handle.close() }
        let maps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        return maps.split(separator: "\n")
            .compactMap { $0.split(separator: " ", omittingEmptySubsequences: true).last.map(String.init) }
            .first { $0.hasSuffix("/" + name) }
    }
}
