import ArgumentParser
import CountersignClient
import Foundation
import Signing
import Wire

/// `countersign keys …`.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "The published signing keys.",
        subcommands: [JWKSCommand.self]
    )
}

/// `countersign keys jwks`: print the JWK Set.
struct JWKSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jwks", abstract: "Print the key set (RFC 7517 JWKS) that merchants verify against.")

    @OptionGroup var client: ClientOptions

    func run() async throws {
        let connection = try await self.client.connect()
        defer { Task { await connection.close() } }
        try JSONOutput.print(try await connection.keys())
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

    @Option(name: .customLong("jwks"), help: "A JWKS file; without it the key set is fetched from the server.")
    var jwksFile: String?

    @OptionGroup var client: ClientOptions

    func run() async throws {
        let keySet: JWKSet
        if let path = self.jwksFile {
            guard let data = FileManager.default.contents(atPath: path), let decoded = try? JSONDecoder().decode(JWKSet.self, from: data) else {
                throw ValidationError("'\(path)' is not a JWKS file")
            }
            keySet = decoded
        } else {
            let connection = try await self.client.connect()
            keySet = try await connection.keys()
            await connection.close()
        }
        let (header, claims) = try AuthorizationVerifier(keySet: keySet).verify(self.token, now: Int64(Date().timeIntervalSince1970))
        let approvers = claims.approvers.map { ", approved by \($0.joined(separator: ", "))" } ?? ""
        print("valid: \(claims.amount) minor units \(claims.currency) to \(claims.aud) for \(claims.sub), tier \(claims.tier), key \(header.kid), expires \(claims.exp)\(approvers)")
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
