import CountersignConfiguration
import CountersignCore
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdAuth
import HummingbirdCore
import Ledger
import Logging
import NIOCore
import Policy
import ServiceLifecycle
import WebAuthn
import Wire

/// The console's routes. Pages are GET and change nothing; every change is a POST to `/console/api/…` from the page's
/// own script, which must come from the console's origin and, once signed in, carry the session's CSRF token. Roles are
/// checked here, on the server, for every page and action: approvers see and decide payments; admins see payments
/// and the read-only views; auditors see the audit log, keys and agents.
struct ConsoleRoutes: Sendable {
    let console: Console

    static let readers: Set<Role> = [.approver, .admin, .auditor]
    static let paymentReaders: Set<Role> = [.approver, .admin]

    func install(on group: RouterGroup<ConsoleContext>) {
        let console = self.console
        group.get("") { _, context in
            Response(status: .seeOther, headers: [.location: context.sessions.session == nil ? "/console/login" : "/console/approvals"])
        }
        group.get("/static/console.css") { _, _ in Self.asset(ConsoleAssets.css, type: "text/css; charset=utf-8") }
        group.get("/static/console.js") { _, _ in Self.asset(ConsoleAssets.javascript, type: "text/javascript; charset=utf-8") }
        group.get("/login") { _, _ in console.pages.html("login", ["title": "Sign in"]) }
        group.get("/enroll") { _, _ in console.pages.html("enroll", ["title": "Register your passkey"]) }

        // Ceremonies before a session: the origin must be the console's, and attempts are limited per client and person.
        group.post("/api/enroll/options") { request, context in
            try self.checkOrigin(request)
            try self.limit("enroll:\(context.clientAddress)", 20)
            let body = try await Self.json(request)
            return try Self.json(try await console.passkeys.registrationOptions(token: try Self.string(body, "token")))
        }
        group.post("/api/enroll") { request, context in
            try self.checkOrigin(request)
            try self.limit("enroll:\(context.clientAddress)", 20)
            let body = try await Self.json(request)
            let response = try Self.object(body, "response")
            let person = try await console.passkeys.register(
                ceremony: try Self.string(body, "ceremony"), clientDataJSON: try Self.bytes(response, "clientDataJSON"),
                attestationObject: try Self.bytes(response, "attestationObject"))
            _ = console.startSession(person, context: context)
            return try Self.json(["principal": person.principal, "redirect": Self.home(person.role)])
        }
        group.post("/api/login/options") { request, context in
            try self.checkOrigin(request)
            let principal = try Self.string(try await Self.json(request), "principal")
            try self.limit("login:\(context.clientAddress)", 30)
            // Per address and person: a stranger cannot lock someone out by trying their name from elsewhere.
            try self.limit("login:\(context.clientAddress):\(principal)", 10)
            return try Self.json(try await console.passkeys.signInOptions(principal: principal))
        }
        group.post("/api/login") { request, context in
            try self.checkOrigin(request)
            try self.limit("login:\(context.clientAddress)", 30)
            let body = try await Self.json(request)
            let person = try await console.passkeys.signIn(ceremony: try Self.string(body, "ceremony"), assertion: try Self.assertion(body))
            _ = console.startSession(person, context: context)
            console.logger.notice("console sign-in", metadata: ["principal": "\(person.principal)"])
            return try Self.json(["principal": person.principal, "redirect": Self.home(person.role)])
        }
        group.post("/api/logout") { request, context in
            _ = try self.stateChange(request, context, roles: Self.readers)
            context.sessions.clearSession()
            return try Self.json(["redirect": "/console/login"])
        }

        // Payments waiting for approvers.
        group.get("/approvals") { _, context in
            let (session, role) = try self.page(context, roles: Self.paymentReaders)
            let rows = try await self.approvalRows()
            return console.pages.html(
                "approvals", self.frame(session, role, title: "Waiting for approval", page: "approvals").merging(["rows": rows, "empty": rows.isEmpty]) { $1 })
        }
        group.get("/approvals/rows") { _, context in
            _ = try self.page(context, roles: Self.paymentReaders)
            let rows = try await self.approvalRows()
            return console.pages.html("rows", ["rows": rows, "empty": rows.isEmpty])
        }
        group.get("/events") { request, context in
            let (session, _) = try self.page(context, roles: Self.paymentReaders)
            return self.events(for: session.principal)
        }
        group.get("/approvals/:id") { _, context in
            let (session, role) = try self.page(context, roles: Self.paymentReaders)
            let id = try context.parameters.require("id")
            return console.pages.html(
                "approval", self.frame(session, role, title: "Payment \(id)", page: "approval").merging(try await self.approvalPage(id, role: role)) { $1 })
        }
        for verdict in ["approve", "deny"] {
            group.post("/api/approvals/:id/\(verdict)/options") { request, context in
                let session = try self.stateChange(request, context, roles: [.approver])
                let id = try context.parameters.require("id")
                guard let record = try await console.store.authorization(id: id), record.quorum != nil else {
                    throw ConsoleError(.authorizationNotFound, "no payment '\(id)' waiting for approvers")
                }
                return try Self.json(
                    try await console.passkeys.verdictOptions(
                        principal: session.principal, authorizationID: id, verdict: verdict, requestHash: record.requestHash))
            }
            group.post("/api/approvals/:id/\(verdict)") { request, context in
                let session = try self.stateChange(request, context, roles: [.approver])
                let id = try context.parameters.require("id")
                let body = try await Self.json(request)
                let evidence = try await console.passkeys.verifyVerdict(
                    ceremony: try Self.string(body, "ceremony"), principal: session.principal, authorizationID: id, verdict: verdict,
                    assertion: try Self.assertion(body))
                do {
                    let detail = try await console.approvals.decide(
                        id, approver: session.principal, verdict: verdict == "approve" ? .approve : .deny, evidence: evidence)
                    return try Self.json(["status": detail.approval.status, "redirect": "/console/approvals/\(id)"])
                } catch let error as any CountersignError {
                    throw ConsoleError(error.code, error.reason)
                }
            }
        }

        // Read-only views.
        group.get("/audit") { request, context in
            let (session, role) = try self.page(context, roles: Self.readers)
            return console.pages.html(
                "audit", self.frame(session, role, title: "Audit log", page: "audit").merging(try await self.auditPage(request)) { $1 })
        }
        group.get("/api/audit/proof/:index") { _, context in
            _ = try self.page(context, roles: Self.readers)
            let index = try context.parameters.require("index", as: Int64.self)
            do {
                let proof = try await console.audit.auditProof(AuditProofRequest(index: index))
                return try Self.json([
                    "index": proof.index, "entry": proof.entry, "leaf_hash": proof.leafHash, "tree_size": proof.treeSize, "audit_path": proof.auditPath,
                    "checkpoint": proof.checkpoint,
                ])
            } catch let error as any CountersignError {
                throw ConsoleError(error.code, error.reason)
            }
        }
        group.get("/keys") { _, context in
            let (session, role) = try self.page(context, roles: Self.readers)
            let keys = console.keyRing.list().map { key -> [String: Any] in
                [
                    "kid": key.kid, "backend": key.backend, "state": key.state, "tier": key.tier ?? "", "signatures": key.signatures,
                    "created": HumanText.time(key.createdAt), "activated": key.activatedAt.map(HumanText.time) ?? "",
                ]
            }
            return console.pages.html("keys", self.frame(session, role, title: "Keys", page: "keys").merging(["keys": keys]) { $1 })
        }
        group.get("/agents") { _, context in
            let (session, role) = try self.page(context, roles: Self.readers)
            let principals = console.principals.all().map { record -> [String: Any] in
                [
                    "id": record.id, "role": record.role, "created": HumanText.time(record.createdAt),
                    "revoked": record.revokedAt.map(HumanText.time) ?? "",
                ]
            }
            return console.pages.html("agents", self.frame(session, role, title: "Principals", page: "agents").merging(["principals": principals]) { $1 })
        }
    }

    // MARK: Checks

    /// A page: signed in, with one of `roles`.
    private func page(_ context: ConsoleContext, roles: Set<Role>) throws -> (ConsoleSession, Role) {
        let (session, role) = try self.console.person(context)
        guard roles.contains(role) else { throw ConsoleError(.forbidden, "this page is not for \(role.rawValue)s") }
        return (session, role)
    }

    /// A state change: from the console's origin, with this session's CSRF token, by one of `roles`.
    private func stateChange(_ request: Request, _ context: ConsoleContext, roles: Set<Role>) throws -> ConsoleSession {
        try self.checkOrigin(request)
        let (session, _) = try self.page(context, roles: roles)
        let sent = Array((request.headers[HTTPField.Name("X-CSRF-Token")!] ?? "").utf8)
        let expected = Array(session.csrf.utf8)
        // Constant time: every byte compared whatever the first difference.
        guard sent.count == expected.count, zip(sent, expected).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else {
            throw ConsoleError(.csrfRefused, "this request does not carry the session's CSRF token; reload the page")
        }
        return session
    }

    private func checkOrigin(_ request: Request) throws {
        guard request.headers[.origin] == self.console.passkeys.console.origin else {
            throw ConsoleError(.csrfRefused, "a change must come from the console's own pages (\(self.console.passkeys.console.origin))")
        }
    }

    private func limit(_ key: String, _ perMinute: Int) throws {
        guard self.console.passkeys.limiter.allow(key, limit: perMinute) else {
            throw ConsoleError(.rateLimited, "too many attempts; wait a minute and try again")
        }
    }

    private func frame(_ session: ConsoleSession, _ role: Role, title: String, page: String) -> [String: Any] {
        [
            "title": title, "page": page, "principal": session.principal, "role": role.rawValue, "csrf": session.csrf,
            "isApprover": role == .approver, "seesPayments": Self.paymentReaders.contains(role),
        ]
    }

    static func home(_ role: Role) -> String { Self.paymentReaders.contains(role) ? "/console/approvals" : "/console/audit" }

    // MARK: Live updates

    /// Server-sent events: `changed` whenever a payment starts or stops waiting for approvers (and every 15 s, so an
    /// expiry or another server's change is seen too, and the connection is never idle). Ends when the server stops.
    private func events(for principal: String) -> Response {
        let console = self.console
        // A stream lasts no longer than the session it was opened in, and ends when its principal is revoked.
        let endsAt = console.now + Int64(console.passkeys.console.sessionLifetime.components.seconds)
        let changes = console.notifier.subscribe()
        let (stream, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(2))
        let forward = Task {
            for await _ in changes { continuation.yield("event: changed\ndata: approvals\n\n") }
            continuation.finish()
        }
        let tick = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(15))
                continuation.yield("event: changed\ndata: tick\n\n")
            }
        }
        continuation.onTermination = { _ in
            forward.cancel()
            tick.cancel()
        }
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
            body: ResponseBody { writer in
                // However the stream ends (the page closed and a write failed, the server stopping), its tasks and its
                // subscription end with it.
                defer { continuation.finish() }
                try await writer.write(ByteBuffer(string: "retry: 3000\n\n"))
                for await line in stream.cancelOnGracefulShutdown() {
                    guard console.now < endsAt, console.principals.lookup(principal)?.record.revokedAt == nil else { break }
                    try await writer.write(ByteBuffer(string: line))
                }
                try await writer.finish(nil)
            })
    }

    // MARK: Data for the pages

    private func approvalRows() async throws -> [[String: Any]] {
        let list = try await self.console.approvals.pendingApprovals()
        return list.approvals.map { approval in
            [
                "id": approval.authorizationID, "agent": approval.agent, "amount": Self.money(approval.amount, approval.currency),
                "merchant": approval.merchantID, "tier": approval.tier, "summary": approval.summary,
                "progress": "\(approval.approvers.count)/\(approval.approvalsRequired)", "requested": HumanText.time(approval.requestedAt),
                "deadline": approval.approvalExpiresAt,
            ]
        }
    }

    private func approvalPage(_ id: String, role: Role) async throws -> [String: Any] {
        let detail: ApprovalDetail
        do {
            detail = try await self.console.approvals.approvalDetail(id)
        } catch let error as any CountersignError {
            throw ConsoleError(error.code, error.reason)
        }
        let approval = detail.approval
        let request = detail.request
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let requestJSON = String(decoding: try encoder.encode(request), as: UTF8.self)
        let checks = (detail.decision?.checks ?? []).map { ["name": $0.name, "inputs": $0.inputs, "result": $0.result.rawValue] }
        let lineItems = (request.intent.lineItems ?? []).map { item -> [String: Any] in
            [
                "description": item.description, "quantity": item.quantity, "unit": Self.money(item.unitAmount, request.currency),
                "category": item.category ?? "",
            ]
        }
        // The agent's last month: its signed payments, what it usually pays, and where.
        let now = self.console.now
        let history = try await self.console.store.authorizations(agent: approval.agent, createdAfter: now - 30 * 86_400, upTo: now)
            .filter { $0.status == .authorized && $0.voidedAt == nil && $0.id != id }
        let recent = history.suffix(10).reversed().map { record -> [String: Any] in
            ["time": HumanText.time(record.createdAt), "amount": Self.money(record.amount, record.currency), "merchant": record.merchant, "tier": record.tier]
        }
        let sameCurrency = history.filter { $0.currency == approval.currency }.map(\.amount).sorted()
        let usual = sameCurrency.isEmpty ? "no payment in \(approval.currency) in 30 days" : Self.money(sameCurrency[sameCurrency.count / 2], approval.currency)
        var merchantCounts: [String: Int] = [:]
        for record in history { merchantCounts[record.merchant, default: 0] += 1 }
        let merchants = merchantCounts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(10).map { ["merchant": $0.key, "count": $0.value] }
        let seenBefore = merchantCounts[approval.merchantID] != nil
        let budgets = try await self.console.budgets.budgets(of: approval.agent).budgets.map { line -> [String: Any] in
            [
                "scope": line.scope, "window": line.window, "limit": Self.money(line.limit, line.currency), "spent": Self.money(line.spent, line.currency),
                "pending": Self.money(line.pending, line.currency), "remaining": Self.money(line.remaining, line.currency),
            ]
        }
        let verdicts = detail.verdicts.map { ["approver": $0.approver, "verdict": $0.verdict, "time": HumanText.time($0.decidedAt)] }
        let open = approval.status == "pending_approval"
        return [
            "id": approval.authorizationID, "agent": approval.agent, "amount": Self.money(approval.amount, approval.currency),
            "merchant": approval.merchantID, "mcc": request.merchantCategoryCode, "tier": approval.tier, "summary": approval.summary,
            "status": approval.status, "open": open, "progress": "\(approval.approvers.count) of \(approval.approvalsRequired)",
            "deadline": approval.approvalExpiresAt, "deadlineText": HumanText.time(approval.approvalExpiresAt),
            "requested": HumanText.time(approval.requestedAt), "requestJSON": requestJSON, "intent": request.intent.description,
            "orderHash": request.intent.orderHash ?? "", "lineItems": lineItems, "hasLineItems": !lineItems.isEmpty,
            "tierReason": detail.decision?.tierReason ?? "", "policyVersion": detail.decision?.policyVersion ?? "", "checks": checks,
            "recent": recent, "hasRecent": !recent.isEmpty, "usual": usual, "merchants": merchants, "seenBefore": seenBefore,
            "budgets": budgets, "hasBudgets": !budgets.isEmpty, "verdicts": verdicts, "hasVerdicts": !verdicts.isEmpty,
            "canDecide": open && role == .approver,
        ]
    }

    private func auditPage(_ request: Request) async throws -> [String: Any] {
        let size = Int64(self.console.store.auditSize)
        let from = max(0, min(size - 1, request.uri.queryParameters.get("from", as: Int64.self) ?? max(0, size - 25)))
        let rows = try await self.console.store.auditEntries(from: from, limit: 25)
        let entries = rows.reversed().map { row -> [String: Any] in
            let text = String(decoding: row.entry, as: UTF8.self)
            let object = (try? JSONSerialization.jsonObject(with: row.entry)) as? [String: Any]
            return [
                "index": row.index, "time": (object?["time"] as? Int64).map(HumanText.time) ?? "", "action": object?["action"] as? String ?? "",
                "actor": object?["actor"] as? String ?? "", "subject": object?["subject"] as? String ?? "", "entry": text,
            ]
        }
        let checkpoint = try? await self.console.store.latestCheckpoint()
        return [
            "entries": entries, "size": size, "checkpointSize": checkpoint?.size ?? 0,
            "checkpointTime": checkpoint.map { HumanText.time($0.time) } ?? "none yet",
            "checkpointNote": checkpoint?.note ?? "", "hasCheckpoint": checkpoint != nil, "older": from > 0 ? max(0, from - 25) : -1, "hasOlder": from > 0,
        ]
    }
}

extension ConsoleError: CountersignError {
    var reason: String { self.message }
}
