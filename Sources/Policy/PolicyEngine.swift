import Crypto
import Foundation

/// What an agent may do beyond the tiers: the highest tier it may reach, a per-authorization maximum, and
/// allow- and block-lists of merchants and merchant category codes (as card issuers' spending controls do).
public struct AgentProfile: Sendable, Hashable {
    public var name: String
    public var agents: Set<String>
    /// The highest tier this profile's agents may reach; `nil` for any.
    public var highestTier: String?
    /// Per currency, in minor units.
    public var maximumPerAuthorization: [String: Int64]
    /// `nil` allows every merchant not blocked.
    public var allowedMerchants: Set<String>?
    public var blockedMerchants: Set<String>
    public var allowedCategories: Set<String>?
    public var blockedCategories: Set<String>

    public init(
        name: String, agents: Set<String>, highestTier: String? = nil, maximumPerAuthorization: [String: Int64] = [:],
        allowedMerchants: Set<String>? = nil, blockedMerchants: Set<String> = [], allowedCategories: Set<String>? = nil,
        blockedCategories: Set<String> = []
    ) {
        self.name = name
        self.agents = agents
        self.highestTier = highestTier
        self.maximumPerAuthorization = maximumPerAuthorization
        self.allowedMerchants = allowedMerchants
        self.blockedMerchants = blockedMerchants
        self.allowedCategories = allowedCategories
        self.blockedCategories = blockedCategories
    }
}

/// A request as the policy sees it.
public struct PolicyRequest: Sendable, Hashable {
    public var agent: String
    public var amount: Money
    public var merchant: String
    public var merchantCategoryCode: String

    public init(agent: String, amount: Money, merchant: String, merchantCategoryCode: String) {
        self.agent = agent
        self.amount = amount
        self.merchant = merchant
        self.merchantCategoryCode = merchantCategoryCode
    }
}

/// One check the policy evaluated: its name, what it looked at, and whether it passed.
public struct CheckRecord: Sendable, Hashable, Codable {
    public var name: String
    public var inputs: String
    public var passed: Bool
}

/// The outcome and its explanation: every check evaluated, the tier and the policy version.
public struct Decision: Sendable, Hashable {
    public enum Outcome: Sendable, Hashable {
        case authorized(Tier)
        /// `code` is stable (`MERCHANT_BLOCKED`, …); `reason` is a sentence for people.
        case denied(code: String, reason: String)
    }

    public var outcome: Outcome
    public var checks: [CheckRecord]
    public var policyVersion: String
}

/// The policy: the tiers and the agent profiles. Pure: no I/O, no clock.
public struct PolicyEngine: Sendable, Hashable {
    public let tiers: TierTable
    public let profiles: [AgentProfile]
    /// `sha256:` and 16 hex digits over the whole policy; carried in every authorization.
    public let version: String

    /// A policy of tiers alone: every agent may use every tier.
    public init(tiers: TierTable) {
        self.init(validated: tiers, profiles: [])
    }

    /// - Throws: ``PolicyError`` when a profile names an unknown tier or an agent is in two profiles.
    public init(tiers: TierTable, profiles: [AgentProfile]) throws(PolicyError) {
        var seen: [String: String] = [:]
        for profile in profiles {
            if let tier = profile.highestTier, !tiers.tiers.contains(where: { $0.name == tier }) {
                throw PolicyError("profile '\(profile.name)' names tier '\(tier)', which is not defined")
            }
            for agent in profile.agents {
                if let other = seen.updateValue(profile.name, forKey: agent) {
                    throw PolicyError("agent '\(agent)' is in profiles '\(other)' and '\(profile.name)'; an agent has one profile")
                }
            }
        }
        self.init(validated: tiers, profiles: profiles)
    }

    private init(validated tiers: TierTable, profiles: [AgentProfile]) {
        self.tiers = tiers
        self.profiles = profiles
        var text = tiers.version + "\n"
        for profile in profiles {
            let list: (Set<String>?) -> String = { $0.map { $0.sorted().joined(separator: ",") } ?? "*" }
            text += [
                profile.name, list(profile.agents), profile.highestTier ?? "*",
                profile.maximumPerAuthorization.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
                list(profile.allowedMerchants), list(profile.blockedMerchants), list(profile.allowedCategories), list(profile.blockedCategories),
            ].joined(separator: "|") + "\n"
        }
        self.version = "sha256:" + SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined().prefix(16)
    }

    public func profile(of agent: String) -> AgentProfile? {
        self.profiles.first { $0.agents.contains(agent) }
    }

    /// Decides a request: the tier by amount, then the agent's profile, each check recorded.
    public func evaluate(_ request: PolicyRequest) -> Decision {
        var checks: [CheckRecord] = []
        func deny(_ code: String, _ reason: String) -> Decision {
            Decision(outcome: .denied(code: code, reason: reason), checks: checks, policyVersion: self.version)
        }

        let tier: Tier
        switch self.tiers.tier(for: request.amount) {
        case .success(let found):
            tier = found
            checks.append(CheckRecord(name: "tier", inputs: "\(request.amount)", passed: true))
        case .failure(.currencyNotAccepted(let code, let accepted)):
            checks.append(CheckRecord(name: "tier", inputs: "\(request.amount)", passed: false))
            return deny("CURRENCY_NOT_ACCEPTED", "\(code) is not accepted; this server authorizes \(accepted.joined(separator: ", "))")
        case .failure(.amountAboveLimit(let money)):
            checks.append(CheckRecord(name: "tier", inputs: "\(request.amount)", passed: false))
            return deny("AMOUNT_ABOVE_LIMIT", "\(money) is above the highest tier's limit")
        }
        guard let profile = self.profile(of: request.agent) else {
            return Decision(outcome: .authorized(tier), checks: checks, policyVersion: self.version)
        }

        let currency = request.amount.currency
        if let maximum = profile.maximumPerAuthorization[currency.code] {
            let passed = request.amount.minorUnits <= maximum
            checks.append(CheckRecord(name: "max_per_authorization", inputs: "\(request.amount) <= \(Money(minorUnits: maximum, currency: currency))", passed: passed))
            if !passed {
                return deny("PER_AUTHORIZATION_LIMIT", "\(request.amount) is above \(request.agent)'s limit of \(Money(minorUnits: maximum, currency: currency)) per authorization")
            }
        }
        if let highest = profile.highestTier {
            let order = self.tiers.tiers.map(\.name)
            let passed = (order.firstIndex(of: tier.name) ?? .max) <= (order.firstIndex(of: highest) ?? -1)
            checks.append(CheckRecord(name: "highest_tier", inputs: "\(tier.name) <= \(highest)", passed: passed))
            if !passed {
                return deny("TIER_NOT_ALLOWED", "\(request.amount) needs tier '\(tier.name)'; \(request.agent) may reach tier '\(highest)' at most")
            }
        }
        let merchantAllowed = !profile.blockedMerchants.contains(request.merchant) && (profile.allowedMerchants?.contains(request.merchant) ?? true)
        checks.append(CheckRecord(name: "merchant", inputs: request.merchant, passed: merchantAllowed))
        if !merchantAllowed {
            return deny("MERCHANT_NOT_ALLOWED", "\(request.agent) may not pay merchant '\(request.merchant)'")
        }
        let categoryAllowed = !profile.blockedCategories.contains(request.merchantCategoryCode)
            && (profile.allowedCategories?.contains(request.merchantCategoryCode) ?? true)
        checks.append(CheckRecord(name: "merchant_category", inputs: request.merchantCategoryCode, passed: categoryAllowed))
        if !categoryAllowed {
            return deny("CATEGORY_NOT_ALLOWED", "\(request.agent) may not pay merchants of category \(request.merchantCategoryCode)")
        }
        return Decision(outcome: .authorized(tier), checks: checks, policyVersion: self.version)
    }
}
