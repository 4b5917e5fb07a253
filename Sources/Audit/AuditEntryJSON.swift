import CanonicalJSON

extension AuditEntry: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("action", self.action)
            json.field("actor", self.actor)
            json.field("decision", self.decision)
            json.field("details", self.details)
            json.field("index", self.index)
            json.field("kind", self.kind)
            json.field("subject", self.subject)
            json.field("time", self.time)
        }
    }
}

extension DecisionSummary: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("amount", self.amount)
            json.field("approvers", self.approvers)
            json.field("checks", self.checks)
            json.field("code", self.code)
            json.field("currency", self.currency)
            json.field("intent_hash", self.intentHash)
            json.field("jws_sha256", self.jwsSHA256)
            json.field("kid", self.kid)
            json.field("merchant", self.merchant)
            json.field("outcome", self.outcome)
            json.field("policy_version", self.policyVersion)
            json.field("request_sha256", self.requestSHA256)
            json.field("tier", self.tier)
            json.field("tier_reason", self.tierReason)
        }
    }
}
