import CountersignClient
import CountersignConfiguration
import CountersignServer
import Crypto
import Foundation
import Ledger
import PKCS11
import Policy
import Signing
import TestSupport
import Testing
import Wire

@Suite("Authorizations end to end over loopback TCP against SoftHSM", .timeLimit(.minutes(2)))
struct AuthorizationTests {
    @Test("a small and a large authorization verify against the JWKS; the small is software-signed, the large by a key inside the token")
    func smallAndLarge() async throws {
        try await withServer { server in
            let credential = try await server.addPrincipal("agent-small-large")
            let client = try await server.connect(credential)
            #expect(client.welcome == Welcome(principal: "agent-small-large", role: .agent))
            let small = try await client.authorize(TestServer.request(1_250))
            let large = try await client.authorize(TestServer.request(1_200_000))
            let keySet = try await client.keys()
            await client.close()

            #expect(small.tier == "standard" && small.kid == "standard/v1" && small.keyBackend == "software")
            #expect(large.tier == "high" && large.kid == "high/v1" && large.keyBackend == "hsm")
            #expect(small.authorizationID != large.authorizationID)
            // An id is 16 bytes: the issue time in seconds and its milliseconds (big-endian), then 10 random bytes.
            for id in [small.authorizationID, large.authorizationID] {
                let bytes = try #require(Base64URL.decode(id))
                #expect(bytes.count == 16)
                let seconds = bytes.prefix(4).reduce(Int64(0)) { $0 << 8 | Int64($1) }
                #expect(abs(seconds - Int64(Date().timeIntervalSince1970)) < 60)
                #expect(Int(bytes[4]) << 8 | Int(bytes[5]) < 1000)
            }

            // Verify the ES256 signature by hand with swift-crypto: the JWK's point, the signing input, r‖s.
            for authorization in [small, large] {
                let parts = authorization.jws.split(separator: ".").map(String.init)
                #expect(parts.count == 3)
                let jwk = try #require(keySet.key(kid: authorization.kid))
                let publicKey = try Self.point(of: jwk)
                let signature = try P256.Signing.ECDSASignature(rawRepresentation: try #require(Base64URL.decode(parts[2])))
                #expect(publicKey.isValidSignature(signature, for: Array((parts[0] + "." + parts[1]).utf8)))
                #expect(!publicKey.isValidSignature(signature, for: Array((parts[0] + "." + parts[1] + "x").utf8)))
            }

            let now = Int64(Date().timeIntervalSince1970)
            let (header, claims) = try AuthorizationVerifier(keySet: keySet).verify(large.jws, now: now)
            #expect(header == JWSHeader(kid: "high/v1"))
            #expect(claims.sub == "agent-small-large" && claims.aud == "m-42" && claims.amount == 1_200_000 && claims.currency == "USD")
            #expect(claims.mcc == "5734" && claims.tier == "high" && claims.iss == "countersign.test")
            #expect(claims.exp - claims.iat == 120 && claims.nbf == claims.iat && claims.exp == large.expiresAt)
            #expect(claims.intentHash == IntentHash.of(TestServer.request(1_200_000).intent))
            #expect(claims.policyVersion == server.application.configuration.policy.version)
            #expect(Base64URL.decode(claims.jti)?.count == 16)
            let idTime = Base64URL.decode(claims.jti)?.prefix(4).reduce(Int64(0)) { $0 << 8 | Int64($1) }
            #expect(idTime == claims.iat, "a direct authorization's id begins with its iat")

            // The low-tier key cannot vouch for the high amount: a merchant checking max_amount refuses it.
            var forged = keySet
            for index in forged.keys.indices where forged.keys[index].kid == "high/v1" {
                forged.keys[index].maxAmount = ["USD": 50_000]
            }
            #expect(throws: VerificationError.self) { try AuthorizationVerifier(keySet: forged).verify(large.jws, now: now) }
            #expect(throws: VerificationError.self) { try AuthorizationVerifier(keySet: keySet).verify(large.jws, now: claims.exp) }

            // The high tier's key is on the token: private, sensitive, never extractable, same public point.
            let record = try #require(try await server.application.store.keyVersions().first { $0.name == "high" })
            let hsmID = try #require(record.hsmID)
            let pool = server.application.hsm.sessions
            let (sensitive, extractable, tokenPoint) = try await pool.withSession { session in
                let privateKey = try session.findKey(.privateKey, id: Array(hsmID))
                let publicKey = try session.findKey(.publicKey, id: Array(hsmID))
                return (
                    try session.boolAttribute(.sensitive, of: privateKey), try session.boolAttribute(.extractable, of: privateKey),
                    try session.p256PublicKey(publicKey).x963Representation
                )
            }
            #expect(sensitive && !extractable)
            let highJWK = try #require(keySet.key(kid: "high/v1"))
            #expect(highJWK.backend == "hsm")
            #expect(tokenPoint == (try Self.point(of: highJWK)).x963Representation)
            // The software key is stored only sealed: the store never holds its scalar in the clear.
            let software = try #require(try await server.application.store.keyVersions().first { $0.name == "standard" })
            #expect(software.sealedPrivateKey?.count == 12 + 32 + 16)
        }
    }

    static func point(of jwk: JWK) throws -> P256.Signing.PublicKey {
        let x: [UInt8] = try #require(Base64URL.decode(jwk.x))
        let y: [UInt8] = try #require(Base64URL.decode(jwk.y))
        return try P256.Signing.PublicKey(x963Representation: [0x04] + x + y)
    }

    @Test("an Ed25519 agent authenticates and is authorized")
    func ed25519Agent() async throws {
        try await withServer { server in
            let client = try await server.connect(try await server.addPrincipal("agent-ed", algorithm: .ed25519))
            let authorization = try await client.authorize(TestServer.request(999))
            #expect(authorization.tier == "standard")
            await client.close()
        }
    }

    @Test("1,000 pipelined requests on one connection are all answered correctly")
    func pipelined() async throws {
        try await withServer(.init(maxInFlight: 64)) { server in
            let client = try await server.connect(try await server.addPrincipal("agent-pipeline"))
            let results = try await withThrowingTaskGroup(of: (Int64, Authorization).self) { group in
                for index in 0..<1000 {
                    let amount: Int64 = index % 10 == 0 ? 100_000 + Int64(index) : 100 + Int64(index)
                    group.addTask { (amount, try await client.authorize(TestServer.request(amount))) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let keySet = try await client.keys()
            await client.close()
            #expect(results.count == 1000)
            #expect(Set(results.map(\.1.authorizationID)).count == 1000)
            let verifier = AuthorizationVerifier(keySet: keySet)
            let now = Int64(Date().timeIntervalSince1970)
            for (amount, authorization) in results {
                let (_, claims) = try verifier.verify(authorization.jws, now: now)
                #expect(claims.amount == amount)
                #expect(authorization.tier == (amount > 50_000 ? "high" : "standard"))
            }
        }
    }

    @Test("50 concurrent connections are all answered correctly")
    func concurrentConnections() async throws {
        try await withServer { server in
            let credential = try await server.addPrincipal("agent-many")
            let answered = try await withThrowingTaskGroup(of: Int.self) { group in
                for connection in 0..<50 {
                    group.addTask {
                        let client = try await server.connect(credential)
                        var count = 0
                        for index in 0..<10 {
                            let amount = Int64(connection * 100 + index + 1) * (index == 0 ? 1_000 : 1)
                            let authorization = try await client.authorize(TestServer.request(amount))
                            let parsed = try CompactJWS.parse(authorization.jws)
                            let claims = try JSONDecoder().decode(AuthorizationClaims.self, from: Data(parsed.payload))
                            if claims.amount == amount, parsed.header.kid == authorization.kid { count += 1 }
                        }
                        await client.close()
                        return count
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(answered == 500)
        }
    }

    @Test("refusals carry their codes: unaccepted currency, amount above the last tier, unknown currency")
    func refusals() async throws {
        try await withServer { server in
            let client = try await server.connect(try await server.addPrincipal("agent-refused"))
            let euro = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100, "EUR")) }
            #expect(euro?.code == .currencyNotAccepted)
            #expect(euro?.message == "EUR is not accepted; this server authorizes JPY, USD")
            let tooMuch = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(5_000_001)) }
            #expect(tooMuch?.code == .amountAboveLimit)
            #expect(tooMuch?.message == "50000.01 USD is above the highest tier's limit")
            let yen = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(75_001, "JPY")) }
            #expect(yen?.code == .amountAboveLimit)
            let unknown = await #expect(throws: WireError.self) { try await client.authorize(TestServer.request(100, "XYZ")) }
            #expect(unknown?.code == .currencyNotAccepted)
            // The connection is still good after refusals.
            #expect(try await client.authorize(TestServer.request(100)).tier == "standard")
            await client.close()
        }
    }
}
