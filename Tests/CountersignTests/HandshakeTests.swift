import CountersignClient
import CountersignServer
import Foundation
import Signing
import TestSupport
import Testing
import Wire

@Suite("The handshake and who may do what", .timeLimit(.minutes(1)))
struct HandshakeTests {
    /// Sends HELLO and returns the challenge bytes.
    static func hello(_ raw: RawConnection, principal: String) async throws -> [UInt8] {
        try await raw.write(.hello, id: 1, Hello(principal: principal))
        let frame = try #require(try await raw.next())
        #expect(frame.type == .challenge)
        let challenge = try WireJSON.decode(Challenge.self, from: frame.body)
        return try #require(Base64URL.decode(challenge.challenge))
    }

    static func auth(_ credential: CredentialFile, challenge: [UInt8]) throws -> Auth {
        let transcript = Handshake.transcript(version: WireProtocol.version, principal: credential.principal, challenge: challenge)
        return Auth(algorithm: credential.algorithm, signature: Base64URL.encode(try credential.key().signature(for: transcript)))
    }

    @Test("a replayed handshake signature is refused on another connection, and a challenge is spent by one attempt")
    func replay() async throws {
        try await withServer { server in
            let credential = try await server.addPrincipal("agent-replay")
            let recorded = try await RawConnection.with(port: server.port) { raw in
                let challenge = try await Self.hello(raw, principal: credential.principal)
                let auth = try Self.auth(credential, challenge: challenge)
                try await raw.write(.auth, id: 2, auth)
                #expect(try await raw.next()?.type == .welcome)
                // Once authenticated, the handshake cannot be run again on the connection.
                try await raw.write(.auth, id: 3, auth)
                #expect(try await raw.nextError()?.code == .invalidRequest)
                return auth
            }
            try await RawConnection.with(port: server.port) { raw in
                let challenge = try await Self.hello(raw, principal: credential.principal)
                #expect(Base64URL.encode(challenge) != "", "a fresh challenge")
                try await raw.write(.auth, id: 2, recorded)
                let error = try await raw.nextError()
                #expect(error?.code == .authenticationFailed)
                #expect(try await raw.next() == nil, "the server closed the connection")
            }
        }
    }

    @Test("an unknown principal and a bad signature get the same AUTHENTICATION_FAILED")
    func unknownPrincipal() async throws {
        try await withServer { server in
            let stranger = CredentialFile(principal: "nobody", key: .generate(.es256), server: nil)
            let unknown = await #expect(throws: WireError.self) { try await server.connect(stranger) }
            #expect(unknown?.code == .authenticationFailed)

            let registered = try await server.addPrincipal("agent-impostor")
            let impostor = CredentialFile(principal: registered.principal, key: .generate(.es256), server: nil)
            let badSignature = await #expect(throws: WireError.self) { try await server.connect(impostor) }
            #expect(badSignature == unknown, "nothing tells an attacker which ids exist")
        }
    }

    @Test("a revoked agent is refused at the handshake, and loses its open connection's rights at once")
    func revoked() async throws {
        try await withServer { server in
            let credential = try await server.addPrincipal("agent-revoked")
            let connected = try await server.connect(credential)
            #expect(try await connected.authorize(TestServer.request(100)).tier == "standard")

            let admin = try await server.connect(server.admin)
            let revoked = try await admin.revokeAgent(id: credential.principal)
            #expect(revoked.revokedAt != nil)
            #expect(try await admin.listAgents().first { $0.id == credential.principal }?.revokedAt != nil)

            let refused = await #expect(throws: WireError.self) { try await server.connect(credential) }
            #expect(refused?.code == .principalRevoked)
            try await RawConnection.with(port: server.port) { raw in
                let challenge = try await Self.hello(raw, principal: credential.principal)
                try await raw.write(.auth, id: 2, try Self.auth(credential, challenge: challenge))
                #expect(try await raw.nextError()?.code == .principalRevoked)
                #expect(try await raw.next() == nil, "the connection is closed after PRINCIPAL_REVOKED")
            }
            let cut = await #expect(throws: WireError.self) { try await connected.authorize(TestServer.request(100)) }
            #expect(cut?.code == .principalRevoked)

            let again = await #expect(throws: WireError.self) {
                try await admin.addAgent(id: credential.principal, publicKey: CredentialPrivateKey.generate(.es256).publicKey)
            }
            #expect(again?.code == .principalExists, "ids are never reused")
            let missing = await #expect(throws: WireError.self) { try await admin.revokeAgent(id: "never-was") }
            #expect(missing?.code == .principalNotFound)
            await connected.close()
            await admin.close()
        }
    }

    @Test("an agent cannot call admin messages, and an admin cannot request authorizations")
    func roles() async throws {
        try await withServer { server in
            let agent = try await server.connect(try await server.addPrincipal("agent-roles"))
            for attempt in [
                { try await agent.listAgents() } as @Sendable () async throws -> Any,
                { try await agent.addAgent(id: "sneaky", publicKey: CredentialPrivateKey.generate(.es256).publicKey, role: .admin) },
                { try await agent.revokeAgent(id: "admin") },
            ] {
                let error = await #expect(throws: WireError.self) { _ = try await attempt() }
                #expect(error?.code == .forbidden)
            }
            let admin = try await server.connect(server.admin)
            let error = await #expect(throws: WireError.self) { try await admin.authorize(TestServer.request(100)) }
            #expect(error?.code == .forbidden)
            #expect(try await admin.listAgents().map(\.id).contains("sneaky") == false)
            // Both may read the key set and ping.
            try await agent.ping()
            #expect(try await admin.keys().keys.count == 3, "two tiers' keys and the audit key")
            await agent.close()
            await admin.close()
        }
    }

    @Test("nothing but the handshake is accepted before it completes")
    func handshakeFirst() async throws {
        try await withServer { server in
            try await RawConnection.with(port: server.port) { raw in
                try await raw.write(.ping, id: 5, Empty())
                let error = try await raw.nextError()
                #expect(error?.code == .handshakeRequired)
                try await raw.write(.authorize, id: 6, TestServer.request(100))
                #expect(try await raw.nextError()?.code == .handshakeRequired)
                try await raw.write(.auth, id: 7, Auth(algorithm: .es256, signature: "AAAA"))
                #expect(try await raw.nextError()?.code == .handshakeRequired)
                // Still usable: the handshake can start now.
                _ = try await Self.hello(raw, principal: "anyone")
            }
        }
    }

    @Test("a handshake that does not complete in time is closed with HANDSHAKE_TIMEOUT; an authenticated one is not")
    func handshakeTimeout() async throws {
        let clock = ManualClock()
        try await withServer(.init(handshakeTimeout: "5s", clock: clock)) { server in
            let credential = try await server.addPrincipal("agent-patient")
            let authenticated = try await server.connect(credential)
            try await RawConnection.with(port: server.port) { raw in
                _ = try await Self.hello(raw, principal: credential.principal)
                // Three connections have started their timers: the admin's (closed), the agent's, this one.
                await clock.waitForSleepers(2)
                clock.advance(by: .milliseconds(4999))
                try await authenticated.ping()
                clock.advance(by: .milliseconds(1))
                let error = try await raw.nextError()
                #expect(error?.code == .handshakeTimeout)
                #expect(try await raw.next() == nil)
            }
            try await authenticated.ping()
            await authenticated.close()
        }
    }

    @Test("a connection idle for the idle timeout is closed with IDLE_TIMEOUT")
    func idleTimeout() async throws {
        let clock = ManualClock()
        try await withServer(.init(handshakeTimeout: "5s", idleTimeout: "90s", clock: clock)) { server in
            let credential = try await server.addPrincipal("agent-idle")
            try await RawConnection.with(port: server.port) { raw in
                let challenge = try await Self.hello(raw, principal: credential.principal)
                try await raw.write(.auth, id: 2, try Self.auth(credential, challenge: challenge))
                #expect(try await raw.next()?.type == .welcome)
                // Quiet since t=0. At t=5 the handshake timer ends and the idle timer sleeps until t=90.
                clock.advance(by: .seconds(5))
                try await eventually("the idle timer sleeps") { clock.sleeperCount >= 1 }
                clock.advance(by: .seconds(84))
                try await raw.write(.ping, id: 3, Empty())
                #expect(try await raw.next()?.type == MessageType.ping.response, "still open at t=89")
                // The ping at t=89 was activity: the timer that wakes at t=90 sleeps again until t=179.
                clock.advance(by: .seconds(1))
                try await eventually("the idle timer sleeps again") { clock.sleeperCount >= 1 }
                clock.advance(by: .seconds(89))
                let error = try await raw.nextError()
                #expect(error?.code == .idleTimeout)
                #expect(error?.retryable == true)
                #expect(try await raw.next() == nil)
            }
        }
    }
}
