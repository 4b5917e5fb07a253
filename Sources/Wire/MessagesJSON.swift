import CanonicalJSON

// The bodies on every authorization's path write their own canonical JSON (the same bytes as
// `JSONEncoder` with sorted keys; WireTests compare the two).

extension AuthorizeRequest: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("amount", self.amount)
            json.field("currency", self.currency)
            json.field("idempotency_key", self.idempotencyKey)
            json.field("intent", self.intent)
            json.field("merchant_category_code", self.merchantCategoryCode)
            json.field("merchant_id", self.merchantID)
        }
    }
}

extension Intent: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("description", self.description)
            json.field("line_items", self.lineItems)
            json.field("order_hash", self.orderHash)
        }
    }
}

extension LineItem: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("category", self.category)
            json.field("description", self.description)
            json.field("quantity", self.quantity)
            json.field("unit_amount", self.unitAmount)
        }
    }
}

extension Authorization: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("approvers", self.approvers)
            json.field("authorization_id", self.authorizationID)
            json.field("expires_at", self.expiresAt)
            json.field("jws", self.jws)
            json.field("key_backend", self.keyBackend)
            json.field("key_name", self.keyName)
            json.field("key_version", self.keyVersion)
            json.field("kid", self.kid)
            json.field("status", self.status)
            json.field("tier", self.tier)
        }
    }
}

extension PendingAuthorization: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("approval_expires_at", self.approvalExpiresAt)
            json.field("approvals_required", self.approvalsRequired)
            json.field("approvers", self.approvers)
            json.field("authorization_id", self.authorizationID)
            json.field("status", self.status)
            json.field("tier", self.tier)
        }
    }
}

extension AuthorizeOutcome: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        switch self {
        case .authorized(let authorization): authorization.write(to: &json)
        case .pendingApproval(let pending): pending.write(to: &json)
        }
    }
}

extension WireError: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("code", self.code.rawValue)
            json.field("message", self.message)
            json.field("retryable", self.retryable)
        }
    }
}

// The bodies read on every authorization's path (the request by the server, the answer by clients) are
// scanned directly when they have their plain shape; anything else goes to the strict decoder.

extension AuthorizeRequest: JSONScannable {
    public static func scan(_ scanner: inout JSONScanner) -> AuthorizeRequest? {
        var idempotencyKey: String?, amount: Int64?, currency: String?, merchantID: String?, merchantCategoryCode: String?, intent: Intent?
        guard
            scanner.object({ scanner, key in
                switch key {
                case "idempotency_key": scanner.read(&idempotencyKey)
                case "amount": scanner.read(&amount)
                case "currency": scanner.read(&currency)
                case "merchant_id": scanner.read(&merchantID)
                case "merchant_category_code": scanner.read(&merchantCategoryCode)
                case "intent": scanner.read(&intent)
                default: false
                }
            }), let idempotencyKey, let amount, let currency, let merchantID, let merchantCategoryCode, let intent
        else { return nil }
        return AuthorizeRequest(
            idempotencyKey: idempotencyKey, amount: amount, currency: currency, merchantID: merchantID, merchantCategoryCode: merchantCategoryCode,
            intent: intent
        )
    }
}

extension Intent: JSONScannable {
    public static func scan(_ scanner: inout JSONScanner) -> Intent? {
        var description: String?, lineItems: [LineItem]?, orderHash: String?
        guard
            scanner.object({ scanner, key in
                switch key {
                case "description": scanner.read(&description)
                case "line_items": scanner.readOptional(&lineItems)
                case "order_hash": scanner.readOptional(&orderHash)
                default: false
                }
            }), let description
        else { return nil }
        return Intent(description: description, lineItems: lineItems, orderHash: orderHash)
    }
}

extension LineItem: JSONScannable {
    public static func scan(_ scanner: inout JSONScanner) -> LineItem? {
        var description: String?, quantity: Int64?, unitAmount: Int64?, category: String?
        guard
            scanner.object({ scanner, key in
                switch key {
                case "description": scanner.read(&description)
                case "quantity": scanner.read(&quantity)
                case "unit_amount": scanner.read(&unitAmount)
                case "category": scanner.readOptional(&category)
                default: false
                }
            }), let description, let quantity, let unitAmount
        else { return nil }
        return LineItem(description: description, quantity: quantity, unitAmount: unitAmount, category: category)
    }
}

extension Authorization: JSONScannable {
    public static func scan(_ scanner: inout JSONScanner) -> Authorization? {
        var status: String?, jws: String?, authorizationID: String?, tier: String?, kid: String?, keyName: String?, keyVersion: Int64?
        var keyBackend: String?, expiresAt: Int64?, approvers: [String]?
        guard
            scanner.object({ scanner, key in
                switch key {
                case "status": scanner.read(&status)
                case "jws": scanner.read(&jws)
                case "authorization_id": scanner.read(&authorizationID)
                case "tier": scanner.read(&tier)
                case "kid": scanner.read(&kid)
                case "key_name": scanner.read(&keyName)
                case "key_version": scanner.read(&keyVersion)
                case "key_backend": scanner.read(&keyBackend)
                case "expires_at": scanner.read(&expiresAt)
                case "approvers": scanner.readOptional(&approvers)
                default: false
                }
            }), let status, let jws, let authorizationID, let tier, let kid, let keyName, let keyVersion, let version = Int(exactly: keyVersion),
            let keyBackend, let expiresAt
        else { return nil }
        var authorization = Authorization(
            jws: jws, authorizationID: authorizationID, tier: tier, kid: kid, keyName: keyName, keyVersion: version, keyBackend: keyBackend,
            expiresAt: expiresAt, approvers: approvers
        )
        authorization.status = status
        return authorization
    }
}

extension AuthorizeOutcome: JSONScannable {
    /// Only a signed authorization takes the fast path; a pending one is decoded by the strict decoder.
    public static func scan(_ scanner: inout JSONScanner) -> AuthorizeOutcome? {
        guard let authorization = Authorization.scan(&scanner), authorization.status == "authorized" else { return nil }
        return .authorized(authorization)
    }
}
