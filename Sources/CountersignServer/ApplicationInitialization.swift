import CountersignConfiguration
import Foundation
import Ledger
import PKCS11
import Wire

/// `countersignd init`: what it created.
public struct InitializationReport: Sendable {
    public var created: [String]
    /// Where the first admin's credential was written, if it was.
    public var adminCredentialPath: String?
    /// What the operator should know: e.g. keys of an earlier installation left on the token.
    public var warnings: [String] = []
}

extension CountersignApplication {
    /// Creates the store, the sealing key and every tier's first key version, and the first admin with its
    /// credential file (mode 0600). Idempotent: what exists is kept.
    public static func initialize(
        configuration: ServerConfiguration, pin: PIN, adminID: String = "admin", environment: ServerEnvironment = .init()
    ) async throws -> InitializationReport {
        let (lock, store) = try await Self.openStore(configuration, environment: environment)
        defer { withExtendedLifetime(lock) {} }
        let hsm: HSMRuntime
        do {
            hsm = try HSMRuntime(
                configuration: configuration.hsm, pin: pin, time: environment.time, logger: environment.logger, module: environment.pkcs11Module)
        } catch {
            await store.close()
            throw error
        }
        do {
            var report = InitializationReport(created: [], adminCredentialPath: nil)
            let isNewStore = try await store.keyVersions().isEmpty
            if isNewStore {
                // A diagnostic only: a token that cannot be listed does not stop `init`.
                let foreign = (try? await KeyRing.foreignKeys(store: store, hsm: hsm)) ?? []
                if !foreign.isEmpty {
                    report.warnings.append(
                        "the token already holds \(foreign.count) Countersign key pair(s) that this new store does not know (\(foreign.joined(separator: ", "))): "
                            + "an earlier installation's, e.g. from a removed data directory. They stay on the token, unused; new keys are made beside them. "
                            + "If that installation is gone for good, delete them with your HSM's tools (for SoftHSM: pkcs11-tool --delete-object)."
                    )
                }
            }
            report.created += try await KeyRing.provision(
                tiers: configuration.tiers, store: store, hsm: hsm, now: environment.wallClock.secondsSince1970, random: environment.random)
            if try await !store.principals().contains(where: { $0.role == Role.admin.rawValue }) {
                let path = (configuration.dataDirectory as NSString).appendingPathComponent("\(adminID).credential")
                let key = CredentialPrivateKey.generate(.es256)
                try CredentialFile(principal: adminID, key: key, server: configuration.listen.description).write(path: path)
                try await store.insertPrincipal(
                    PrincipalRecord(
                        id: adminID, role: Role.admin.rawValue, algorithm: key.algorithm.rawValue, publicKey: key.publicKey.rawRepresentation,
                        createdAt: environment.wallClock.secondsSince1970
                    )
                )
                report.created.append("admin '\(adminID)' with its credential in \(path)")
                report.adminCredentialPath = path
            }
            await hsm.shutdown()
            await store.close()
            return report
        } catch {
            await hsm.shutdown()
            await store.close()
            throw error
        }
    }
}
