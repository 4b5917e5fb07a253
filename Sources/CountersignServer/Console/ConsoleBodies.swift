import Foundation
import Hummingbird
import NIOCore
import Policy
import WebAuthn

/// The console's bodies and answers: JSON read from a request and checked member by member, JSON and assets sent back,
/// and an error as the page's script or a browser expects it.
extension ConsoleRoutes {
    static func money(_ minorUnits: Int64, _ code: String) -> String {
        Money.text(minorUnits: minorUnits, code: code)
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func json(_ request: Request) async throws -> [String: Any] {
        let body = try await request.body.collect(upTo: 64 * 1024)
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
            throw ConsoleError(.invalidRequest, "the body is not a JSON object")
        }
        return object
    }

    static func json(_ object: [String: Any]) throws -> Response {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func string(_ object: [String: Any], _ key: String) throws -> String {
        guard let value = object[key] as? String, !value.isEmpty, value.utf8.count <= 4096 else {
            throw ConsoleError(.invalidRequest, "'\(key)' is missing or not a string")
        }
        return value
    }

    static func object(_ object: [String: Any], _ key: String) throws -> [String: Any] {
        guard let value = object[key] as? [String: Any] else { throw ConsoleError(.invalidRequest, "'\(key)' is missing or not an object") }
        return value
    }

    static func bytes(_ object: [String: Any], _ key: String) throws -> [UInt8] {
        guard let bytes = RelyingParty.base64URLDecode(try Self.string(object, key)) else { throw ConsoleError(.invalidRequest, "'\(key)' is not base64url") }
        return bytes
    }

    /// A `navigator.credentials.get()` answer, as the page sends it: `{id, response: {clientDataJSON, authenticatorData, signature}}`.
    static func assertion(_ body: [String: Any]) throws -> RelyingParty.Assertion {
        let response = try Self.object(body, "response")
        guard let id = RelyingParty.base64URLDecode(try Self.string(body, "id")) else { throw ConsoleError(.invalidRequest, "'id' is not base64url") }
        return RelyingParty.Assertion(
            credentialID: id, clientDataJSON: try Self.bytes(response, "clientDataJSON"), authenticatorData: try Self.bytes(response, "authenticatorData"),
            signature: try Self.bytes(response, "signature"))
    }

    static func status(of code: ErrorCode) -> HTTPResponse.Status {
        switch code {
        case .sessionRequired: .unauthorized
        case .csrfRefused, .forbidden: .forbidden
        case .enrollmentInvalid: .gone
        case .rateLimited: .tooManyRequests
        case .authorizationNotFound: .notFound
        case .alreadyDecided, .approvalClosed, .approvalExpired, .principalExists: .conflict
        case .storeUnavailable, .auditUnavailable, .hsmUnavailable, .signingUnavailable: .serviceUnavailable
        default: .badRequest
        }
    }

    /// JSON for the page's script; for a page, a sign-in redirect or a short HTML page.
    static func errorResponse(_ error: ConsoleError, request: Request, status given: HTTPResponse.Status? = nil) -> Response {
        let status = given ?? Self.status(of: error.code)
        if request.uri.path.hasPrefix("/console/api/") || request.method != .get {
            let body = (try? JSONSerialization.data(withJSONObject: ["error": ["code": error.code.rawValue, "message": error.message]])) ?? Data()
            return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        if error.code == .sessionRequired { return Response(status: .seeOther, headers: [.location: "/console/login"]) }
        return ConsolePages.shared.errorPage(status: status, code: error.code.rawValue, message: error.message)
    }
}
