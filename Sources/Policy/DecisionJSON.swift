import CanonicalJSON

extension CheckRecord: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("inputs", self.inputs)
            json.field("name", self.name)
            json.field("result", self.result.rawValue)
        }
    }
}

extension DecisionRecord: CanonicalJSONEncodable {
    public func write(to json: inout CanonicalJSON) {
        json.object { json in
            json.field("checks", self.checks)
            json.field("code", self.code)
            json.field("outcome", self.outcome)
            json.field("policy_version", self.policyVersion)
            json.field("tier", self.tier)
            json.field("tier_reason", self.tierReason)
        }
    }
}
