/// The release of this build, printed by `countersign --version` and `countersignd --version`, and sent as
/// the client name in HELLO.
public enum CountersignVersion {
    public static let current = "0.9.0"
}
