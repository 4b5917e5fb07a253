"""The approvals console over HTTP against a real countersignd, with python-fido2 acting as each person's passkey:
enrollment links, sign-in, verdicts bound to the payment, and every refusal a careful reviewer asks for (no CSRF token,
another origin, another approver's passkey, a replayed assertion, a revoked approver, a flood of sign-ins)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import uuid

from fido2 import cbor
from fido2.cose import CoseKey
from fido2.utils import websafe_decode

from countersign import AsyncClient, LineItem, PendingApproval, fetch_jwks, verify

from .conftest import Server
from .passkey import UP, Browser, SoftPasskey, enrollment_link

PEOPLE: dict[str, tuple[Browser, SoftPasskey]] = {}


def person(server: Server, name: str, role: str | None = None) -> tuple[Browser, SoftPasskey]:
    """A person enrolled once per test session (the enrollment ceremony is tested on the way)."""
    if name not in PEOPLE:
        browser, passkey = Browser(server.http_port, server.console_origin), SoftPasskey()
        done = browser.enroll(enrollment_link(server, name, role), passkey)
        assert done["principal"] == name
        browser.page(done["redirect"])
        PEOPLE[name] = (browser, passkey)
    return PEOPLE[name]


def pending_payment(server: Server, amount: int = 6_000_000) -> str:
    async def ask() -> str:
        async with AsyncClient.from_credential_file(server.credential("agent-es"), server.address) as client:
            pending = await client.authorize(
                idempotency_key=f"console-{uuid.uuid4()}", amount=amount, currency="USD", line_items=[LineItem("GPU server", 1, amount)],
                merchant_id="m-gpus", merchant_category_code="5045", description="one GPU server",
            )
            assert isinstance(pending, PendingApproval)
            return pending.authorization_id

    return asyncio.run(ask())


def verdict(browser: Browser, passkey: SoftPasskey, authorization_id: str, decision: str = "approve") -> tuple[int, dict]:
    status, options = browser.post(f"/console/api/approvals/{authorization_id}/{decision}/options")
    assert status == 200, options
    return browser.post(f"/console/api/approvals/{authorization_id}/{decision}", passkey.assertion(options, browser.origin))


def audit_entries(server: Server) -> list[dict]:
    env = dict(server.env, COUNTERSIGN_CREDENTIAL=str(server.admin))
    done = subprocess.run([str(server_cli(server)), "audit", "export", "--since", "0", "--format", "jsonl"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def server_cli(server: Server):  # noqa: ANN201
    from .conftest import BIN

    return BIN / "countersign"


def test_two_approvers_enrolled_by_link_approve_with_passkeys_and_the_agent_receives_both_in_the_claims(server: Server) -> None:
    carol, carol_key = person(server, "carol")
    dave, dave_key = person(server, "dave")
    status, page = carol.page("/console/approvals")
    assert status == 200 and "Waiting for approval" in page

    async def scenario() -> None:
        async with AsyncClient.from_credential_file(server.credential("agent-es"), server.address) as client:
            pending = await client.authorize(
                idempotency_key=f"console-{uuid.uuid4()}", amount=7_000_000, currency="USD", line_items=[LineItem("GPU server", 1, 7_000_000)],
                merchant_id="m-gpus", merchant_category_code="5045", description="one GPU server",
            )
            assert isinstance(pending, PendingApproval)
            waiting = asyncio.ensure_future(client.wait_for_approval(pending.authorization_id, timeout=120))
            _, rows = await asyncio.to_thread(carol.page, "/console/approvals/rows")
            assert pending.authorization_id in rows and "70000.00 USD" in rows
            _, detail = await asyncio.to_thread(carol.page, f"/console/approvals/{pending.authorization_id}")
            assert "&quot;merchant_id&quot; : &quot;m-gpus&quot;" in detail or '"merchant_id" : "m-gpus"' in detail.replace("&quot;", '"')
            status, answer = await asyncio.to_thread(verdict, carol, carol_key, pending.authorization_id)
            assert status == 200 and answer["status"] == "pending_approval", answer
            status, answer = await asyncio.to_thread(verdict, dave, dave_key, pending.authorization_id)
            assert status == 200 and answer["status"] == "authorized", answer
            authorization = await waiting
            assert authorization.approvers == ("carol", "dave")
            claims = verify(authorization.jws, fetch_jwks(server.jwks_url), audience="m-gpus")
            assert claims.approvers == ("carol", "dave")
            return pending.authorization_id

    authorization_id = asyncio.run(scenario())

    # An auditor re-verifies each verdict offline, from the audit log alone (docs/console.md).
    entries = audit_entries(server)
    for entry in [e for e in entries if e["action"] == "approvals.approve" and e.get("subject") == authorization_id]:
        check_verdict_offline(entries, entry, server.console_origin)
    assert [e["actor"] for e in entries if e["action"] == "approvals.approve" and e.get("subject") == authorization_id] == ["carol", "dave"]


def check_verdict_offline(entries: list[dict], entry: dict, origin: str) -> None:
    """The auditor's procedure: the key registered to this very person, the ceremony's type, origin, relying party and
    flags, the signature, a challenge never used before, bound to this payment, this verdict and the request the
    decision entry names."""
    details, actor, subject = entry["details"], entry["actor"], entry["subject"]
    verdict = entry["action"].split(".")[1]
    registered = [
        e for e in entries
        if e["action"] == "approvers.passkey_registered" and e["subject"] == actor and e["details"]["credential_id"] == details["passkey_credential_id"]
    ]
    assert len(registered) == 1, "the key must have been registered to the approver who used it"
    key = CoseKey.parse(cbor.decode(websafe_decode(registered[0]["details"]["public_key"])))
    client_data_bytes = websafe_decode(details["passkey_client_data_json"])
    client_data = json.loads(client_data_bytes)
    assert client_data["type"] == "webauthn.get" and client_data["origin"] == origin and client_data.get("crossOrigin") is not True
    authenticator_data = websafe_decode(details["passkey_authenticator_data"])
    assert authenticator_data[:32] == hashlib.sha256(b"localhost").digest(), "the relying party id's hash"
    assert authenticator_data[32] & 0x05 == 0x05, "user present and verified"
    key.verify(authenticator_data + hashlib.sha256(client_data_bytes).digest(), websafe_decode(details["passkey_signature"]))  # raises if not
    challenge = websafe_decode(client_data["challenge"])
    others = [e for e in entries if e is not entry and (e.get("details") or {}).get("passkey_client_data_json") == details["passkey_client_data_json"]]
    assert others == [], "an assertion counts once"
    decision = [e for e in entries if e["action"] == "pending_approval" and e.get("subject") == subject]
    assert len(decision) == 1 and decision[0]["decision"]["request_sha256"] == details["request_sha256"], "the request the decision recorded"
    binding = hashlib.sha256()
    for part in (b"countersign-verdict-v1", subject.encode(), verdict.encode(), websafe_decode(details["request_sha256"])):
        binding.update(part + b"\x00")
    assert challenge[16:] == binding.digest()


def test_a_state_change_without_the_csrf_token_or_from_another_origin_is_refused(server: Server) -> None:
    carol, carol_key = person(server, "carol")
    authorization_id = pending_payment(server)
    saved = carol.csrf
    carol.csrf = None
    status, answer = carol.post(f"/console/api/approvals/{authorization_id}/approve/options")
    assert status == 403 and answer["error"]["code"] == "CSRF_REFUSED"
    carol.csrf = "x" * len(saved or "")
    status, answer = carol.post(f"/console/api/approvals/{authorization_id}/approve/options")
    assert status == 403 and answer["error"]["code"] == "CSRF_REFUSED"
    carol.csrf = saved
    status, answer = carol.post(f"/console/api/approvals/{authorization_id}/approve/options", Origin="http://evil.example")
    assert status == 403 and answer["error"]["code"] == "CSRF_REFUSED"
    # With both, it works.
    status, _ = verdict(carol, carol_key, authorization_id, "deny")
    assert status == 200


def test_another_approvers_passkey_a_replayed_or_moved_assertion_and_a_missing_user_verification_are_refused(server: Server) -> None:
    carol, carol_key = person(server, "carol")
    dave, _ = person(server, "dave")
    first, second = pending_payment(server), pending_payment(server)

    # Dave's session with Carol's passkey.
    status, options = dave.post(f"/console/api/approvals/{first}/approve/options")
    assert status == 200
    status, answer = dave.post(f"/console/api/approvals/{first}/approve", carol_key.assertion(options, dave.origin))
    assert status == 400 and answer["error"]["code"] == "PASSKEY_REFUSED", answer

    # An assertion for the first payment, posted for the second: its ceremony is bound to the first.
    status, options = carol.post(f"/console/api/approvals/{first}/approve/options")
    signed = carol_key.assertion(options, carol.origin)
    status, answer = carol.post(f"/console/api/approvals/{second}/approve", signed)
    assert status == 400 and answer["error"]["code"] == "PASSKEY_REFUSED", answer
    # Replayed where it belongs, after that attempt consumed the ceremony: refused too.
    status, answer = carol.post(f"/console/api/approvals/{first}/approve", signed)
    assert status == 400 and answer["error"]["code"] == "PASSKEY_REFUSED", answer

    # A fresh ceremony answered twice: the second is a replay.
    status, options = carol.post(f"/console/api/approvals/{first}/deny/options")
    signed = carol_key.assertion(options, carol.origin)
    status, answer = carol.post(f"/console/api/approvals/{first}/deny", signed)
    assert status == 200, answer
    status, answer = carol.post(f"/console/api/approvals/{first}/deny", signed)
    assert status == 400 and answer["error"]["code"] == "PASSKEY_REFUSED"

    # The user not verified (UV clear), and a counter that goes back.
    status, options = carol.post(f"/console/api/approvals/{second}/approve/options")
    status, answer = carol.post(f"/console/api/approvals/{second}/approve", carol_key.assertion(options, carol.origin, flags=UP))
    assert status == 400 and "not verified" in answer["error"]["message"]
    status, options = carol.post(f"/console/api/approvals/{second}/approve/options")
    status, answer = carol.post(f"/console/api/approvals/{second}/approve", carol_key.assertion(options, carol.origin, counter=1))
    assert status == 400 and "counter" in answer["error"]["message"]
    carol_key.counter = 1000  # the authenticator as it really is: its counter only goes up


def test_roles_are_enforced_on_every_page_and_an_auditor_checks_the_log(server: Server) -> None:
    erin, _ = person(server, "erin", role="auditor")
    status, _ = erin.page("/console/approvals")
    assert status == 403
    status, page = erin.page("/console/audit")
    assert status == 200 and "Audit log" in page
    status, _, data = erin.request("GET", "/console/api/audit/proof/0")
    proof = json.loads(data)
    assert status == 200 and proof["index"] == 0 and proof["tree_size"] >= 1
    status, answer = erin.post(f"/console/api/approvals/{pending_payment(server)}/approve/options")
    assert status == 403 and answer["error"]["code"] == "FORBIDDEN"
    for path in ("/console/keys", "/console/agents"):
        assert erin.page(path)[0] == 200

    anonymous = Browser(server.http_port, server.console_origin)
    status, headers, _ = anonymous.request("GET", "/console/approvals")
    assert status == 303 and headers["location"] == "/console/login"
    status, answer = anonymous.post("/console/api/approvals/x/approve/options")
    assert status == 401 and answer["error"]["code"] == "SESSION_REQUIRED"
    status, headers, _ = anonymous.request("GET", "/console/login")
    assert status == 200
    assert "script-src 'self'" in headers["content-security-policy"] and "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"


def test_signing_in_again_and_the_session_cookie(server: Server) -> None:
    _, carol_key = person(server, "carol")
    browser = Browser(server.http_port, server.console_origin)
    status, options = browser.post("/console/api/login/options", {"principal": "carol"})
    assert status == 200 and options["publicKey"]["userVerification"] == "required"
    connection_cookie = None
    status, _, data = browser.request("POST", "/console/api/login", carol_key.assertion(options, browser.origin))
    assert status == 200, data
    connection_cookie = browser.cookie
    assert connection_cookie is not None
    # The cookie's attributes, as the server set them.
    raw = Browser(server.http_port, server.console_origin)
    status, options = raw.post("/console/api/login/options", {"principal": "carol"})
    connection = __import__("http.client", fromlist=["HTTPConnection"]).HTTPConnection("127.0.0.1", server.http_port)
    connection.request(
        "POST", "/console/api/login", body=json.dumps(carol_key.assertion(options, raw.origin)),
        headers={"Content-Type": "application/json", "Origin": raw.origin, "Host": f"localhost:{server.http_port}"},
    )
    response = connection.getresponse()
    cookie = response.getheader("Set-Cookie")
    assert response.status == 200 and cookie is not None
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "secure" in attributes and "samesite=strict" in attributes, cookie
    # Someone without a passkey, or who does not exist, gets options of the same shape (a made-up credential id, the
    # same each time): the answer does not say who exists.
    status, options = raw.post("/console/api/login/options", {"principal": "nobody"})
    decoy = options["publicKey"]["allowCredentials"]
    assert status == 200 and len(decoy) == 1 and len(websafe_decode(decoy[0]["id"])) == 32
    assert raw.post("/console/api/login/options", {"principal": "nobody"})[1]["publicKey"]["allowCredentials"] == decoy
    assert raw.post("/console/api/login/options", {"principal": "alice"})[1]["publicKey"]["allowCredentials"] != decoy


def test_a_used_or_unknown_enrollment_link_is_refused(server: Server) -> None:
    link = enrollment_link(server, "frank")
    browser, passkey = Browser(server.http_port, server.console_origin), SoftPasskey()
    browser.enroll(link, passkey)
    again = Browser(server.http_port, server.console_origin)
    status, answer = again.post("/console/api/enroll/options", {"token": link.split("#", 1)[1]})
    assert status == 410 and answer["error"]["code"] == "ENROLLMENT_INVALID"
    status, answer = again.post("/console/api/enroll/options", {"token": base64.urlsafe_b64encode(b"x" * 32).decode().rstrip("=")})
    assert status == 410 and answer["error"]["code"] == "ENROLLMENT_INVALID"


def test_a_revoked_approver_loses_the_session_and_cannot_sign_in(server: Server) -> None:
    grace, grace_key = person(server, "grace")
    assert grace.page("/console/approvals")[0] == 200
    server.cli("agents", "revoke", "grace")
    status, headers, _ = grace.request("GET", "/console/approvals")
    assert status == 303 and headers["location"] == "/console/login"
    status, options = grace.post("/console/api/login/options", {"principal": "grace"})
    status, answer = grace.post("/console/api/login", grace_key.assertion(options, grace.origin))
    assert status == 400 and answer["error"]["code"] == "PASSKEY_REFUSED"


def test_enrollment_attempts_are_rate_limited_per_client(server: Server) -> None:
    # From an address of its own: the other tests' allowance is untouched.
    flood = Browser(server.http_port, server.console_origin, source="127.0.0.3")
    statuses = [flood.post("/console/api/enroll/options", {"token": f"guess-{n}"})[0] for n in range(24)]
    assert statuses[:20] == [410] * 20 or 429 in statuses[:20], statuses  # unless the minute turned meanwhile
    assert statuses[-1] == 429, statuses
    # Another client is not affected.
    other = Browser(server.http_port, server.console_origin, source="127.0.0.4")
    assert other.post("/console/api/enroll/options", {"token": "guess"})[0] == 410


def test_zz_sign_in_attempts_are_rate_limited(server: Server) -> None:
    browser = Browser(server.http_port, server.console_origin, source="127.0.0.2")
    statuses = [browser.post("/console/api/login/options", {"principal": "mallory"})[0] for _ in range(25)]
    # Ten a minute per person (the address allows 30): the eleventh is refused, unless the minute turned meanwhile.
    assert 429 in statuses and statuses.index(429) >= 10, statuses
    assert set(statuses) <= {200, 429}
