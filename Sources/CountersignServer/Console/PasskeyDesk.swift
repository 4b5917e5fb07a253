import CountersignConfiguration
import CountersignCore
import Crypto
import Foundation
import Ledger
import Logging
import Synchronization
import WebAuthn
import Wire

/// The console's passkeys: enrollment links, and the three ceremonies (register a passkey, sign in, vouch for a
/// verdict), each with a challenge issued here, used once, within two minutes.
///
/// A verdict's challenge binds what is decided: 16 random bytes, then SHA-256 of `countersign-verdict-v1`, the
/// authorization id, the verdict and the SHA-256 of the request as the agent sent it (each followed by a 0 byte).
/// The assertion, recorded in the verdict's audit entry, proves that this person's authenticator signed off on this
/// very payment; replayed onto another payment or verdict, its challenge no longer matches.
final class PasskeyDesk: Sendable {
    enum Ceremony: Sendable {
        case enroll(tokenHash: Data, principal: String)
        case signIn(principal: String)
        case verdict(principal: String, authorizationID: String, verdict: String, requestHash: Data)
    }

    private struct Pending: Sendable {
        var ceremony: Ceremony
        var challenge: [UInt8]
        var expiresAt: Int64
    }

    /// Who signed in.
    struct Person: Sendable {
        var principal: String
        var role: Role
    }

    static let ceremonySeconds: Int64 = 120
    static let enrollmentSeconds: Int64 = 900

    let console: CountersignConfiguration.ServerConfiguration.Console
    let relyingParty: RelyingParty
    private let store: any Store
    private let principals: PrincipalDirectory
    private let audit: AuditDesk
    private let wallClock: WallClock
    private let random: RandomSource
    private let logger: Logger
    /// Ceremonies anyone may start (sign-in, enrollment), and those of signed-in approvers (verdicts): separate, so a
    /// flood of the first never evicts the second.
    private let anonymous = Mutex<[String: Pending]>([:])
    private let signedIn = Mutex<[String: Pending]>([:])
    /// Keys the made-up credential ids of principals that do not exist, so the options do not say who exists.
    private let decoySecret: SymmetricKey
    let limiter: RateLimiter

    init(
        console: CountersignConfiguration.ServerConfiguration.Console, store: any Store, principals: PrincipalDirectory, audit: AuditDesk, wallClock: WallClock,
        random: RandomSource,
        logger: Logger
    ) {
        self.console = console
        self.relyingParty = RelyingParty(id: console.rpID, origins: [console.origin])
        self.store = store
        self.principals = principals
        self.audit = audit
        self.wallClock = wallClock
        self.random = random
        self.logger = logger
        self.limiter = RateLimiter(wallClock: wallClock)
        self.decoySecret = SymmetricKey(data: random.bytes(32))
    }

    var now: Int64 { self.wallClock.secondsSince1970 }

    // MARK: Enrollment links (APPROVERS_ENROLL)

    /// A one-time link for `principal` to register a passkey. A principal not yet registered is created with `role`
    /// and a framed-protocol key whose private half is thrown away at once: it signs in only with its passkeys.
    func enroll(_ request: ApproversEnrollRequest, by admin: String) async throws -> EnrollmentLink {
        let role: Role
        if let existing = self.principals.lookup(request.principal) {
            guard existing.record.revokedAt == nil else { throw WireError(.principalRevoked, "'\(request.principal)' is revoked") }
            guard existing.role != .agent else { throw WireError(.forbidden, "'\(request.principal)' is an agent; agents do not use the console") }
            role = existing.role
        } else {
            role = request.role ?? .approver
            let discarded = Curve25519.Signing.PrivateKey().publicKey
            _ = try await self.principals.add(
                id: request.principal, role: role, key: try CredentialPublicKey(algorithm: .ed25519, rawRepresentation: discarded.rawRepresentation),
                at: self.now)
        }
        let token = self.random.bytes(32)
        let expiresAt = self.now + Self.enrollmentSeconds
        try await self.store.insertEnrollment(
            EnrollmentRecord(tokenHash: Self.hash(token), principal: request.principal, createdBy: admin, createdAt: self.now, expiresAt: expiresAt))
        return EnrollmentLink(
            principal: request.principal, role: role, url: "\(self.console.origin)/console/enroll#\(RelyingParty.base64URLEncode(token))", expiresAt: expiresAt)
    }

    static func hash(_ token: [UInt8]) -> Data { Data(SHA256.hash(data: token)) }

    // MARK: Ceremonies

    /// Options for `navigator.credentials.create()`, for the holder of an open enrollment link.
    func registrationOptions(token: String) async throws -> [String: Any] {
        guard let bytes = RelyingParty.base64URLDecode(token), let enrollment = try await self.store.enrollment(tokenHash: Self.hash(bytes)),
            enrollment.isOpen(at: self.now)
        else { throw ConsoleError(.enrollmentInvalid, "this enrollment link is unknown, already used, or past its 15 minutes: ask an admin for a new one") }
        let existing = try await self.store.passkeys(principal: enrollment.principal)
        let (id, challenge) = self.begin(.enroll(tokenHash: Self.hash(bytes), principal: enrollment.principal))
        return [
            "ceremony": id,
            "publicKey": [
                "challenge": RelyingParty.base64URLEncode(challenge),
                "rp": ["id": self.console.rpID, "name": "Countersign approvals"],
                "user": [
                    "id": RelyingParty.base64URLEncode(Array(enrollment.principal.utf8)), "name": enrollment.principal, "displayName": enrollment.principal,
                ],
                "pubKeyCredParams": [["type": "public-key", "alg": -7], ["type": "public-key", "alg": -8]],
                "authenticatorSelection": ["userVerification": "required", "residentKey": "discouraged"],
                "attestation": "none",
                "timeout": Self.ceremonySeconds * 1000,
                "excludeCredentials": existing.map { ["type": "public-key", "id": RelyingParty.base64URLEncode($0.credentialID)] },
            ] as [String: Any],
        ]
    }

    /// Registers the passkey the browser made, uses the link, and records both in the audit log (with the public key,
    /// so an auditor can check every later verdict offline).
    func register(ceremony id: String, clientDataJSON: [UInt8], attestationObject: [UInt8]) async throws -> Person {
        let (ceremony, challenge) = try self.finish(id)
        guard case .enroll(let tokenHash, let principal) = ceremony else { throw ConsoleError(.passkeyRefused, "this ceremony is not an enrollment") }
        let registration: RelyingParty.Registration
        do {
            registration = try self.relyingParty.register(clientDataJSON: clientDataJSON, attestationObject: attestationObject, challenge: challenge)
        } catch {
            throw ConsoleError(.passkeyRefused, "the passkey was not registered: \(error.message)")
        }
        _ = try self.person(principal)  // a principal revoked since the link was issued registers nothing
        let passkey = PasskeyRecord(
            credentialID: Data(registration.credentialID), principal: principal, publicKey: Data(registration.encodedPublicKey),
            algorithm: registration.publicKey.algorithmName, signCount: Int64(registration.signCount), createdAt: self.now)
        guard try await self.store.passkey(credentialID: passkey.credentialID) == nil,
            try await self.store.enrollment(tokenHash: tokenHash)?.isOpen(at: self.now) == true
        else { throw ConsoleError(.enrollmentInvalid, "this enrollment link is unknown, already used, or past its 15 minutes: ask an admin for a new one") }
        // The key is in the audit log before it can sign anything: every verdict it signs can be checked offline. (If
        // storing it then fails, the entry names a key that never worked.)
        try await self.audit.logAction(
            "approvers.passkey_registered", by: principal, subject: principal,
            details: [
                "credential_id": RelyingParty.base64URLEncode(registration.credentialID), "algorithm": registration.publicKey.algorithmName,
                "public_key": RelyingParty.base64URLEncode(registration.encodedPublicKey),
            ])
        do {
            try await self.store.completeEnrollment(tokenHash: tokenHash, passkey: passkey, at: self.now)
        } catch let error as LedgerError where error.code == .enrollmentInvalid || error.code == .principalExists {
            throw ConsoleError(error.code, error.reason)
        }
        self.logger.notice("passkey registered", metadata: ["principal": "\(principal)"])
        return try self.person(principal)
    }

    /// Options for `navigator.credentials.get()` to sign in as `principal` (an unknown principal gets options too, with
    /// no credentials: the answer does not say who exists).
    func signInOptions(principal: String) async throws -> [String: Any] {
        var ids = self.principals.lookup(principal) == nil ? [] : try await self.store.passkeys(principal: principal).map { Array($0.credentialID) }
        if ids.isEmpty {
            // The same answer for anyone without a passkey: a credential id made up from the name, the same every time.
            ids = [Array(HMAC<SHA256>.authenticationCode(for: Data(principal.utf8), using: self.decoySecret))]
        }
        return self.requestOptions(.signIn(principal: principal), credentials: ids)
    }

    func signIn(ceremony id: String, assertion: RelyingParty.Assertion) async throws -> Person {
        let (ceremony, challenge) = try self.finish(id)
        guard case .signIn(let principal) = ceremony else { throw ConsoleError(.passkeyRefused, "this ceremony is not a sign-in") }
        try await self.verify(assertion, of: principal, challenge: challenge)
        return try self.person(principal)
    }

    /// Options for the assertion that vouches for `verdict` on `authorizationID`, by `principal`.
    func verdictOptions(principal: String, authorizationID: String, verdict: String, requestHash: Data) async throws -> [String: Any] {
        let passkeys = try await self.store.passkeys(principal: principal)
        return self.requestOptions(
            .verdict(principal: principal, authorizationID: authorizationID, verdict: verdict, requestHash: requestHash),
            credentials: passkeys.map { Array($0.credentialID) })
    }

    /// Checks the assertion for a verdict. - Returns: what the verdict's audit entry records.
    func verifyVerdict(
        ceremony id: String, principal: String, authorizationID: String, verdict: String, assertion: RelyingParty.Assertion
    ) async throws
        -> [String: String]
    {
        let (ceremony, challenge) = try self.finish(id)
        guard case .verdict(let owner, let boundID, let boundVerdict, let requestHash) = ceremony, owner == principal, boundID == authorizationID,
            boundVerdict == verdict
        else { throw ConsoleError(.passkeyRefused, "this assertion was asked for another verdict, payment or person") }
        guard challenge.suffix(32) == Array(Self.binding(authorizationID: authorizationID, verdict: verdict, requestHash: requestHash)) else {
            throw ConsoleError(.passkeyRefused, "the challenge does not bind this verdict")
        }
        try await self.verify(assertion, of: principal, challenge: challenge)
        return [
            "passkey_credential_id": RelyingParty.base64URLEncode(assertion.credentialID),
            "passkey_authenticator_data": RelyingParty.base64URLEncode(assertion.authenticatorData),
            "passkey_client_data_json": RelyingParty.base64URLEncode(assertion.clientDataJSON),
            "passkey_signature": RelyingParty.base64URLEncode(assertion.signature), "request_sha256": RelyingParty.base64URLEncode(requestHash),
        ]
    }

    /// SHA-256 over what a verdict's challenge binds (after its 16 random bytes).
    static func binding(authorizationID: String, verdict: String, requestHash: Data) -> SHA256.Digest {
        var hasher = SHA256()
        for part in [Data("countersign-verdict-v1".utf8), Data(authorizationID.utf8), Data(verdict.utf8), requestHash] {
            hasher.update(data: part)
            hasher.update(data: Data([0]))
        }
        return hasher.finalize()
    }

    // MARK: Parts

    private func requestOptions(_ ceremony: Ceremony, credentials: [[UInt8]]) -> [String: Any] {
        let (id, challenge) = self.begin(ceremony)
        return [
            "ceremony": id,
            "publicKey": [
                "challenge": RelyingParty.base64URLEncode(challenge), "rpId": self.console.rpID,
                "allowCredentials": credentials.map { ["type": "public-key", "id": RelyingParty.base64URLEncode($0)] },
                "userVerification": "required", "timeout": Self.ceremonySeconds * 1000,
            ] as [String: Any],
        ]
    }

    private func withPool<Result>(of ceremony: Ceremony, _ body: (inout [String: Pending]) -> Result) -> Result {
        if case .verdict = ceremony { return self.signedIn.withLock { body(&$0) } }
        return self.anonymous.withLock { body(&$0) }
    }

    private func begin(_ ceremony: Ceremony) -> (id: String, challenge: [UInt8]) {
        var challenge = self.random.bytes(32)
        if case .verdict(_, let authorizationID, let verdict, let requestHash) = ceremony {
            challenge = Array(challenge.prefix(16)) + Array(Self.binding(authorizationID: authorizationID, verdict: verdict, requestHash: requestHash))
        }
        let id = RelyingParty.base64URLEncode(self.random.bytes(16))
        let now = self.now
        self.withPool(of: ceremony) { pending in
            // Bounded: when full, the expired go first, then the oldest.
            if pending.count >= Self.maximumCeremonies {
                pending = pending.filter { $0.value.expiresAt > now }
                if pending.count >= Self.maximumCeremonies, let oldest = pending.min(by: { $0.value.expiresAt < $1.value.expiresAt })?.key {
                    pending[oldest] = nil
                }
            }
            pending[id] = Pending(ceremony: ceremony, challenge: challenge, expiresAt: now + Self.ceremonySeconds)
        }
        return (id, challenge)
    }

    static let maximumCeremonies = 10_000

    /// The ceremony `id`, removed: a challenge answers once.
    private func finish(_ id: String) throws -> (Ceremony, [UInt8]) {
        let now = self.now
        let found = self.anonymous.withLock { $0.removeValue(forKey: id) } ?? self.signedIn.withLock { $0.removeValue(forKey: id) }
        guard let found, found.expiresAt > now else {
            throw ConsoleError(.passkeyRefused, "this ceremony is unknown, already answered, or past its two minutes: start again")
        }
        return (found.ceremony, found.challenge)
    }

    private func verify(_ assertion: RelyingParty.Assertion, of principal: String, challenge: [UInt8]) async throws {
        guard let passkey = try await self.store.passkey(credentialID: Data(assertion.credentialID)), passkey.principal == principal else {
            throw ConsoleError(.passkeyRefused, "this passkey is not registered to \(principal)")
        }
        guard let entry = self.principals.lookup(principal), entry.record.revokedAt == nil else {
            throw ConsoleError(.passkeyRefused, "\(principal) is revoked")
        }
        let data: AuthenticatorData
        do {
            let key = try COSEKey(encoded: Array(passkey.publicKey))
            data = try self.relyingParty.verify(assertion, challenge: challenge, publicKey: key, storedSignCount: UInt32(clamping: passkey.signCount))
        } catch {
            self.logger.warning("passkey assertion refused", metadata: ["principal": "\(principal)", "reason": "\(error.reason.rawValue)"])
            throw ConsoleError(.passkeyRefused, "the passkey's answer does not verify: \(error.message)")
        }
        // Atomic against a replay racing this one on another server.
        guard try await self.store.advanceSignCount(credentialID: passkey.credentialID, to: Int64(data.signCount), at: self.now) else {
            throw ConsoleError(.passkeyRefused, "the signature counter did not move forward: a replayed or cloned passkey")
        }
    }

    private func person(_ principal: String) throws -> Person {
        guard let entry = self.principals.lookup(principal), entry.record.revokedAt == nil else {
            throw ConsoleError(.passkeyRefused, "\(principal) is revoked")
        }
        return Person(principal: principal, role: entry.role)
    }
}

/// A console refusal: a stable code, an HTTP status and a sentence.
struct ConsoleError: Error, Sendable {
    let code: ErrorCode
    let message: String

    init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// Fixed-window counters per key (a client address, a principal): enough to stop a flood of sign-ins or enrollment
/// attempts, with memory bounded by the keys of one window.
final class RateLimiter: Sendable {
    private let wallClock: WallClock
    private let windows = Mutex<(start: Int64, counts: [String: Int])>((0, [:]))

    init(wallClock: WallClock) {
        self.wallClock = wallClock
    }

    /// Counts one attempt for `key`; `false` once it has had `limit` in this minute.
    func allow(_ key: String, limit: Int) -> Bool {
        let minute = self.wallClock.secondsSince1970 / 60
        return self.windows.withLock { windows in
            if windows.start != minute { windows = (minute, [:]) }
            let count = windows.counts[key, default: 0]
            guard count < limit else { return false }
            windows.counts[key] = count + 1
            return true
        }
    }
}
