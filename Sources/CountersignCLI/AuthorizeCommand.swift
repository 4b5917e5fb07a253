import ArgumentParser
import CountersignClient
import Foundation
import Policy
import Wire

/// `countersign authorize`: ask for a signed payment authorization and print the JWS.
struct AuthorizeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authorize",
        abstract: "Request a signed payment authorization; prints the JWS (the whole response with --json)."
    )

    @OptionGroup var client: ClientOptions

    @Option(help: "Amount in major units, e.g. 12.50 (at most the currency's decimals).")
    var amount: String

    @Option(help: "ISO 4217 currency code, e.g. USD.")
    var currency: String

    @Option(help: "Merchant id.")
    var merchant: String

    @Option(help: "Merchant category code (ISO 18245, four digits).")
    var mcc: String

    @Option(help: "What the agent is buying, in words.")
    var intent: String

    @Option(name: .customLong("order-hash"), help: "The merchant's order or cart hash.")
    var orderHash: String?

    @Option(name: .customLong("item"), help: "A line item as description:quantity:unit-amount-in-major-units; repeatable.")
    var items: [String] = []

    @Option(name: .customLong("idempotency-key"), help: "Unique per intended payment (default: a new UUID of version 7, which grows with time).")
    var idempotencyKey: String?

    @Flag(help: "Print the whole response as JSON.")
    var json = false

    @Flag(help: "When the tier needs approvers, wait for their decision (default: print the pending authorization's id and exit 3).")
    var wait = false

    func run() async throws {
        guard let currency = Currency(code: self.currency.uppercased()) else {
            throw ValidationError("'\(self.currency)' is not an ISO 4217 currency code")
        }
        guard let amount = Money(decimal: self.amount, currency: currency) else {
            throw ValidationError("'\(self.amount)' is not an amount in \(currency.code) (at most \(currency.minorUnitDigits) decimals)")
        }
        let lineItems = try self.items.map { try Self.lineItem($0, currency: currency) }
        let request = AuthorizeRequest(
            idempotencyKey: self.idempotencyKey ?? IdempotencyKeys.timeOrdered(),
            amount: amount.minorUnits,
            currency: currency.code,
            merchantID: self.merchant,
            merchantCategoryCode: self.mcc,
            intent: Intent(description: self.intent, lineItems: lineItems.isEmpty ? nil : lineItems, orderHash: self.orderHash)
        )
        if lineItems.isEmpty, self.orderHash == nil {
            throw ValidationError("give --order-hash or at least one --item")
        }
        // A lost server or a retryable refusal is asked again, on the next server of --server's list, with the same
        // idempotency key: the payment is made once, whichever server answers.
        let cluster = try self.client.cluster()
        let outcome: AuthorizeOutcome
        do {
            outcome = try await cluster.submit(request)
        } catch {
            await cluster.close()
            throw error
        }
        await cluster.close()
        if case .pendingApproval(let pending) = outcome {
            // The key is what makes a re-run the same request instead of a new one needing new approvals.
            Terminal.note(
                "pending approval: \(pending.authorizationID) needs \(pending.approvalsRequired) approval(s) before \(Terminal.time(pending.approvalExpiresAt)) (idempotency key \(request.idempotencyKey))"
            )
            if !self.wait {
                Terminal.note("collect it with: countersign fetch \(pending.authorizationID) --wait")
            }
        }
        try await FetchCommand.finish(outcome, connection: nil, client: self.client, wait: self.wait, json: self.json)
    }

    static func lineItem(_ text: String, currency: Currency) throws -> LineItem {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let quantity = Int64(parts[1]), let unit = Money(decimal: String(parts[2]), currency: currency) else {
            throw ValidationError("--item must be description:quantity:unit-amount, e.g. 'USB cable:2:4.99'")
        }
        return LineItem(description: String(parts[0]), quantity: quantity, unitAmount: unit.minorUnits)
    }
}

/// `countersign fetch <authorization id> [--wait]`: collect an authorization, e.g. one that waited for approval.
struct FetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Print one of your authorizations' JWS; with --wait, wait for a pending approval's decision (exit 3 while it is still pending)."
    )

    @Argument(help: "The authorization id, as `authorize` printed it.")
    var authorizationID: String

    @OptionGroup var client: ClientOptions

    @Flag(help: "Wait for the approvers' decision, reconnecting if the server restarts.")
    var wait = false

    @Flag(help: "Print the whole response as JSON.")
    var json = false

    func run() async throws {
        let connection = try await self.client.connect()
        if self.wait {
            // Everything from here on rides out a restart: even the first question.
            Terminal.note("waiting for the approvers' decision on \(self.authorizationID)…")
            let authorization = try await self.client.awaitApproval(id: self.authorizationID, on: connection)
            try FetchCommand.print(authorization, json: self.json)
            return
        }
        let outcome: AuthorizeOutcome
        do {
            outcome = try await connection.fetchAuthorization(id: self.authorizationID)
        } catch {
            await connection.close()
            throw error
        }
        if case .pendingApproval(let pending) = outcome {
            Terminal.note(
                "pending approval: \(pending.authorizationID) has \(pending.approvers.count) of \(pending.approvalsRequired) approval(s); it expires \(Terminal.time(pending.approvalExpiresAt))"
            )
        }
        try await Self.finish(outcome, connection: connection, client: self.client, wait: self.wait, json: self.json)
    }

    /// Prints a signed authorization; for a pending one, waits (with `wait`) or exits 3. Closes `connection`.
    static func finish(_ outcome: AuthorizeOutcome, connection: CountersignClient?, client: ClientOptions, wait: Bool, json: Bool) async throws {
        let authorization: Authorization
        switch outcome {
        case .authorized(let signed):
            await connection?.close()
            authorization = signed
        case .pendingApproval(let pending):
            guard wait else {
                await connection?.close()
                if json { try JSONOutput.print(pending) }
                throw ExitCode(3)
            }
            Terminal.note("waiting for the approvers' decision on \(pending.authorizationID)…")
            authorization = try await client.awaitApproval(id: pending.authorizationID, on: connection)
        }
        try Self.print(authorization, json: json)
    }

    static func print(_ authorization: Authorization, json: Bool) throws {
        if json {
            try JSONOutput.print(authorization)
        } else {
            Swift.print(authorization.jws)
        }
    }
}

/// `countersign void <authorization id>`.
struct VoidCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "void",
        abstract: "Void one of your own unexpired authorizations: its amount no longer counts against your budgets."
    )

    @Argument(help: "The authorization id (the jti).")
    var authorizationID: String

    @OptionGroup var client: ClientOptions

    func run() async throws {
        let connection = try await self.client.connect()
        let voided = try await connection.void(authorizationID: self.authorizationID)
        await connection.close()
        print("voided \(voided.authorizationID) at \(Terminal.time(voided.voidedAt))")
    }
}
