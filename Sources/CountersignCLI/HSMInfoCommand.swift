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

    @Flag(help: "Print JSON.")
    var json = false

    struct Report: Encodable {
        struct Mechanism: Encodable {
            var name: String
            var present: Bool
            var purpose: String
        }

        var module: String
        var library: String
        var token: String
        var slot: String
        var model: String
        var serial: String
        var loginRequired: Bool
        var userPINSet: Bool
        var maximumReadWriteSessions: String
        var mechanisms: [Mechanism]

        enum CodingKeys: String, CodingKey {
            case module, library, token, slot, model, serial, mechanisms
            case loginRequired = "login_required"
            case userPINSet = "user_pin_set"
            case maximumReadWriteSessions = "max_rw_sessions"
        }
    }

    func run() throws {
        let module = try self.hsm.loadModule()
        let moduleInfo = try module.info()
        let token = try self.hsm.findToken(on: module)
        let info = token.info
        let offered = try token.mechanisms()
        let mechanisms = RequiredMechanisms.all.map { mechanism, purpose in
            Report.Mechanism(name: mechanism.name ?? mechanism.description, present: offered.contains(mechanism), purpose: purpose)
        }
        let missing = mechanisms.filter { !$0.present }.count
        if self.json {
            try JSONOutput.print(
                Report(
                    module: module.path, library: "\(moduleInfo.manufacturer) \(moduleInfo.libraryDescription) \(moduleInfo.libraryVersion)", token: info.label,
                    slot: "\(token.slot)", model: "\(info.manufacturer) \(info.model)", serial: info.serialNumber, loginRequired: info.isLoginRequired,
                    userPINSet: info.isUserPINInitialized, maximumReadWriteSessions: "\(info.maximumReadWriteSessions)", mechanisms: mechanisms
                )
            )
        } else {
            print("module:        \(module.path)")
            print(
                "  library:     \(moduleInfo.manufacturer) \(moduleInfo.libraryDescription) \(moduleInfo.libraryVersion) (Cryptoki \(moduleInfo.cryptokiVersion))"
            )
            print("token:         \(info.label)")
            print("  slot:        \(token.slot)")
            print("  model:       \(info.manufacturer) \(info.model), serial \(info.serialNumber)")
            print("  firmware:    \(info.firmwareVersion), hardware \(info.hardwareVersion)")
            print("  login:       \(info.isLoginRequired ? "required" : "not required"), user PIN \(info.isUserPINInitialized ? "set" : "NOT SET")")
            print("  sessions:    at most \(info.maximumReadWriteSessions) read-write, \(info.maximumSessions) in all")
            print("mechanisms Countersign needs:")
            for mechanism in mechanisms {
                print(
                    "  \(mechanism.name.padding(toLength: 22, withPad: " ", startingAt: 0))\(mechanism.present ? "present" : "MISSING")   \(mechanism.purpose)")
            }
        }
        if missing > 0 {
            Terminal.note("\(missing) required mechanism(s) missing: Countersign cannot use this token")
            throw ExitCode.failure
        }
    }
}
