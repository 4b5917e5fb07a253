import CountersignClient
import Crypto
import Foundation
import MCP
import Policy
import Signing
import Wire

/// The payment tools `countersign mcp` offers a model: what each takes, and its answers in words a model can act
/// on. Holds the agent's client (and so its credential); nothing a tool answers carries the key.
///
/// Amounts are decimal strings in the currency's units (`"12.50"` USD), read exactly; a JSON number is refused, so a
/// model's arithmetic never passes through a floating-point value. The model never chooses an idempotency key: it
/// names the payment (`payment_reference`) and the key is derived from the agent and that name, so asking again
/// about one payment can only ever answer that payment's one authorization, and the same name for a different
/// payment is refused by the server (`IDEMPOTENCY_CONFLICT`).
struct PaymentTools: Sendable {
    let client: ClusterClient
    let agent: String
    var now: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }

    static let requestPayment = "request_payment_authorization"
    static let getStatus = "get_authorization_status"
    static let voidAuthorization = "void_authorization"
    static let getBudgets = "get_budgets"

    /// The tools and their input schemas (JSON Schema), as `tools/list` answers them.
    static let definitions: [Tool] = [
        Tool(
            name: requestPayment,
            title: "Request a payment authorization",
            description: """
                Ask Countersign for a signed authorization before paying a merchant. Answers either an authorization token \
                (give it to the merchant with the payment) or that human approvers must decide first (then call \
                get_authorization_status). If you get no clear answer, call again with the same payment_reference: it never \
                authorizes one payment twice. Use a new payment_reference for every new payment.
                """,
            inputSchema: .object([
                "type": "object",
                "additionalProperties": false,
                "required": ["payment_reference", "amount", "currency", "merchant_id", "merchant_category_code", "description"],
                "properties": .object([
                    "payment_reference": .object([
                        "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$",
                        "description": "Your name for this one payment, e.g. order-1234. The same name asks about the same payment again.",
                    ]),
                    "amount": .object([
                        "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$",
                        "description": "The total as a decimal string in the currency's units, e.g. \"12.50\" (not a number).",
                    ]),
                    "currency": .object(["type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code, e.g. USD."]),
                    "merchant_id": .object(["type": "string", "description": "The merchant's id, as the merchant gave it."]),
                    "merchant_category_code": .object(["type": "string", "pattern": "^[0-9]{4}$", "description": "The merchant's ISO 18245 category code."]),
                    "description": .object(["type": "string", "description": "What the payment is for, in a sentence."]),
                    "line_items": .object([
                        "type": "array", "minItems": 1, "maxItems": 100,
                        "description": "What is bought; unit_price × quantity must sum to amount. Required for larger payments.",
                        "items": .object([
                            "type": "object", "additionalProperties": false, "required": ["description", "quantity", "unit_price"],
                            "properties": .object([
                                "description": .object(["type": "string"]),
                                "quantity": .object(["type": "integer", "minimum": 1]),
                                "unit_price": .object(["type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$", "description": "Decimal string, e.g. \"6.25\"."]),
                                "category": .object(["type": "string"]),
                            ]),
                        ]),
                    ]),
                    "order_reference": .object(["type": "string", "description": "The merchant's order id or cart hash, when there are no line items."]),
                ]),
            ]),
            annotations: .init(destructiveHint: false, idempotentHint: true, openWorldHint: true)
        ),
        Tool(
            name: getStatus,
            title: "Get an authorization's status",
            description: """
                The current state of an authorization: authorized (with its token), still waiting for approvers, or refused. \
                With wait_seconds (up to 60) it waits for the approvers' decision.
                """,
            inputSchema: .object([
                "type": "object", "additionalProperties": false, "required": ["authorization_id"],
                "properties": .object([
                    "authorization_id": .object(["type": "string"]),
                    "wait_seconds": .object(["type": "integer", "minimum": 0, "maximum": 60]),
                ]),
            ]),
            annotations: .init(readOnlyHint: true)
        ),
        Tool(
            name: voidAuthorization,
            title: "Void an authorization",
            description: "Give up an authorization you will not use: its amount stops counting against your budgets. Do not use its token afterwards.",
            inputSchema: .object([
                "type": "object", "additionalProperties": false, "required": ["authorization_id"],
                "properties": .object(["authorization_id": .object(["type": "string"])]),
            ]),
            annotations: .init(destructiveHint: true, idempotentHint: true)
        ),
        Tool(
            name: getBudgets,
            title: "Get remaining budgets",
            description: "Every budget your payments count against, with what remains in its current window.",
            inputSchema: .object(["type": "object", "additionalProperties": false, "properties": .object([:])]),
            annotations: .init(readOnlyHint: true)
        ),
    ]

    /// Runs one tool. Refusals and mistakes come back as tool errors (`isError`) with the code and a sentence saying
    /// what would succeed instead; nothing is thrown to the MCP layer.
    func call(_ name: String, _ arguments: [String: Value]?) async -> CallTool.Result {
        let arguments = Arguments(values: arguments ?? [:])
        do {
            switch name {
            case Self.requestPayment: return try await self.requestPayment(arguments)
            case Self.getStatus:
                try arguments.only(["authorization_id", "wait_seconds"])
                let id = try arguments.string("authorization_id")
                let wait = try arguments.integer("wait_seconds", in: 0...60) ?? 0
                return try await self.describe(self.client.fetchAuthorization(id: id, waitSeconds: wait == 0 ? nil : Int(wait)), amount: nil)
            case Self.voidAuthorization:
                try arguments.only(["authorization_id"])
                let voided = try await self.client.void(authorizationID: try arguments.string("authorization_id"))
                return Self.answer(
                    "Voided authorization \(voided.authorizationID) at \(Self.time(voided.voidedAt)). Its amount no longer counts against your budgets; do not use its token.",
                    ["status": "voided", "authorization_id": .string(voided.authorizationID), "voided_at": .int(Int(voided.voidedAt))])
            case Self.getBudgets:
                try arguments.only([])
                return Self.describe(try await self.client.budgets(agent: self.agent))
            default:
                return Self.refusal("UNKNOWN_TOOL", "There is no tool '\(name)'. The tools are \(Self.definitions.map(\.name).joined(separator: ", ")).")
            }
        } catch let mistake as ArgumentMistake {
            return Self.refusal("INVALID_ARGUMENTS", mistake.sentence)
        } catch {
            return await self.explain(error, tool: name, arguments: arguments)
        }
    }

    private func requestPayment(_ arguments: Arguments) async throws -> CallTool.Result {
        try arguments.only(["payment_reference", "amount", "currency", "merchant_id", "merchant_category_code", "description", "line_items", "order_reference"])
        let reference = try arguments.string("payment_reference")
        guard (1...64).contains(reference.utf8.count), reference.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else {
            throw ArgumentMistake("payment_reference is 1 to 64 letters, digits, '.', '_' or '-' (e.g. order-1234)")
        }
        let currencyCode = try arguments.string("currency")
        guard let currency = Currency(code: currencyCode) else { throw ArgumentMistake("'\(currencyCode)' is not an ISO 4217 currency code such as USD") }
        let amount = try Self.money(try arguments.string("amount"), currency, field: "amount")
        var lineItems: [LineItem]?
        if let items = try arguments.array("line_items") {
            lineItems = try items.enumerated().map { index, value in
                guard let object = value.objectValue else { throw ArgumentMistake("line_items[\(index)] is an object") }
                let item = Arguments(values: object, path: "line_items[\(index)].")
                try item.only(["description", "quantity", "unit_price", "category"])
                return LineItem(
                    description: try item.string("description"), quantity: try item.integer("quantity", in: 1...1_000_000) ?? 0,
                    unitAmount: try Self.money(try item.string("unit_price"), currency, field: "line_items[\(index)].unit_price"),
                    category: try item.optionalString("category"))
            }
            if lineItems?.contains(where: { $0.quantity == 0 }) == true { throw ArgumentMistake("every line item needs a quantity") }
        }
        let request = AuthorizeRequest(
            idempotencyKey: Self.idempotencyKey(agent: self.agent, reference: reference), amount: amount, currency: currency.code,
            merchantID: try arguments.string("merchant_id"), merchantCategoryCode: try arguments.string("merchant_category_code"),
            intent: Intent(description: try arguments.string("description"), lineItems: lineItems, orderHash: try arguments.optionalString("order_reference")))
        return try await self.describe(self.client.submit(request), amount: Money(minorUnits: amount, currency: currency))
    }

    /// The idempotency key of the agent's payment named `reference`: derived, never chosen by the model, and
    /// scoped to MCP so that it can never name a payment the agent's other software made.
    static func idempotencyKey(agent: String, reference: String) -> String {
        "mcp-" + Base64URL.encode(Array(SHA256.hash(data: Data("countersign-mcp-v1\u{0}\(agent)\u{0}\(reference)".utf8))))
    }

    private static func money(_ text: String, _ currency: Currency, field: String) throws -> Int64 {
        guard let money = Money(decimal: text, currency: currency), money.minorUnits > 0 || field != "amount" else {
            throw ArgumentMistake(
                "\(field) '\(text)' is not a decimal amount of \(currency.code) with at most \(currency.minorUnitDigits) decimal place(s), e.g. \"\(currency.minorUnitDigits == 0 ? "1500" : "12.50")\""
            )
        }
        return money.minorUnits
    }

    // Answers.

    private func describe(_ outcome: AuthorizeOutcome, amount: Money?) -> CallTool.Result {
        switch outcome {
        case .authorized(let authorization) where authorization.expiresAt <= self.now():
            // A replay of an old authorization: its token is no longer worth giving to anyone.
            return Self.refusal(
                ErrorCode.authorizationExpired.rawValue,
                "Authorization \(authorization.authorizationID) for this payment expired at \(Self.time(authorization.expiresAt)); do not give its token to a merchant. If you still need to pay, request a new authorization with a new payment_reference."
            )
        case .authorized(let authorization):
            let what = amount.map { "\($0) " } ?? ""
            let approvers = authorization.approvers.map { " Approved by \($0.joined(separator: " and "))." } ?? ""
            return Self.answer(
                """
                Authorized \(what)(tier \(authorization.tier)).\(approvers) authorization_id: \(authorization.authorizationID). \
                It expires at \(Self.time(authorization.expiresAt)) (in \(Self.span(authorization.expiresAt - self.now()))). \
                Give the merchant this authorization token with the payment; it is valid only for this merchant and amount:
                \(authorization.jws)
                """,
                [
                    "status": "authorized", "authorization_id": .string(authorization.authorizationID), "authorization_token": .string(authorization.jws),
                    "expires_at": .int(Int(authorization.expiresAt)), "tier": .string(authorization.tier),
                    "approvers": .array((authorization.approvers ?? []).map { .string($0) }),
                ])
        case .pendingApproval(let pending):
            let decided = pending.approvers.isEmpty ? "none has approved yet" : "\(pending.approvers.joined(separator: " and ")) approved so far"
            return Self.answer(
                """
                Not authorized yet: \(amount.map { "\($0) " } ?? "")needs \(pending.approvalsRequired) human approver(s) (tier \(pending.tier)); \
                \(decided). The amount is held against your budgets. Do not pay yet. Call \(Self.getStatus) with authorization_id \
                \(pending.authorizationID) and wait_seconds 60 to wait for their decision; they have until \(Self.time(pending.approvalExpiresAt)).
                """,
                [
                    "status": "pending_approval", "authorization_id": .string(pending.authorizationID), "approvals_required": .int(pending.approvalsRequired),
                    "approvers": .array(pending.approvers.map { .string($0) }), "approval_expires_at": .int(Int(pending.approvalExpiresAt)),
                    "tier": .string(pending.tier),
                ])
        }
    }

    private static func describe(_ report: BudgetsReport) -> CallTool.Result {
        let lines = report.budgets.map { line in
            let remaining = Money.text(minorUnits: line.remaining, code: line.currency)
            let limit = Money.text(minorUnits: line.limit, code: line.currency)
            let held = line.pending > 0 ? ", \(Money.text(minorUnits: line.pending, code: line.currency)) of it held for approvals" : ""
            return "- \(line.scope), \(line.window) window from \(Self.time(line.windowStart)): \(remaining) remains of \(limit)"
                + " (spent \(Money.text(minorUnits: line.spent, code: line.currency))\(held))"
        }
        let text =
            lines.isEmpty
            ? "No budget limits your payments."
            : "Your payments count against these budgets; a payment must fit in all of them:\n" + lines.joined(separator: "\n")
        return Self.answer(
            text,
            [
                "budgets": .array(
                    report.budgets.map {
                        .object([
                            "scope": .string($0.scope), "window": .string($0.window), "currency": .string($0.currency), "limit": .int(Int($0.limit)),
                            "spent": .int(Int($0.spent)), "pending": .int(Int($0.pending)), "remaining": .int(Int($0.remaining)),
                        ])
                    })
            ])
    }

    /// A refusal in words: the code, the server's sentence, and what would succeed instead.
    private func explain(_ error: any Error, tool: String, arguments: Arguments) async -> CallTool.Result {
        let reference = (try? arguments.string("payment_reference")).map { " with the same payment_reference (\($0))" } ?? ""
        switch error {
        case let error as WireError:
            var advice: String
            switch error.code {
            case .budgetExceeded:
                advice = "Payments cannot exceed what remains in your budgets."
                let currency = try? arguments.string("currency")
                if let currency, let report = try? await self.client.budgets(agent: self.agent) {
                    let remaining = report.budgets.filter { $0.currency == currency }.map(\.remaining).min()
                    if let remaining {
                        advice =
                            "At most \(Money.text(minorUnits: remaining, code: currency)) remains across your budgets now: a payment up to that could be authorized, or wait until the budget's window renews."
                    }
                }
            case .idempotencyConflict:
                advice =
                    "This payment_reference already names a payment with other details. If it is the same purchase, send exactly the same arguments as the first time; use a new payment_reference only for a genuinely different purchase."
            case .merchantNotAllowed: advice = "You may not pay this merchant. Choose another merchant or ask a human."
            case .categoryNotAllowed: advice = "You may not buy in this merchant category. Ask a human."
            case .perAuthorizationLimit, .tierNotAllowed, .amountAboveLimit:
                advice =
                    "The amount is above what you may pay in one authorization. Ask a human; do not split the payment (split payments are judged at their sum)."
            case .intentRequired: advice = "Give line_items (description, quantity, unit_price) that sum to the amount."
            case .intentMismatch: advice = "Make the line items' unit_price × quantity sum exactly to the amount."
            case .currencyNotAccepted: advice = "Pay in a currency the service accepts."
            case .escalationAboveLimit, .anomalyRefused: advice = "The payment looks unusual for you and needs a human's review. Do not retry it."
            case .approvalDenied: advice = "An approver refused it. Do not pay."
            case .approvalExpired: advice = "The approvers did not decide in time; nothing was authorized. Ask a human before trying again."
            case .authorizationNotFound: advice = "Check the authorization_id: it must be one of your own authorizations."
            case .authorizationExpired: advice = "The authorization has expired; request a new one if you still need to pay."
            case .invalidRequest: advice = "Correct the request as the message says."
            case .principalRevoked, .authenticationFailed, .forbidden: advice = "This agent may not request payments. Ask a human."
            default:
                advice =
                    error.retryable
                    ? "The payment may or may not have been recorded. Ask again in a minute with exactly the same arguments\(reference) to find out: it can never be authorized twice."
                    : "Ask a human."
            }
            return Self.refusal(error.code.rawValue, "\(error.message). \(advice)")
        case ClientError.circuitOpen(let retryAfter):
            return Self.refusal(
                "SERVICE_UNREACHABLE",
                "Countersign cannot be reached right now. If you asked for this payment before, it may or may not be authorized: ask again in \(max(1, retryAfter.components.seconds)) seconds with exactly the same arguments\(reference) to find out; it can never be authorized twice."
            )
        case let error as ClientError:
            return Self.refusal(
                "SERVICE_UNREACHABLE", "Countersign did not answer (\(error)). The payment may or may not be authorized: ask again\(reference) to find out.")
        default:
            return Self.refusal("INTERNAL_ERROR", "The tool failed: \(error). Ask a human.")
        }
    }

    private static func answer(_ text: String, _ structured: [String: Value]) -> CallTool.Result {
        CallTool.Result(content: [.text(text: text, annotations: nil, _meta: nil)], structuredContent: .object(structured), isError: false)
    }

    private static func refusal(_ code: String, _ sentence: String) -> CallTool.Result {
        CallTool.Result(
            content: [.text(text: "Refused (\(code)): \(sentence)", annotations: nil, _meta: nil)],
            structuredContent: .object(["status": "refused", "code": .string(code), "message": .string(sentence)]), isError: true)
    }

    private static func time(_ seconds: Int64) -> String {
        Date(timeIntervalSince1970: TimeInterval(seconds)).ISO8601Format()
    }

    private static func span(_ seconds: Int64) -> String {
        seconds >= 120 ? "\(seconds / 60) minutes" : "\(max(0, seconds)) seconds"
    }
}

/// A mistake in a tool's arguments, in a sentence for the model.
struct ArgumentMistake: Error {
    let sentence: String
    init(_ sentence: String) { self.sentence = sentence }
}

/// A tool's arguments, read strictly: unknown names refused, strings as strings, integers as integers.
struct Arguments {
    let values: [String: Value]
    var path = ""

    func only(_ names: Set<String>) throws {
        if let unknown = self.values.keys.sorted().first(where: { !names.contains($0) }) {
            throw ArgumentMistake("unknown argument '\(self.path)\(unknown)'")
        }
    }

    func string(_ name: String) throws -> String {
        guard let value = try self.optionalString(name) else { throw ArgumentMistake("\(self.path)\(name) is required") }
        return value
    }

    func optionalString(_ name: String) throws -> String? {
        switch self.values[name] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        default:
            throw ArgumentMistake(
                "\(self.path)\(name) is a string\(name.contains("amount") || name.contains("price") ? " such as \"12.50\", not a number" : "")")
        }
    }

    func integer(_ name: String, in range: ClosedRange<Int64>) throws -> Int64? {
        switch self.values[name] {
        case nil, .null?: return nil
        case .int(let value)? where range.contains(Int64(value)): return Int64(value)
        default: throw ArgumentMistake("\(self.path)\(name) is a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
    }

    func array(_ name: String) throws -> [Value]? {
        switch self.values[name] {
        case nil, .null?: return nil
        case .array(let items)?: return items
        default: throw ArgumentMistake("\(self.path)\(name) is a list")
        }
    }
}
