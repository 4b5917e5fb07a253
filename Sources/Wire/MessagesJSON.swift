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
