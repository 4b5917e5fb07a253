import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Mustache
import NIOCore

/// The console's pages: Mustache templates compiled into the binary (every value HTML-escaped by `{{…}}`), with one
/// stylesheet and one script served from `/console/static/`, and nothing inline.
struct ConsolePages: Sendable {
    static let shared = ConsolePages()

    let library: MustacheLibrary

    init() {
        var library = MustacheLibrary()
        for (name, text) in Self.templates {
            // The templates are the binary's own; one that does not parse is a bug caught by the first test.
            try! library.register(text, named: name)
        }
        self.library = library
    }

    func html(_ template: String, _ values: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        let body = self.library.render(values, withTemplate: template) ?? "template \(template) missing"
        return Response(status: status, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    func errorPage(status: HTTPResponse.Status, code: String, message: String) -> Response {
        self.html("error", ["title": "Not possible", "code": code, "message": message], status: status)
    }

    static let head = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        {{#csrf}}<meta name="csrf-token" content="{{csrf}}">{{/csrf}}
        <title>{{title}} · Countersign</title>
        <link rel="stylesheet" href="/console/static/console.css">
        <script src="/console/static/console.js" defer></script>
        </head>
        <body data-page="{{page}}">
        <header>
          <a class="brand" href="/console">Countersign</a>
          {{#principal}}
          <nav>
            {{#seesPayments}}<a href="/console/approvals">Approvals</a>{{/seesPayments}}
            <a href="/console/audit">Audit log</a>
            <a href="/console/keys">Keys</a>
            <a href="/console/agents">Principals</a>
            <button type="button" id="logout">Sign out {{principal}} ({{role}})</button>
          </nav>
          {{/principal}}
        </header>
        <main>
        <h1>{{title}}</h1>
        <p id="status" role="status"></p>
        """

    static let foot = """
        </main>
        </body>
        </html>
        """

    static let templates: [String: String] = [
        "head": Self.head,
        "foot": Self.foot,
        "login": """
        {{> head}}
        <form id="login-form" class="card">
          <label for="principal">Your id</label>
          <input id="principal" name="principal" autocomplete="username webauthn" required>
          <button type="submit" id="sign-in">Sign in with your passkey</button>
        </form>
        <p class="note">No password: your passkey (a security key, or your device's lock) proves it is you.</p>
        {{> foot}}
        """,
        "enroll": """
        {{> head}}
        <div class="card">
          <p>An admin invited you to approve payments. Register a passkey on this device: it signs you in, and it signs every
          verdict you give.</p>
          <button type="button" id="register">Register my passkey</button>
        </div>
        {{> foot}}
        """,
        "rows": """
        {{#rows}}
        <tr>
          <td><a href="/console/approvals/{{id}}">{{amount}}</a></td>
          <td>{{agent}}</td>
          <td>{{merchant}}</td>
          <td>{{tier}}</td>
          <td>{{progress}}</td>
          <td><time class="countdown" data-deadline="{{deadline}}">{{requested}}</time></td>
        </tr>
        <tr class="summary"><td colspan="6">{{summary}}</td></tr>
        {{/rows}}
        {{#empty}}<tr><td colspan="6" class="empty">Nothing waits for approval.</td></tr>{{/empty}}
        """,
        "approvals": """
        {{> head}}
        <p class="note">Oldest first. This list follows new requests and verdicts as they happen.</p>
        <div class="scroll">
        <table id="approvals">
          <thead><tr><th>Amount</th><th>Agent</th><th>Merchant</th><th>Tier</th><th>Approvals</th><th>Time left</th></tr></thead>
          <tbody id="approval-rows">{{> rows}}</tbody>
        </table>
        </div>
        {{> foot}}
        """,
        "approval": """
        {{> head}}
        <section class="card summary-card">
          <p class="big">{{summary}}</p>
          <p>Status <strong id="approval-status">{{status}}</strong> · approvals {{progress}} · requested {{requested}} ·
          deadline <time class="countdown" data-deadline="{{deadline}}">{{deadlineText}}</time></p>
          {{#canDecide}}
          <div class="actions" data-id="{{id}}">
            <button type="button" id="approve" class="approve">Approve {{amount}} with my passkey</button>
            <button type="button" id="deny" class="deny">Deny</button>
          </div>
          {{/canDecide}}
        </section>
        <section>
          <h2>Why it waits for you</h2>
          <p>{{tierReason}}</p>
          <div class="scroll"><table><thead><tr><th>Check</th><th>Inputs</th><th>Result</th></tr></thead><tbody>
          {{#checks}}<tr><td>{{name}}</td><td>{{inputs}}</td><td class="result-{{result}}">{{result}}</td></tr>{{/checks}}
          </tbody></table></div>
          <p class="note">Policy {{policyVersion}}</p>
        </section>
        <section>
          <h2>What the agent says it buys</h2>
          <p>{{intent}}</p>
          {{#hasLineItems}}
          <div class="scroll"><table><thead><tr><th>Item</th><th>Quantity</th><th>Unit</th><th>Category</th></tr></thead><tbody>
          {{#lineItems}}<tr><td>{{description}}</td><td>{{quantity}}</td><td>{{unit}}</td><td>{{category}}</td></tr>{{/lineItems}}
          </tbody></table></div>
          {{/hasLineItems}}
          <p>Merchant {{merchant}} (MCC {{mcc}}){{#seenBefore}}, paid by this agent before{{/seenBefore}}{{^seenBefore}}, <strong>never paid by this agent in 30 days</strong>{{/seenBefore}}.</p>
        </section>
        <section>
          <h2>The request exactly as the agent sent it</h2>
          <pre id="request-json">{{requestJSON}}</pre>
        </section>
        <section>
          <h2>The agent's last 30 days</h2>
          <p>Usual amount (median): {{usual}}</p>
          {{#hasRecent}}
          <div class="scroll"><table><thead><tr><th>When</th><th>Amount</th><th>Merchant</th><th>Tier</th></tr></thead><tbody>
          {{#recent}}<tr><td>{{time}}</td><td>{{amount}}</td><td>{{merchant}}</td><td>{{tier}}</td></tr>{{/recent}}
          </tbody></table></div>
          <p>Merchants: {{#merchants}}{{merchant}} ({{count}}) {{/merchants}}</p>
          {{/hasRecent}}
          {{^hasRecent}}<p>No signed payment in 30 days.</p>{{/hasRecent}}
        </section>
        <section>
          <h2>Budgets it counts against</h2>
          {{#hasBudgets}}
          <div class="scroll"><table><thead><tr><th>Scope</th><th>Window</th><th>Limit</th><th>Counted</th><th>Of which pending</th><th>Left</th></tr></thead><tbody>
          {{#budgets}}<tr><td>{{scope}}</td><td>{{window}}</td><td>{{limit}}</td><td>{{spent}}</td><td>{{pending}}</td><td>{{remaining}}</td></tr>{{/budgets}}
          </tbody></table></div>
          {{/hasBudgets}}
          {{^hasBudgets}}<p>No budget applies.</p>{{/hasBudgets}}
        </section>
        <section>
          <h2>Verdicts so far</h2>
          {{#hasVerdicts}}<ul>{{#verdicts}}<li>{{approver}}: {{verdict}} at {{time}}</li>{{/verdicts}}</ul>{{/hasVerdicts}}
          {{^hasVerdicts}}<p>None yet.</p>{{/hasVerdicts}}
        </section>
        {{> foot}}
        """,
        "audit": """
        {{> head}}
        <section class="card">
          <p>{{size}} entries. Latest signed checkpoint: {{checkpointSize}} entries, {{checkpointTime}}.</p>
          <pre id="checkpoint">{{checkpointNote}}</pre>
          <p class="note">"Check" fetches the entry's inclusion proof and recomputes, in this page, the path from the entry to the checkpoint's root.</p>
        </section>
        <div class="scroll">
        <table id="audit-entries">
          <thead><tr><th>#</th><th>When</th><th>Action</th><th>Actor</th><th>Subject</th><th>Proof</th></tr></thead>
          <tbody>
          {{#entries}}
          <tr><td>{{index}}</td><td>{{time}}</td><td>{{action}}</td><td>{{actor}}</td><td class="wrap">{{subject}}</td>
            <td><button type="button" class="check-proof" data-index="{{index}}">Check</button> <span class="proof-result" id="proof-{{index}}"></span></td></tr>
          {{/entries}}
          </tbody>
        </table>
        </div>
        {{#hasOlder}}<p><a href="/console/audit?from={{older}}">Older entries</a></p>{{/hasOlder}}
        {{> foot}}
        """,
        "keys": """
        {{> head}}
        <div class="scroll"><table><thead><tr><th>Key</th><th>Backend</th><th>State</th><th>Tier</th><th>Signatures</th><th>Created</th><th>Active since</th></tr></thead><tbody>
        {{#keys}}<tr><td>{{kid}}</td><td>{{backend}}</td><td>{{state}}</td><td>{{tier}}</td><td>{{signatures}}</td><td>{{created}}</td><td>{{activated}}</td></tr>{{/keys}}
        </tbody></table></div>
        {{> foot}}
        """,
        "agents": """
        {{> head}}
        <div class="scroll"><table><thead><tr><th>Id</th><th>Role</th><th>Registered</th><th>Revoked</th></tr></thead><tbody>
        {{#principals}}<tr><td>{{id}}</td><td>{{role}}</td><td>{{created}}</td><td>{{revoked}}</td></tr>{{/principals}}
        </tbody></table></div>
        {{> foot}}
        """,
        "error": """
        {{> head}}
        <p class="error">{{message}}</p>
        <p class="note">{{code}}</p>
        <p><a href="/console">Back</a></p>
        {{> foot}}
        """,
    ]
}
