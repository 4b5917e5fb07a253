import Foundation
import Testing
import Wire

/// The tables of docs/protocol.md are read from the code's own declarations, so neither can drift from the other.
@Suite("docs/protocol.md tables match the code")
struct DocumentedTablesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The rows of the first table under `## <heading>` (the first whose header row starts with `header`), as cells
    /// without their outer pipes.
    static func table(under heading: String, header: String = "|") throws -> [[String]] {
        let text = try String(contentsOf: Self.root.appendingPathComponent("docs/protocol.md"), encoding: .utf8)
        let lines = text.components(separatedBy: "\n")
        let start = try #require(lines.firstIndex(of: "## \(heading)"), "docs/protocol.md has a '## \(heading)' section")
        let rows = lines[start...].drop { !$0.hasPrefix(header) }.prefix { $0.hasPrefix("|") }
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

    /// How the message table's third column names who may send a request.
    static func documented(_ senders: Senders) -> String {
        switch senders {
        case .handshake: "client → server"
        case .anyPrincipal: "any principal"
        case .agents: "agents"
        case .administrative: "admins, approvers"
        case .approvers: "approvers"
        case .auditReaders: "auditors, admins, approvers"
        case .administrativeOrAgentItself: "admins, approvers; an agent for itself"
        }
    }

    @Test("the message table is MessageType.catalog: every request's type, name and senders, and its response type")
    func messageTable() throws {
        var documented: [String] = []
        for row in try Self.table(under: "Frames", header: "| type | name |") where row[2] != "server → client" {
            let hex = try #require(row[0].firstMatch(of: /`0x([0-9A-F]{2})`/).map { String($0.1) }, "\(row)")
            documented.append("\(hex) \(row[1]) \(row[2])")
            if let answer = row[4].firstMatch(of: /`0x([0-9A-F]{2})`/) {
                let type = try #require(UInt8(hex, radix: 16))
                #expect(UInt8(answer.1, radix: 16) == MessageType(rawValue: type).response.rawValue, "\(row[1]) is answered by its type | 0x80")
            }
        }
        let catalog = MessageType.catalog.map { descriptor in
            let hex = String(descriptor.type.rawValue, radix: 16, uppercase: true)
            return "\(hex.count == 1 ? "0" + hex : hex) \(descriptor.name) \(Self.documented(descriptor.senders))"
        }
        #expect(documented.sorted() == catalog.sorted())
        #expect(MessageType.requests.count == MessageType.catalog.count, "no type is in the catalog twice")
        for descriptor in MessageType.catalog {
            #expect(descriptor.type.name == descriptor.name)
            #expect(descriptor.type.response.name == descriptor.name + "_RESPONSE")
        }
    }

    @Test("who may send what: each role against each request's senders")
    func senders() {
        #expect(Senders.agents.admit(.agent) && !Senders.agents.admit(.admin))
        #expect(Senders.administrative.admit(.admin) && Senders.administrative.admit(.approver) && !Senders.administrative.admit(.auditor))
        #expect(Senders.approvers.admit(.approver) && !Senders.approvers.admit(.admin))
        #expect(Senders.auditReaders.admit(.auditor) && Senders.auditReaders.admit(.admin) && !Senders.auditReaders.admit(.agent))
        #expect(Role.allCases.allSatisfy { !Senders.handshake.admit($0) && Senders.anyPrincipal.admit($0) })
        #expect(throws: WireError(.forbidden, "KEYS_ROTATE is for admins; this credential is an agent's")) {
            try Senders.administrative.check(.agent, sending: .keysRotate)
        }
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
