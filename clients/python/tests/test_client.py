"""The Python client against a real countersignd: handshake, pipelining, refusals as exceptions, approvals,
failover, the breaker, and offline verification of what it returns."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import pytest

import countersign
from countersign import (
    AsyncClient,
    Authorization,
    CircuitOpen,
    Client,
    ConnectionFailed,
    LineItem,
    PendingApproval,
    RequestTimeout,
    RetryPolicy,
    fetch_jwks,
    verify,
)

from .conftest import Server, free_port

def key() -> str:
    return f"py-{uuid.uuid4()}"


CABLES = dict(merchant_id="m-42", merchant_category_code="5734", description="USB-C cables")


def run(coroutine):  # noqa: ANN001, ANN201 — the tests' small event-loop helper
    return asyncio.run(coroutine)


@pytest.mark.parametrize("agent", ["agent-es", "agent-ed"])
def test_authorize_with_each_credential_algorithm_and_verify_offline(server: Server, agent: str) -> None:
    with Client.from_credential_file(server.credential(agent), server.address) as client:
        outcome = client.authorize(idempotency_key=key(), amount=1250, currency="USD", line_items=[LineItem("USB-C cable", 2, 625)], **CABLES)
        assert isinstance(outcome, Authorization)
        assert outcome.tier == "micro" and outcome.key_backend == "software"
        jwks_over_tcp = client.keys()
    jwks = fetch_jwks(server.jwks_url)
    assert {key["kid"] for key in jwks["keys"]} == {key["kid"] for key in jwks_over_tcp["keys"]}
    claims = verify(outcome.jws, jwks, audience="m-42", issuer="countersign.python-tests", amount=1250, currency="USD")
    assert (claims.agent, claims.amount, claims.currency, claims.authorization_id) == (agent, 1250, "USD", outcome.authorization_id)


def test_requests_from_many_tasks_share_one_pipelined_connection(server: Server) -> None:
    async def scenario() -> None:
        async with AsyncClient.from_credential_file(server.credential("agent-es"), server.address) as client:
            await client.ping()
            connection = client._connection
            outcomes = await asyncio.gather(*(client.authorize(idempotency_key=key(), amount=100 + n, currency="USD", order_hash=f"order-{n}", **CABLES) for n in range(200)))
            assert client._connection is connection, "one connection carried every request"
            assert len({outcome.authorization_id for outcome in outcomes}) == 200
            assert sorted(outcome.raw["jws"] != "" for outcome in outcomes) == [True] * 200

    run(scenario())


def test_the_same_idempotency_key_answers_the_same_authorization_and_another_body_is_a_conflict(server: Server) -> None:
    key = f"py-{uuid.uuid4()}"
    with Client.from_credential_file(server.credential("agent-es"), server.address) as client:
        first = client.authorize(amount=700, currency="USD", order_hash="o-1", idempotency_key=key, **CABLES)
        again = client.authorize(amount=700, currency="USD", order_hash="o-1", idempotency_key=key, **CABLES)
        assert isinstance(first, Authorization) and again == first
        with pytest.raises(countersign.IdempotencyConflict) as refused:
            client.authorize(amount=701, currency="USD", order_hash="o-1", idempotency_key=key, **CABLES)
    assert refused.value.code == "IDEMPOTENCY_CONFLICT" and refused.value.retryable is False and refused.value.message


def test_time_ordered_keys_are_rfc_9562_version_7_and_the_server_takes_them(server: Server) -> None:
    # RFC 9562, appendix A.6: 0x017F22E279B0 ms, rand_a 0xCC3, rand_b 0x18C4DC0C0C07398F (bits above them ignored).
    vector = countersign.time_ordered_key(0x017F22E279B0, lambda n: bytes.fromhex("fcc3d8c4dc0c0c07398f"))
    assert vector == "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"
    def zeros(count: int) -> bytes:
        return bytes(count)

    assert countersign.time_ordered_key(1, zeros) < countersign.time_ordered_key(0x10000, zeros)
    with pytest.raises(ValueError):
        countersign.time_ordered_key(1 << 48)
    made = countersign.time_ordered_key()
    assert uuid.UUID(made).version == 7 and str(uuid.UUID(made)) == made
    with Client.from_credential_file(server.credential("agent-es"), server.address) as client:
        first = client.authorize(amount=700, currency="USD", order_hash="o-7", idempotency_key=made, **CABLES)
        assert isinstance(first, Authorization)
        assert client.authorize(amount=700, currency="USD", order_hash="o-7", idempotency_key=made, **CABLES) == first


def test_refusals_are_exceptions_with_code_retryable_and_a_sentence(server: Server) -> None:
    with Client.from_credential_file(server.credential("agent-es"), server.address) as client:
        with pytest.raises(countersign.MerchantNotAllowed) as blocked:
            client.authorize(idempotency_key=key(), amount=3000, currency="USD", merchant_id="m-casino", merchant_category_code="5734", description="chips", order_hash="x")
        assert blocked.value.code == "MERCHANT_NOT_ALLOWED" and not blocked.value.retryable and "m-casino" in blocked.value.message
        with pytest.raises(countersign.InvalidRequest) as invalid:
            client.authorize(idempotency_key=key(), amount=900, currency="usd", order_hash="x", **CABLES)
        assert "currency" in invalid.value.message
        with pytest.raises(countersign.CurrencyNotAccepted):
            client.authorize(idempotency_key=key(), amount=900, currency="EUR", order_hash="x", **CABLES)
        with pytest.raises(TypeError):
            client.authorize(idempotency_key=key(), amount=12.5, currency="USD", order_hash="x", **CABLES)  # type: ignore[arg-type]
    with Client.from_credential_file(server.credential("agent-tight"), server.address) as tight:
        with pytest.raises(countersign.BudgetExceeded) as over:
            tight.authorize(idempotency_key=key(), amount=5001, currency="USD", order_hash="x", **CABLES)
        assert over.value.code == "BUDGET_EXCEEDED" and "5000" in over.value.message.replace(",", "").replace(".", "")


def test_void_gives_the_budget_back(server: Server) -> None:
    with Client.from_credential_file(server.credential("agent-tight"), server.address) as client:
        before = client.budgets().remaining("USD")
        outcome = client.authorize(idempotency_key=key(), amount=1500, currency="USD", order_hash=f"o-{uuid.uuid4()}", **CABLES)
        assert isinstance(outcome, Authorization)
        assert client.budgets().remaining("USD") == before - 1500
        voided = client.void(outcome.authorization_id)
        assert client.void(outcome.authorization_id) == voided, "voiding twice answers the first voided_at"
        assert client.budgets().remaining("USD") == before
        with pytest.raises(countersign.AuthorizationNotFound):
            client.void("AAAAAAAAAAAAAAAAAAAAAA")


def test_a_payment_that_needs_approvers_waits_and_receives_their_signature(server: Server) -> None:
    async def scenario() -> None:
        async with AsyncClient.from_credential_file(server.credential("agent-ed"), server.address) as client:
            pending = await client.authorize(idempotency_key=key(), 
                amount=6_000_000, currency="USD", line_items=[LineItem("server rack", 1, 6_000_000)], merchant_id="m-racks", merchant_category_code="5045",
                description="one server rack",
            )
            assert isinstance(pending, PendingApproval) and pending.approvals_required == 2
            waiting = asyncio.ensure_future(client.wait_for_approval(pending.authorization_id, timeout=120))
            still = await client.fetch(pending.authorization_id)
            assert isinstance(still, PendingApproval)
            for approver in ("alice", "bob"):
                await asyncio.to_thread(server.cli, "approvals", "approve", pending.authorization_id, credential=server.credential(approver))
            authorization = await waiting
            assert authorization.approvers == ("alice", "bob")
        claims = verify(authorization.jws, fetch_jwks(server.jwks_url), audience="m-racks")
        assert claims.approvers == ("alice", "bob") and claims.tier == "critical"

    run(scenario())


def test_failover_skips_a_dead_server_and_its_breaker_opens(server: Server) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with Client.from_credential_file(server.credential("agent-es"), [dead, server.address], breaker_threshold=1, breaker_cooldown=3600) as client:
        assert isinstance(client.authorize(idempotency_key=key(), amount=300, currency="USD", order_hash="failover", **CABLES), Authorization)
        assert client.breaker_states() == ["open", "closed"]


class CountingListener:
    """A port that accepts connections and closes them at once (a server that is there and broken); subclasses
    answer otherwise in ``handle``. ``accepted`` counts the connections."""

    def __init__(self) -> None:
        self.accepted = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # noqa: ARG002
        writer.close()

    async def __aenter__(self) -> str:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            await self.handle(reader, writer)

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        await self._server.wait_closed()


def test_the_breaker_fails_fast_after_consecutive_connection_failures_then_probes_once() -> None:
    async def scenario() -> None:
        now = [1000.0]
        pauses: list[float] = []

        async def sleep(seconds: float) -> None:
            pauses.append(seconds)
            now[0] += seconds

        listener = CountingListener()
        async with listener as address:
            credential = countersign.Credential.from_values("agent-x", "Ed25519", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA")
            client = AsyncClient(
                credential, [address], breaker_threshold=3, breaker_cooldown=30, clock=lambda: now[0], sleep=sleep, retry=RetryPolicy(random=lambda: 1.0)
            )
            with pytest.raises(CircuitOpen) as fast:
                await client.ping()
            assert listener.accepted == 3, "three attempts, then the breaker opened"
            assert pauses == [0.1, 0.2, 0.4], "full-jitter bounds doubling from 100 ms (jitter fixed at its bound here)"
            assert 29 < fast.value.retry_after <= 30 and fast.value.code == "CIRCUIT_OPEN"
            for _ in range(50):
                with pytest.raises(CircuitOpen):
                    await client.ping()
            assert listener.accepted == 3, "an open breaker sends nothing: callers fail fast instead of piling up"
            now[0] += 30
            with pytest.raises(CircuitOpen):
                await client.ping()  # the one probe fails, the breaker opens again at once
            assert listener.accepted == 4
            await client.close()

    run(scenario())


class SilentListener(CountingListener):
    """A port that accepts connections and never answers (a frozen server, or not a server at all)."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client goes
        writer.close()


def test_connecting_is_bounded_by_the_call_s_patience() -> None:
    async def scenario() -> None:
        async with SilentListener() as first, SilentListener() as second, SilentListener() as third:
            credential = countersign.Credential.from_values("agent-x", "Ed25519", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA")
            # Each server would get 10 s for its handshake, the three 30 s, far past the call's patience.
            client = AsyncClient(credential, [first, second, third], retry=RetryPolicy(attempt_timeout=10, patience=0.3))
            with pytest.raises(RequestTimeout):
                await client.ping()
            await client.close()

    run(scenario())


class RefusingOnceServer(CountingListener):
    """Just enough of a server: the handshake (the signature unchecked) and PING. The first request of its first
    connection is refused with FRAME_TOO_LARGE and the connection closed, as a server does for a frame above its
    limit."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from countersign import _wire
        from countersign._wire import MessageType

        refuses = self.accepted == 1
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(4), "big")
                rest = await reader.readexactly(length)
                message_type, request_id = rest[1], int.from_bytes(rest[2:6], "big")
                if message_type == MessageType.HELLO:
                    challenge = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
                    writer.write(_wire.encode_frame(MessageType.CHALLENGE, request_id, {"challenge": challenge, "algorithms": ["Ed25519", "ES256"]}))
                elif message_type == MessageType.AUTH:
                    writer.write(_wire.encode_frame(MessageType.WELCOME, request_id, {"principal": "agent-x", "role": "agent"}))
                elif refuses:
                    refusal = {"code": "FRAME_TOO_LARGE", "message": "the frame announces 70000 bytes; the limit is 65536", "retryable": False}
                    writer.write(_wire.encode_frame(MessageType.ERROR, 0, refusal))
                    await writer.drain()
                    break
                else:
                    writer.write(_wire.encode_frame(message_type | 0x80, request_id, {}))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()


def test_a_refusal_that_closes_the_connection_leaves_the_client_usable_on_the_same_server() -> None:
    async def scenario() -> None:
        first, second = RefusingOnceServer(), RefusingOnceServer()
        async with first as first_address, second as second_address:
            credential = countersign.Credential.from_values("agent-x", "Ed25519", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA")
            client = AsyncClient(credential, [first_address, second_address])
            with pytest.raises(countersign.errors.FrameTooLarge):
                await client.ping()
            await client.ping()
            assert (first.accepted, second.accepted) == (2, 0), "connected again to the same server, which is alive"
            assert client.breaker_states() == ["closed", "closed"], "a refusal proves the server alive"
            await client.close()

    run(scenario())


def test_a_revoked_credential_is_refused_at_once_and_not_retried(server: Server) -> None:
    name = f"agent-gone-{uuid.uuid4().hex[:8]}"
    path = server.root / f"{name}.credential"
    server.cli("agents", "add", name, "--out", str(path))
    server.cli("agents", "revoke", name)
    with Client.from_credential_file(path, server.address) as client:
        with pytest.raises(countersign.PrincipalRevoked) as refused:
            client.ping()
    assert refused.value.retryable is False


def test_a_credential_file_others_can_read_is_refused(server: Server, tmp_path) -> None:  # noqa: ANN001
    copy = tmp_path / "shared.credential"
    copy.write_bytes(server.credential("agent-es").read_bytes())
    os.chmod(copy, 0o644)
    with pytest.raises(countersign.InvalidRequest, match="readable by others"):
        countersign.Credential.from_file(copy)


def test_money_is_decimal_text_or_minor_units_never_a_float() -> None:
    assert countersign.to_minor_units("12.50", "USD") == 1250
    assert countersign.to_minor_units("12", "USD") == 1200
    assert countersign.to_minor_units("1500", "JPY") == 1500
    assert countersign.to_minor_units("1.005", "KWD") == 1005
    for text, currency in (("12.505", "USD"), ("1.5", "JPY"), ("-1", "USD"), ("1e3", "USD"), ("1,000", "USD"), (" 1", "USD"), ("1.", "USD")):
        with pytest.raises(ValueError):
            countersign.to_minor_units(text, currency)
    with pytest.raises(TypeError):
        countersign.to_minor_units(12.5, "USD")  # type: ignore[arg-type]
    assert countersign.format_minor_units(1250, "USD") == "12.50 USD"
    assert countersign.format_minor_units(7, "JPY") == "7 JPY"


def test_connection_failures_are_retryable_connection_errors() -> None:
    async def scenario() -> None:
        client = AsyncClient(
            countersign.Credential.from_values("agent-x", "Ed25519", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA"),
            [f"127.0.0.1:{free_port()}"],
            retry=RetryPolicy(max_attempts=1),
        )
        with pytest.raises(ConnectionFailed) as failed:
            await client.ping()
        assert failed.value.retryable and "cannot connect" in failed.value.message

    run(scenario())


def test_verify_refuses_each_thing_a_merchant_must_refuse(server: Server) -> None:
    import base64
    import json as _json

    with Client.from_credential_file(server.credential("agent-es"), server.address) as client:
        outcome = client.authorize(idempotency_key=key(), amount=1999, currency="USD", order_hash=f"o-{uuid.uuid4()}", **CABLES)
    assert isinstance(outcome, Authorization)
    jwks = fetch_jwks(server.jwks_url)
    header, payload, signature = outcome.jws.split(".")

    def encoded(value: dict) -> str:  # type: ignore[type-arg]
        return base64.urlsafe_b64encode(_json.dumps(value).encode()).rstrip(b"=").decode()

    claims = _json.loads(base64.urlsafe_b64decode(payload + "=="))
    audit_kid = next(key["kid"] for key in jwks["keys"] if key["tier"] == "audit")
    cases = {
        "BAD_SIGNATURE": (f"{header}.{encoded(dict(claims, amount=1))}.{signature}", {}),
        "WRONG_AUDIENCE": (outcome.jws, {"audience": "m-43"}),
        "EXPIRED": (outcome.jws, {"now": claims["exp"] + 61}),
        "NOT_YET_VALID": (outcome.jws, {"now": claims["nbf"] - 61}),
        "WRONG_ISSUER": (outcome.jws, {"issuer": "another.issuer"}),
        "AMOUNT_MISMATCH": (outcome.jws, {"amount": 1998}),
        "MALFORMED_TOKEN": (f"{encoded({'alg': 'none', 'kid': claims.get('kid', 'x'), 'typ': 'payauth+jwt'})}.{payload}.", {}),
        "WRONG_TYPE": (f"{encoded({'alg': 'ES256', 'kid': outcome.kid, 'typ': 'JWT'})}.{payload}.{signature}", {}),
        "UNKNOWN_KEY": (f"{encoded({'alg': 'ES256', 'kid': audit_kid, 'typ': 'payauth+jwt'})}.{payload}.{signature}", {}),
    }
    for code, (token, options) in cases.items():
        with pytest.raises(countersign.VerificationError) as refused:
            verify(token, jwks, **{"audience": "m-42", **options})
        assert refused.value.code == code, f"{code}: {refused.value}"
    lowered = {"keys": [dict(key, max_amount={"USD": 1000}) for key in jwks["keys"]]}
    with pytest.raises(countersign.VerificationError) as above:
        verify(outcome.jws, lowered, audience="m-42")
    assert above.value.code == "AMOUNT_ABOVE_KEY_LIMIT"


def test_an_idempotency_key_is_required_not_invented(server: Server) -> None:
    with Client.from_credential_file(server.credential("agent-es"), server.address) as client:
        with pytest.raises(TypeError):
            client.authorize(amount=100, currency="USD", order_hash="o", **CABLES)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            client.authorize(idempotency_key="", amount=100, currency="USD", order_hash="o", **CABLES)
