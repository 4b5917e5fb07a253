import CountersignClient
import Foundation
import NIOCore
import TestSupport
import Testing
import Wire

@Suite("Bad input gets its documented error and harms no other connection", .timeLimit(.minutes(1)))
struct BadInputTests {
    static func frameHeader(length: UInt32, version: UInt8 = 1, type: UInt8 = 0x10, id: UInt32 = 9) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(length)
        buffer.writeInteger(version)
        buffer.writeInteger(type)
        buffer.writeInteger(id)
        return Array(buffer.readableBytesView)
    }

    @Test("each kind of bad input, while a well-behaved client keeps being served")
    func badInputIsolated() async throws {
        try await withServer { server in
            let good = try await server.connect(try await server.addPrincipal("agent-bystander"))
            #expect(try await good.authorize(TestServer.request(500)).tier == "standard")

            // A length of 2^32-1: FRAME_TOO_LARGE, then the connection is closed.
            try await RawConnection.with(port: server.port) { raw in
                try await raw.write(bytes: Self.frameHeader(length: UInt32.max))
                let error = try await raw.nextError()
                #expect(error?.code == .frameTooLarge)
                #expect(try await raw.next() == nil)
            }
            // A length below the header: MALFORMED_FRAME and closed.
            try await RawConnection.with(port: server.port) { raw in
                try await raw.write(bytes: [0, 0, 0, 2, 1, 1])
                #expect(try await raw.nextError()?.code == .malformedFrame)
                #expect(try await raw.next() == nil)
            }
            // A wrong protocol version: UNSUPPORTED_VERSION and closed.
            try await RawConnection.with(port: server.port) { raw in
                try await raw.write(Frame(version: 2, type: .hello, requestID: 4, body: WireJSON.encode(Hello(principal: "x"))))
                let frame = try #require(try await raw.next())
                #expect(frame.requestID == 4)
                #expect(try WireJSON.decode(WireError.self, from: frame.body).code == .unsupportedVersion)
                #expect(try await raw.next() == nil)
            }
            // A frame cut short when the client stops sending: TRUNCATED_FRAME.
            try await RawConnection.with(port: server.port) { raw in
                try await raw.write(bytes: Self.frameHeader(length: 100) + Array("{\"principal\"".utf8))
                raw.finishWriting()
                #expect(try await raw.nextError()?.code == .truncatedFrame)
            }
            // An unknown type, malformed JSON and a wrong field type: errors, and the connection stays usable.
            try await RawConnection.with(port: server.port) { raw in
                try await raw.write(Frame(type: MessageType(rawValue: 0x55), requestID: 1, body: ByteBuffer(string: "{}")))
                #expect(try await raw.nextError()?.code == .unknownMessageType)
                try await raw.write(Frame(type: .hello, requestID: 2, body: ByteBuffer(string: "{not json")))
                #expect(try await raw.nextError()?.code == .malformedJSON)
                try await raw.write(Frame(type: .hello, requestID: 3, body: ByteBuffer(string: #"{"principal": 42}"#)))
                let wrongType = try await raw.nextError()
                #expect(wrongType?.code == .invalidRequest)
                #expect(wrongType?.message == "field 'principal' must be a string, not a number")
                try await raw.write(Frame(type: .hello, requestID: 4, body: ByteBuffer(string: #"{"principal": "bad id with spaces"}"#)))
                #expect(try await raw.nextError()?.code == .invalidRequest)
                try await raw.write(.hello, id: 5, Hello(principal: "agent-bystander"))
                #expect(try await raw.next()?.type == .challenge)
            }
            // An authenticated client sending malformed requests gets errors and keeps its connection.
            let clumsy = try await server.connect(try await server.addPrincipal("agent-clumsy"))
            let answers = try await [
                clumsy.send(Frame(type: .authorize, requestID: 100, body: ByteBuffer(string: "]"))),
                clumsy.send(Frame(type: .authorize, requestID: 101, body: ByteBuffer(string: #"{"amount":"lots"}"#))),
                clumsy.send(
                    Frame(
                        type: .authorize, requestID: 102,
                        body: ByteBuffer(
                            string:
                                #"{"idempotency_key":"k","amount":12.5,"currency":"USD","merchant_id":"m","merchant_category_code":"5734","intent":{"description":"d","order_hash":"h"}}"#
                        ))),
                clumsy.send(Frame(type: MessageType(rawValue: 0x66), requestID: 103, body: ByteBuffer())),
            ]
            let empty = try await clumsy.send(Frame(type: .authorize, requestID: 104, body: ByteBuffer()))
            let emptyError = try WireJSON.decode(WireError.self, from: empty.body)
            #expect(emptyError.code == .invalidRequest, "an empty body is {}")
            #expect(emptyError.message == "field 'idempotency_key' is required")
            let codes = try answers.map { try WireJSON.decode(WireError.self, from: $0.body).code }
            #expect(codes == [.malformedJSON, .invalidRequest, .invalidRequest, .unknownMessageType])
            #expect(answers.map(\.requestID) == [100, 101, 102, 103])
            #expect(try await clumsy.authorize(TestServer.request(700)).tier == "standard")

            // The bystander never noticed.
            #expect(try await good.authorize(TestServer.request(1_000_000)).tier == "high")
            await good.close()
            await clumsy.close()
        }
    }

    @Test("over the connection limit a client gets TOO_MANY_CONNECTIONS; those inside keep working")
    func connectionLimit() async throws {
        try await withServer(.init(maxConnections: 2)) { server in
            let credential = try await server.addPrincipal("agent-crowd")
            let first = try await server.connect(credential)
            let second = try await server.connect(credential)
            try await RawConnection.with(port: server.port) { raw in
                let error = try await raw.nextError()
                #expect(error?.code == .tooManyConnections)
                #expect(error?.retryable == true)
            }
            try await first.ping()
            try await second.ping()
            await first.close()
            await second.close()
        }
    }
}
