/// At most `requests` authorize requests per agent in any `perSeconds`-long window.
public struct RateLimit: Sendable, Hashable, Encodable {
    public var requests: Int
    public var perSeconds: Int64

    public init(requests: Int, perSeconds: Int64) {
        self.requests = requests
        self.perSeconds = perSeconds
    }
}

/// What an agent may do beyond the tiers: the highest tier it may reach, a per-authorization maximum, allow-
/// and block-lists of merchants and merchant category codes (as card issuers' spending controls do), a
/// request rate limit, and the team its spending also counts against.
public struct AgentProfile: Sendable, Hashable, Encodable {
    public var name: String
    public var agents: Set<String>
    /// The team its agents belong to; their spending counts against the team's and its organization's budgets.
    public var team: String?
    /// The highest tier this profile's agents may reach; `nil` for any.
    public var highestTier: String?
    /// Per currency, in minor units.
    public var maximumPerAuthorization: [String: Int64]
    /// `nil` allows every merchant not blocked.
    public var allowedMerchants: Set<String>?
    public var blockedMerchants: Set<String>
    public var allowedCategories: Set<String>?
    public var blockedCategories: Set<String>
    public var rateLimit: RateLimit?

    public init(
        name: String, agents: Set<String>, team: String? = nil, highestTier: String? = nil, maximumPerAuthorization: [String: Int64] = [:],
        allowedMerchants: Set<String>? = nil, blockedMerchants: Set<String> = [], allowedCategories: Set<String>? = nil,
        blockedCategories: Set<String> = [], rateLimit: RateLimit? = nil
    ) {
        self.name = name
        self.agents = agents
        self.team = team
        self.highestTier = highestTier
        self.maximumPerAuthorization = maximumPerAuthorization
        self.allowedMerchants = allowedMerchants
        self.blockedMerchants = blockedMerchants
        self.allowedCategories = allowedCategories
        self.blockedCategories = blockedCategories
        self.rateLimit = rateLimit
    }

    func allowsMerchant(_ merchant: String) -> Bool {
        !self.blockedMerchants.contains(merchant) && (self.allowedMerchants?.contains(merchant) ?? true)
    }

    func allowsCategory(_ category: String) -> Bool {
        !self.blockedCategories.contains(category) && (self.allowedCategories?.contains(category) ?? true)
    }

}

/// A team of agents, inside an organization.
public struct Team: Sendable, Hashable, Encodable {
    public var name: String
    public var organization: String?

    public init(name: String, organization: String? = nil) {
        self.name = name
        self.organization = organization
    }
}
