import Foundation
import PKCS11
import TestSupport
import Testing

@Suite("countersign hsm", .serialized)
struct CLITests {
    let countersign = ProcessResult.builtProduct("countersign")

    @Test("the CLI's token is in a directory this process's module never reads: SoftHSM's files are not safe to share with a writing child")
    func childProcessesHaveADirectoryOfTheirOwn() throws {
        let fixture = try SoftHSMFixture.shared()
        let labels = try fixture.module.tokens().map(\.info.label)
        #expect(labels.contains(SoftHSMFixture.tokenLabel))
        #expect(!labels.contains(SoftHSMFixture.cliTokenLabel), "\(labels)")
        #expect(fixture.environment()["SOFTHSM2_CONF"] == fixture.childConfigurationFile.path)
        #expect(fixture.childConfigurationFile.deletingLastPathComponent() != fixture.configurationFile.deletingLastPathComponent())
    }

    @Test("selftest succeeds on the fixture token and prints each step")
    func selftest() async throws {
        let fixture = try SoftHSMFixture.shared()
        let result = try await ProcessResult.run(executable: self.countersign, arguments: ["hsm", "selftest"], environment: fixture.environment())
        #expect(result.status == 0, "\(result.standardOutput)\(result.standardError)")
        let steps = result.standardOutput.split(separator: "\n").filter { $0.hasPrefix("ok    ") }
        #expect(steps.count == 11, "\(result.standardOutput)")
        #expect(result.standardOutput.contains("ok    verify the signature with swift-crypto"))
        #expect(result.standardOutput.contains("ok    destroy the throw-away keys: 3 objects destroyed"))
        #expect(result.standardOutput.contains("selftest passed"))
    }

    @Test("the latency-injecting module (a network HSM for benchmarks) passes every selftest step through to the real token, waiting on C_Sign")
    func latencyModule() async throws {
        let fixture = try SoftHSMFixture.shared()
        var environment = fixture.environment()
        environment["COUNTERSIGN_PKCS11_MODULE"] = ProcessResult.builtProduct("libCountersignLatencyPKCS11.so").path
        environment["COUNTERSIGN_LATENCY_MODULE"] = fixture.modulePath
        environment["COUNTERSIGN_LATENCY_MS"] = "1"
        let result = try await ProcessResult.run(executable: self.countersign, arguments: ["hsm", "selftest"], environment: environment)
        #expect(result.status == 0, "\(result.standardOutput)\(result.standardError)")
        #expect(result.standardOutput.contains("ok    load module \(ProcessResult.builtProduct("libCountersignLatencyPKCS11.so").path): SoftHSM"))
        #expect(result.standardOutput.contains("ok    verify the signature with swift-crypto: valid"), "\(result.standardOutput)")
        #expect(result.standardOutput.contains("selftest passed"))
    }

    @Test("selftest reads the PIN from --pin-file")
    func selftestWithPINFile() async throws {
        let fixture = try SoftHSMFixture.shared()
        let pinFile = fixture.directory.appendingPathComponent("pin-\(UUID())")
        try Data((fixture.userPIN + "\n").utf8).write(to: pinFile)
        var environment = fixture.environment()
        environment["COUNTERSIGN_HSM_PIN"] = nil
        let result = try await ProcessResult.run(
            executable: self.countersign, arguments: ["hsm", "selftest", "--pin-file", pinFile.path], environment: environment)
        #expect(result.status == 0, "\(result.standardOutput)\(result.standardError)")
    }

    @Test("without SOFTHSM2_CONF, a missing token says where SoftHSM looked and how to point it at the project's token")
    func infoWithoutConfiguration() async throws {
        let fixture = try SoftHSMFixture.shared()
        var environment = fixture.environment()
        environment["SOFTHSM2_CONF"] = nil
        let result = try await ProcessResult.run(executable: self.countersign, arguments: ["hsm", "info"], environment: environment)
        #expect(result.status != 0)
        #expect(result.standardError.contains("TOKEN_NOT_FOUND"), "\(result.standardError)")
        #expect(result.standardError.contains("SOFTHSM2_CONF is not set"), "\(result.standardError)")
        #expect(result.standardError.contains("export SOFTHSM2_CONF=$PWD/.hsm/softhsm2.conf"), "\(result.standardError)")
    }

    @Test("info --json says the same for scripts")
    func infoJSON() async throws {
        let fixture = try SoftHSMFixture.shared()
        let result = try await ProcessResult.run(executable: self.countersign, arguments: ["hsm", "info", "--json"], environment: fixture.environment())
        #expect(result.status == 0, "\(result.standardError)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any])
        #expect(object["token"] as? String == SoftHSMFixture.cliTokenLabel)
        let mechanisms = try #require(object["mechanisms"] as? [[String: Any]])
        #expect(!mechanisms.isEmpty && mechanisms.allSatisfy { $0["present"] as? Bool == true })
    }

    @Test("info lists the token and the mechanisms Countersign needs")
    func info() async throws {
        let fixture = try SoftHSMFixture.shared()
        let result = try await ProcessResult.run(executable: self.countersign, arguments: ["hsm", "info"], environment: fixture.environment())
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.contains("token:         \(SoftHSMFixture.cliTokenLabel)"))
        for mechanism in ["CKM_EC_KEY_PAIR_GEN", "CKM_ECDSA", "CKM_AES_KEY_GEN", "CKM_AES_GCM"] {
            let line = result.standardOutput.split(separator: "\n").first { $0.contains(mechanism + " ") }
            #expect(line?.contains("present") == true, "\(mechanism)")
        }
    }

    @Test("a wrong PIN fails with CKR_PIN_INCORRECT and the PIN is never printed")
    func wrongPIN() async throws {
        let fixture = try SoftHSMFixture.shared()
        let wrong = "wrong-pin-\(UUID().uuidString.prefix(6))"
        let result = try await ProcessResult.run(executable: self.countersign, arguments: ["hsm", "selftest"], environment: fixture.environment(pin: wrong))
        #expect(result.status != 0)
        #expect(result.standardOutput.contains("FAIL  log in: C_Login failed: CKR_PIN_INCORRECT (0xA0)"))
        #expect(!(result.standardOutput + result.standardError).contains(wrong))
        #expect(!(result.standardOutput + result.standardError).contains(fixture.userPIN))
    }

    @Test("a missing module and an unknown token label fail with their codes")
    func lookupFailures() async throws {
        let fixture = try SoftHSMFixture.shared()
        let missing = try await ProcessResult.run(
            executable: self.countersign,
            arguments: ["hsm", "info", "--module", "/nonexistent/libpkcs11.so"],
            environment: fixture.environment()
        )
        #expect(missing.status != 0)
        #expect(missing.standardError.contains("MODULE_NOT_FOUND"))
        let unknown = try await ProcessResult.run(
            executable: self.countersign,
            arguments: ["hsm", "info", "--token-label", "nobody-has-this"],
            environment: fixture.environment()
        )
        #expect(unknown.status != 0)
        #expect(unknown.standardError.contains("TOKEN_NOT_FOUND"))
    }
}

@Suite("hsm-config/init-token.sh")
struct InitTokenScriptTests {
    @Test("running it twice creates one token, prints the module and label, and never the PINs")
    func idempotent() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("init-token-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let module = try SoftHSMFixture.shared().modulePath
        var outputs: [String] = []
        for _ in 0..<2 {
            let result = try await SoftHSMFixture.initializeToken(
                in: directory, label: "idempotent", soPIN: "so-secret-1", userPIN: "user-secret-2", module: module)
            outputs.append(result.standardOutput + result.standardError)
            #expect(result.standardOutput.contains("COUNTERSIGN_PKCS11_MODULE=\(module)"))
            #expect(result.standardOutput.contains("COUNTERSIGN_TOKEN_LABEL=idempotent"))
            #expect(result.standardOutput.contains("SOFTHSM2_CONF=\(directory.path)/softhsm2.conf"))
        }
        #expect(outputs[0].contains("created token 'idempotent'"))
        #expect(outputs[1].contains("already exists"))
        #expect(!outputs.joined().contains("so-secret-1") && !outputs.joined().contains("user-secret-2"))

        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = directory.appendingPathComponent("softhsm2.conf").path
        let slots = try await ProcessResult.run(
            executable: URL(fileURLWithPath: "/usr/bin/softhsm2-util"), arguments: ["--show-slots"], environment: environment)
        let labels = slots.standardOutput.split(separator: "\n").filter { $0.contains("Label:") && $0.contains("idempotent") }
        #expect(labels.count == 1)
    }

    @Test("a PIN shorter than 4 characters is refused before softhsm2-util could prompt")
    func shortPIN() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("init-token-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let error = await #expect(throws: FixtureError.self) {
            try await SoftHSMFixture.initializeToken(
                in: directory, label: "short", soPIN: "so-pin-ok", userPIN: "123", module: try SoftHSMFixture.shared().modulePath)
        }
        #expect(error?.reason.contains("at least 4 characters") == true)
    }
}
