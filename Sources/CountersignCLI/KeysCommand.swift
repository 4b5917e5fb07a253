import ArgumentParser
import CountersignClient
import Foundation
import Signing
import Wire

/// `countersign keys …`.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Signing keys: publish, list, rotate, retire, destroy, adopt (admin credential except jwks).",
        subcommands: [JWKSCommand.self, List.self, Rotate.self, Activate.self, Retire.self, Destroy.self, Adopt.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every key version: state, backend, tier, times and signatures.")

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let keys = try await connection.listKeys()
                if self.json {
                    try JSONOutput.print(KeysList(keys: keys))
                    return
                }
                for key in keys {
                    let times = [
                        ("created", key.createdAt), ("activated", key.activatedAt), ("rotated", key.rotatedAt), ("retired", key.retiredAt),
                        ("destroyed", key.destroyedAt),
                    ].compactMap { name, time in time.map { "\(name) \(Terminal.time($0))" } }
                    print(
                        "\(key.kid)\t\(key.state)\t\(key.backend)\(key.adopted ? " (adopted)" : "")\ttier \(key.tier ?? "-")\t\(key.signatures) signatures\t\(times.joined(separator: ", "))"
                    )
                }
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the next version of a key and make it active; the current one stays published as verify-only."
        )

        @Argument(help: "The key name, e.g. standard.")
        var name: String

        @Flag(help: "Only publish the new version (pending); make it active later with `keys activate`.")
        var stage = false

        @Option(help: "software or hsm (default: the tier's backend); moves a software tier's key into the HSM.")
        var backend: String?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let key = try await connection.rotateKey(name: self.name, stage: self.stage, backend: self.backend)
                print("\(key.kid): \(key.state) (\(key.backend))")
            }
        }
    }

    struct Activate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a pending version the active one.")

        @Argument(help: "The version, e.g. standard/v3.")
        var kid: String

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let key = try await connection.activateKey(kid: self.kid)
                print("\(key.kid): \(key.state)")
            }
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop publishing a verify-only version (refused while authorizations it signed are unexpired, unless --force)."
        )

        @Argument(help: "The version, e.g. standard/v1.")
        var kid: String

        @Flag(help: "Retire even though unexpired authorizations it signed will no longer verify.")
        var force = false

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let key = try await connection.retireKey(kid: self.kid, force: self.force)
                print("\(key.kid): \(key.state)")
            }
        }
    }

    struct Destroy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destroy a retired version's material: one admin asks, a second, different admin confirms within an hour."
        )

        @Argument(help: "The version, e.g. standard/v1.")
        var kid: String

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let destruction = try await connection.destroyKey(kid: self.kid)
                if destruction.state == "destroyed" {
                    print("\(destruction.kid): destroyed (asked by \(destruction.requestedBy), confirmed by \(destruction.confirmedBy ?? "?"))")
                } else {
                    print(
                        "\(destruction.kid): awaiting a second admin's confirmation before \(Terminal.time(destruction.confirmBefore ?? 0)) (asked by \(destruction.requestedBy))"
                    )
                }
            }
        }
    }

    struct Adopt: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a P-256 key pair generated on the token (e.g. with pkcs11-tool) the next, active version of a key."
        )

        @Argument(help: "The key name, e.g. high.")
        var name: String

        @Option(help: "The pair's CKA_LABEL.")
        var label: String?

        @Option(help: "The pair's CKA_ID, in hex.")
        var id: String?

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await self.client.withConnection { connection in
                let key = try await connection.adoptKey(name: self.name, label: self.label, id: self.id)
                print("\(key.kid): \(key.state) (adopted \(key.backend) key pair)")
            }
        }
    }
}

/// `countersign keys jwks`: print the JWK Set.
struct JWKSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jwks",
        abstract: "Print the key set (RFC 7517 JWKS) that merchants verify against; no credential needed (it is public over HTTP)."
    )

    @Option(
        name: .customLong("url"),
        help: "Where the key set is (default: the server's HTTP listener, http://127.0.0.1:7680/.well-known/jwks.json, without a credential).")
    var url: String?

    @OptionGroup var client: ClientOptions

    func run() async throws {
        try JSONOutput.print(try await self.client.keySet(file: self.url))
    }
}

/// `countersign verify <jws>`: what a merchant does, offline.
struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify an authorization against the JWKS: signature, time window, and that the key's tier may sign the amount."
    )

    @Argument(help: "The compact JWS.")
    var token: String

    @Option(name: .customLong("jwks"), help: "A JWKS file or URL; without it the key set comes from the server (over HTTP without a credential).")
    var jwksFile: String?

    @Flag(help: "Print the verified header and claims as JSON.")
    var json = false

    @OptionGroup var client: ClientOptions

    struct Verified: Encodable {
        var header: JWSHeader
        var claims: AuthorizationClaims
    }

    func run() async throws {
        let keySet = try await self.client.keySet(file: self.jwksFile)
        let (header, claims) = try AuthorizationVerifier(keySet: keySet).verify(self.token, now: Int64(Date().timeIntervalSince1970))
        if self.json {
            try JSONOutput.print(Verified(header: header, claims: claims))
            return
        }
        let approvers = claims.approvers.map { ", approved by \($0.joined(separator: ", "))" } ?? ""
        print(
            "valid: \(Terminal.money(claims.amount, claims.currency)) to \(claims.aud) for \(claims.sub), tier \(claims.tier), key \(header.kid), expires \(Terminal.time(claims.exp))\(approvers)"
        )
    }
}

/// `countersign ping`.
struct PingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ping", abstract: "Connect, authenticate and ping the server.")

    @OptionGroup var client: ClientOptions

    func run() async throws {
        let started = ContinuousClock.now
        let connection = try await self.client.connect()
        try await connection.ping()
        await connection.close()
        print("pong from \(connection.welcome.principal)'s server in \(StepPrinter.milliseconds(ContinuousClock.now - started)) ms")
    }
}
