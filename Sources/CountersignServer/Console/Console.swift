import CountersignConfiguration
import CountersignCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdAuth
import HummingbirdCore
import Ledger
import Logging
import NIOCore
import Policy
import WebAuthn
import Wire

/// What a signed-in person's session holds (in this server's memory; the cookie holds only its random id).
struct ConsoleSession: Codable, Sendable {
    var principal: String
    var role: String
    /// Sent back by the page on every state change (`X-CSRF-Token`), compared in constant time.
    var csrf: String
}

/// The request context of the HTTP listener: the session, and the client's address for rate limits.
struct ConsoleContext: RequestContext, SessionRequestContext {
    typealias Session = ConsoleSession
    var coreContext: CoreRequestContextStorage
    let sessions: SessionContext<ConsoleSession>
    let clientAddress: String

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.sessions = .init()
        self.clientAddress = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// Console bodies are small JSON: a passkey's answer is a few kilobytes.
    var maxUploadSize: Int { 64 * 1024 }
}

/// The approvals console: its pages, its JSON endpoints, and what they read and do (docs/console.md).
final class Console: Sendable {
    let passkeys: PasskeyDesk
    let approvals: ApprovalDesk
    let budgets: BudgetReports
    let audit: AuditDesk
    let principals: PrincipalDirectory
    let keyRing: KeyRing
    let store: any Store
    let notifier: ApprovalNotifier
    let wallClock: WallClock
    let random: RandomSource
    let logger: Logger
    let sessionStorage = MemoryPersistDriver()
    let pages = ConsolePages.shared

    init(
        passkeys: PasskeyDesk, approvals: ApprovalDesk, budgets: BudgetReports, audit: AuditDesk, principals: PrincipalDirectory, keyRing: KeyRing,
        store: any Store, notifier: ApprovalNotifier, wallClock: WallClock, random: RandomSource, logger: Logger
    ) {
        self.passkeys = passkeys
        self.approvals = approvals
        self.budgets = budgets
        self.audit = audit
        self.principals = principals
        self.keyRing = keyRing
        self.store = store
        self.notifier = notifier
        self.wallClock = wallClock
        self.random = random
        self.logger = logger
    }

    var now: Int64 { self.wallClock.secondsSince1970 }

    func install(on router: Router<ConsoleContext>) {
        let console = router.group("/console")
        console.add(
            middleware: SessionMiddleware(
                storage: self.sessionStorage,
                configuration: .init(
                    sessionCookieParameters: .init(name: "countersign_session", path: "/console", secure: true, sameSite: .strict),
                    defaultSessionExpiration: self.passkeys.console.sessionLifetime)))
        ConsoleRoutes(console: self).install(on: console)
    }

    /// The signed-in person, checked again on every request: a revoked principal's session ends at once.
    func person(_ context: ConsoleContext) throws -> (session: ConsoleSession, role: Role) {
        guard let session = context.sessions.session, let role = Role(rawValue: session.role) else {
            throw ConsoleError(.sessionRequired, "sign in with your passkey")
        }
        guard let entry = self.principals.lookup(session.principal), entry.record.revokedAt == nil, entry.role == role else {
            // Useless from now on (checked on every request); it expires from memory with its lifetime.
            throw ConsoleError(.sessionRequired, "this session has ended: sign in again")
        }
        return (session, role)
    }

    /// Starts a session for a person who just proved their passkey (a fresh id: never one set before sign-in).
    func startSession(_ person: PasskeyDesk.Person, context: ConsoleContext) -> ConsoleSession {
        let session = ConsoleSession(
            principal: person.principal, role: person.role.rawValue, csrf: RelyingParty.base64URLEncode(self.random.bytes(32)))
        context.sessions.createSession(session, expiresIn: self.passkeys.console.sessionLifetime)
        return session
    }
}
