import Crypto
import Foundation

/// Where a key's private half lives.
public enum KeyBackend: String, Codable, Sendable, Hashable {
    /// In memory (swift-crypto), stored only sealed by the HSM.
    case software
    /// Inside the PKCS#11 token; never leaves it.
    case hsm
}

/// A check a tier may add. Budgets are not among them: every tier checks budgets, since no budget may
/// ever be overspent.
public enum PolicyCheck: String, Sendable, Hashable, CaseIterable, Comparable, Encodable {
    /// The agent's profile: highest tier and per-authorization maximum (after contexts).
    case profile
    /// The profile's request rate limit.
    case rateLimit = "rate_limit"
    /// The profile's merchant and merchant-category allow- and block-lists.
    case merchantRules = "merchant_rules"
    /// Anomalies move the request one tier up; split payments are judged at the tier of their sum.
    case escalation
    /// Line items must be given, sum to the amount, and be of categories the agent may buy.
    case intent

    /// What a tier that does not list its checks adds: every check that acts only on what the configuration
    /// gives it. Intent is not among them, since it asks agents for line items; a tier asks for it by name.
    public static let defaults: Set<PolicyCheck> = [.rateLimit, .merchantRules, .escalation]

    public static func < (lhs: Self, rhs: Self) -> Bool {
        Self.allCases.firstIndex(of: lhs)! < Self.allCases.firstIndex(of: rhs)!
    }
}

/// Human approval a tier needs before it signs.
public struct ApprovalRequirement: Sendable, Hashable, Encodable {
    /// Distinct approvers needed.
    public var quorum: Int
    /// How long a request waits for its quorum before it is refused and its hold released, in seconds.
    public var ttlSeconds: Int64

    public init(quorum: Int, ttlSeconds: Int64) {
        self.quorum = quorum
        self.ttlSeconds = ttlSeconds
    }
}

/// One authorization tier: the amounts it covers, the key that signs it, how long its authorizations live,
/// the checks it adds to those of the tiers below it, and whether people must approve.
public struct Tier: Sendable, Hashable, Encodable {
    public var name: String
    /// The highest amount this tier may authorize, per accepted currency, in minor units.
    public var maximumAmounts: [String: Int64]
    /// The name of the key that signs this tier's authorizations.
    public var keyName: String
    public var backend: KeyBackend
    /// The authorization's lifetime (`exp - iat`), in seconds.
    public var lifetimeSeconds: Int64
    /// The checks this tier adds; `nil` adds ``PolicyCheck/defaults``.
    public var addedChecks: Set<PolicyCheck>?
    public var approval: ApprovalRequirement?

    public init(
        name: String, maximumAmounts: [String: Int64], keyName: String, backend: KeyBackend, lifetimeSeconds: Int64,
        addedChecks: Set<PolicyCheck>? = nil, approval: ApprovalRequirement? = nil
    ) {
        self.name = name
        self.maximumAmounts = maximumAmounts
        self.keyName = keyName
        self.backend = backend
        self.lifetimeSeconds = lifetimeSeconds
        self.addedChecks = addedChecks
        self.approval = approval
    }
}

/// Why a request has no tier.
public enum TierRefusal: Error, Sendable, Hashable {
    /// No tier accepts this currency.
    case currencyNotAccepted(currency: String, accepted: [String])
    /// The amount is above the highest tier's bound for the currency.
    case amountAboveLimit(Money)
}

/// The tiers, ordered by amount. A request belongs to the lowest tier whose bound it does not exceed.
///
/// Checks cascade: a tier applies its own checks and those of every tier below it.
public struct TierTable: Sendable, Hashable, Encodable {
    public let tiers: [Tier]

    /// - Throws: ``PolicyError`` when the tiers are empty, share names, or their bounds do not increase.
    public init(_ tiers: [Tier]) throws(PolicyError) {
        guard !tiers.isEmpty else { throw PolicyError("at least one tier is required") }
        var names: Set<String> = []
        var keys: Set<String> = []
        for tier in tiers {
            guard names.insert(tier.name).inserted else { throw PolicyError("tier '\(tier.name)' is defined twice") }
            guard keys.insert(tier.keyName).inserted else {
                throw PolicyError("tier '\(tier.name)' names key '\(tier.keyName)', which another tier uses; each tier has its own key")
            }
            guard !tier.maximumAmounts.isEmpty else { throw PolicyError("tier '\(tier.name)' accepts no currency") }
            for (code, maximum) in tier.maximumAmounts {
                guard Currency(code: code) != nil else { throw PolicyError("tier '\(tier.name)': '\(code)' is not an ISO 4217 currency code") }
                guard maximum > 0 else { throw PolicyError("tier '\(tier.name)': the bound for \(code) must be positive") }
            }
            guard tier.lifetimeSeconds >= 10, tier.lifetimeSeconds <= 3600 else {
                throw PolicyError("tier '\(tier.name)': the lifetime must be between 10 seconds and 1 hour")
            }
            if let approval = tier.approval {
                guard (1...10).contains(approval.quorum) else { throw PolicyError("tier '\(tier.name)': the approval quorum must be 1 to 10") }
                guard (60...7 * 86_400).contains(approval.ttlSeconds) else {
                    throw PolicyError("tier '\(tier.name)': the approval ttl must be between 1 minute and 7 days")
                }
                guard tier.backend == .hsm else {
                    throw PolicyError("tier '\(tier.name)' needs approval, so it must be signed by an HSM key")
                }
            }
        }
        for (lower, upper) in zip(tiers, tiers.dropFirst()) {
            for (code, bound) in upper.maximumAmounts {
                if let lowerBound = lower.maximumAmounts[code], lowerBound >= bound {
                    throw PolicyError("tier '\(upper.name)' must have a higher bound for \(code) than tier '\(lower.name)'")
                }
            }
        }
        self.tiers = tiers
    }

    /// The tier for an amount, or why there is none.
    public func tier(for amount: Money) -> Result<Tier, TierRefusal> {
        let accepting = self.tiers.filter { $0.maximumAmounts[amount.currency.code] != nil }
        guard !accepting.isEmpty else {
            let accepted = Set(self.tiers.flatMap(\.maximumAmounts.keys)).sorted()
            return .failure(.currencyNotAccepted(currency: amount.currency.code, accepted: accepted))
        }
        if let tier = accepting.first(where: { amount.minorUnits <= $0.maximumAmounts[amount.currency.code]! }) {
            return .success(tier)
        }
        return .failure(.amountAboveLimit(amount))
    }

    public func index(of name: String) -> Int? {
        self.tiers.firstIndex { $0.name == name }
    }

    /// The checks a request judged at `tier` must pass: the tier's own and every lower tier's.
    public func checks(at tier: Tier) -> Set<PolicyCheck> {
        var checks: Set<PolicyCheck> = []
        for candidate in self.tiers {
            checks.formUnion(candidate.addedChecks ?? PolicyCheck.defaults)
            if candidate.name == tier.name { break }
        }
        return checks
    }

}

/// A policy that cannot be loaded.
public struct PolicyError: Error, Hashable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { self.reason }
}
