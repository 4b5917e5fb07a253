/// A program cannot start (a file it needs, a configuration, a device); the reason says what to do.
public struct StartupError: Error, CustomStringConvertible, Sendable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { self.reason }
}
