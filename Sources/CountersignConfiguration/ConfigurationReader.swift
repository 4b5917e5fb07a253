import Yams

/// A configuration file that cannot be used: the file, the line, and the reason.
public struct ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var reason: String

    public init(file: String, line: Int?, reason: String) {
        self.file = file
        self.line = line
        self.reason = reason
    }

    public var description: String {
        if let line { return "\(self.file):\(line): \(self.reason)" }
        return "\(self.file): \(self.reason)"
    }
}

/// Reads a YAML mapping key by key, refusing keys it was not asked for, with line numbers in every error.
///
/// Decoding YAML straight into `Decodable` types would silently ignore a misspelt key (`thresold:`), which
/// in a signing service's policy is a security bug; so every mapping is walked explicitly.
struct ConfigurationReader {
    let file: String
    let node: Node
    let path: String

    init(file: String, node: Node, path: String = "") {
        self.file = file
        self.node = node
        self.path = path
    }

    static func parse(yaml: String, file: String) throws -> ConfigurationReader {
        do {
            guard let node = try Yams.compose(yaml: yaml) else {
                throw ConfigurationError(file: file, line: nil, reason: "the file is empty")
            }
            return ConfigurationReader(file: file, node: node)
        } catch let error as ConfigurationError {
            throw error
        } catch let error as YamlError {
            throw ConfigurationError(file: file, line: Self.line(of: error), reason: "not valid YAML: \(Self.summary(of: error))")
        }
    }

    var line: Int? { self.node.mark?.line }

    func error(_ reason: String) -> ConfigurationError {
        ConfigurationError(file: self.file, line: self.line, reason: self.path.isEmpty ? reason : "\(self.path): \(reason)")
    }

    /// The mapping's entries, after checking that no key outside `allowed` is present.
    func mapping(allowing allowed: Set<String>?) throws -> [String: ConfigurationReader] {
        guard case .mapping(let mapping) = self.node else {
            throw self.error("expected a mapping of keys to values")
        }
        var entries: [String: ConfigurationReader] = [:]
        for (key, value) in mapping {
            guard let name = key.string else {
                throw ConfigurationError(file: self.file, line: key.mark?.line, reason: "keys must be strings")
            }
            let childPath = self.path.isEmpty ? name : "\(self.path).\(name)"
            if let allowed, !allowed.contains(name) {
                let known = allowed.sorted().joined(separator: ", ")
                throw ConfigurationError(file: self.file, line: key.mark?.line, reason: "unknown key '\(childPath)' (known here: \(known))")
            }
            guard entries[name] == nil else {
                throw ConfigurationError(file: self.file, line: key.mark?.line, reason: "key '\(childPath)' appears twice")
            }
            entries[name] = ConfigurationReader(file: self.file, node: value, path: childPath)
        }
        return entries
    }

    func sequence() throws -> [ConfigurationReader] {
        guard case .sequence(let sequence) = self.node else {
            throw self.error("expected a list")
        }
        return sequence.enumerated().map { ConfigurationReader(file: self.file, node: $1, path: "\(self.path)[\($0)]") }
    }

    func string() throws -> String {
        guard case .scalar(let scalar) = self.node, !scalar.string.isEmpty else {
            throw self.error("expected a non-empty string")
        }
        return scalar.string
    }

    func integer(in range: ClosedRange<Int64>) throws -> Int64 {
        guard case .scalar(let scalar) = self.node, let value = Int64(scalar.string), !scalar.string.contains(".") else {
            throw self.error("expected an integer")
        }
        guard range.contains(value) else {
            throw self.error("\(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    func bool() throws -> Bool {
        guard case .scalar(let scalar) = self.node else { throw self.error("expected true or false") }
        switch scalar.string {
        case "true": return true
        case "false": return false
        default: throw self.error("expected true or false, not '\(scalar.string)'")
        }
    }

    /// A duration such as `250ms`, `5s`, `2m` or `1h` (``DurationText``).
    func duration(in range: ClosedRange<Duration>) throws -> Duration {
        let text = try self.string()
        guard let value = DurationText.parse(text) else {
            throw self.error("expected a duration such as \(DurationText.examples), not '\(text)'")
        }
        guard range.contains(value) else {
            throw self.error("\(text) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    private static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return nil
        }
    }

    private static func summary(of error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _):
            return problem
        default:
            return "\(error)"
        }
    }
}
