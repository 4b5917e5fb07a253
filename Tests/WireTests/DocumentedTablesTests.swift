import Foundation
import Testing
import Wire

/// The tables of docs/protocol.md are read from the code's own declarations, so neither can drift from the other.
@Suite("docs/protocol.md tables match the code")
struct DocumentedTablesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The rows of the first table under `## <heading>`, as cells without their outer pipes.
    static func table(under heading: String) throws -> [[String]] {
        let text = try String(contentsOf: Self.root.appendingPathComponent("docs/protocol.md"), encoding: .utf8)
        let lines = text.components(separatedBy: "\n")
        let start = try #require(lines.firstIndex(of: "## \(heading)"), "docs/protocol.md has a '## \(heading)' section")
        let rows = lines[start...].drop { !$0.hasPrefix("|") }.prefix { $0.hasPrefix("|") }
        return rows.dropFirst(2).map { row in
            row.trimmingCharacters(in: .whitespaces).dropFirst().dropLast().components(separatedBy: " | ").map {
                $0.trimmingCharacters(in: .whitespaces)
            }
        }
    }

    /// The `CODE`s written in backticks in a cell.
    static func codes(in cell: String) -> [String] {
        cell.matches(of: /`([A-Z0-9_]+)`/).map { String($0.1) }
    }

    @Test("every code a client can receive is in the Errors table, with the same retryable and closes-the-connection, and nothing else is")
    func errorTable() throws {
        var documented: [String: (closes: Bool, retryable: Bool)] = [:]
        for row in try Self.table(under: "Errors") {
            let closes = row[1] == "yes" || row[1] == "at the handshake"
            let retryable = row[2].contains("(retryable)")
            for code in Self.codes(in: row[0]) {
                #expect(documented[code] == nil, "\(code) is documented once")
                documented[code] = (closes, retryable)
            }
        }
        let wire = ErrorCode.known.filter { $0.audience == .wire }
        #expect(Set(documented.keys) == Set(wire.map(\.rawValue)))
        for code in wire {
            guard let row = documented[code.rawValue] else { continue }
            #expect(row.closes == code.closesConnection, "\(code): closes the connection")
            #expect(row.retryable == code.isRetryable, "\(code): retryable")
        }
    }

    @Test("every code declared in ErrorCode.swift has its meaning in the vocabulary")
    func everyDeclaredCodeIsKnown() throws {
        let source = try String(contentsOf: Self.root.appendingPathComponent("Sources/CountersignCore/ErrorCode.swift"), encoding: .utf8)
        let declared = source.matches(of: /static let \w+: ErrorCode = "([A-Z0-9_]+)"/).map { String($0.1) }
        #expect(declared.count > 50)
        #expect(Set(declared) == Set(ErrorCode.known.map(\.rawValue)))
        #expect(Set(declared).count == declared.count, "no code is declared twice")
    }

    @Test("a code this build does not know still decodes, and is neither retryable nor closing")
    func unknownCode() throws {
        let error = try JSONDecoder().decode(WireError.self, from: Data(#"{"code":"FROM_THE_FUTURE","message":"m","retryable":true}"#.utf8))
        #expect(error.code.rawValue == "FROM_THE_FUTURE")
        #expect(error.retryable, "the server's word on retrying is kept")
        #expect(!error.code.isRetryable && !error.closesConnection && error.code.audience == nil)
    }
}
