import ArgumentParser
import Foundation
import PKCS11

/// `countersign hsm info`: the module, the token and the mechanisms Countersign needs. Needs no PIN.
struct HSMInfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show the PKCS#11 module, the token, and whether it has every mechanism Countersign needs."
    )

    @OptionGroup var hsm: HSMOptions

    func run() throws {
        let module = try self.hsm.loadModule()
        let moduleInfo = try module.info()
        print("module:        \(module.path)")
        print("  library:     \(moduleInfo.manufacturer) \(moduleInfo.libraryDescription) \(moduleInfo.libraryVersion) (Cryptoki \(moduleInfo.cryptokiVersion))")

        let token = try self.hsm.findToken(on: module)
        let info = token.info
        print("token:         \(info.label)")
        print("  slot:        \(token.slot)")
        print("  model:       \(info.manufacturer) \(info.model), serial \(info.serialNumber)")
        print("  firmware:    \(info.firmwareVersion), hardware \(info.hardwareVersion)")
        print("  login:       \(info.isLoginRequired ? "required" : "not required"), user PIN \(info.isUserPINInitialized ? "set" : "NOT SET")")
        print("  sessions:    at most \(info.maximumReadWriteSessions) read-write, \(info.maximumSessions) in all")

        let offered = try token.mechanisms()
        print("mechanisms Countersign needs:")
        var missing = 0
        for (mechanism, purpose) in RequiredMechanisms.all {
            let present = offered.contains(mechanism)
            if !present { missing += 1 }
            let name = (mechanism.name ?? mechanism.description).padding(toLength: 22, withPad: " ", startingAt: 0)
            print("  \(name)\(present ? "present" : "MISSING")   \(purpose)")
        }
        if missing > 0 {
            print("\(missing) required mechanism(s) missing: Countersign cannot use this token")
            throw ExitCode.failure
        }
    }
}
