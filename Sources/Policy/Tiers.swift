import Crypto
import Foundation

/// Where a key's private half lives.
public enum KeyBackend: String, Codable, Sendable, Hashable {
    /// In memory (swift-crypto), stored only sealed by the HSM.
    case software
    /// Inside the PKCS#11 token; never leaves it.
    case hsm
}

/// One authorization tier: the amounts it covers, the key that signs it, how long its authorizations live.
public struct Tier: Sendable, Hashable {
    public var name: String
    /// The highest amount this tier may authorize, per accepted currency, in minor units.
    public var maximumAmounts: [String: Int64]
    /// The name of the key that signs this tier's authorizations.
    public var keyName: String
    public var backend: KeyBackend
    /// The authorization's lifetime (`exp - iat`), in seconds.
    public var lifetimeSeconds: Int64

    public init(name: String, maximumAmounts: [String: Int64], keyName: String, backend: KeyBackend, lifetimeSeconds: Int64) {
        self.name = name
        self.maximumAmounts = maximumAmounts
        self.keyName = keyName
        self.backend = backend
        self.lifetimeSeconds = lifetimeSeconds
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
/// This is the amount split of issue 3; the cascading checks of the full policy add to it.
public struct TierTable: Sendable, Hashable {
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

    /// A hash of the tiers, carried in every authorization as `policy_version`.
    public var version: String {
        var text = ""
        for tier in self.tiers {
            let bounds = tier.maximumAmounts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            text += "\(tier.name)|\(bounds)|\(tier.keyName)|\(tier.backend.rawValue)|\(tier.lifetimeSeconds)\n"
        }
        let digest = SHA256.hash(data: Data(text.utf8))
        return "sha256:" + digest.map { String(format: "%02x", $0) }.joined().prefix(16)
    }
}

/// A policy that cannot be loaded.
public struct PolicyError: Error, Hashable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { self.reason }
}
