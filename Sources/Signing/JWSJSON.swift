import CanonicalJSON

extension JWSHeader: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("alg", self.alg)
            json.field("kid", self.kid)
            json.field("typ", self.typ)
        }
    }
}

extension AuthorizationClaims: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("amount", self.amount)
            json.field("approvers", self.approvers)
            json.field("aud", self.aud)
            json.field("audit_log_index", self.auditLogIndex)
            json.field("currency", self.currency)
            json.field("exp", self.exp)
            json.field("iat", self.iat)
            json.field("intent_hash", self.intentHash)
            json.field("iss", self.iss)
            json.field("jti", self.jti)
            json.field("mcc", self.mcc)
            json.field("nbf", self.nbf)
            json.field("policy_version", self.policyVersion)
            json.field("sub", self.sub)
            json.field("tier", self.tier)
        }
    }
}
