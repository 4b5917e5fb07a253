"""Outages against a real countersignd: killed with SIGKILL under load and restarted, and frozen with SIGSTOP.

Every payment is authorized at most once, every request ends (an authorization, or a refusal with a connection
code), and no caller hangs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from typing import Any

import countersign
from countersign import AsyncClient, Authorization, RetryPolicy

from .conftest import Server

TOTAL = 400
WORKERS = 8
# What an outage may answer: connection failures, a stuck connection, an open breaker, a server going away.
OUTAGE_CODES = {"CONNECTION_FAILED", "TIMEOUT", "CIRCUIT_OPEN", "SHUTTING_DOWN"}
PAYMENT = dict(currency="USD", merchant_id="m-42", merchant_category_code="5734", description="cables")


def authorized_amounts(server: Server) -> list[int]:
    """The amount of every `authorized` entry in the audit log, read with the admin's credential."""
    lines = server.cli("audit", "export", "--since", "0").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [entry["decision"]["amount"] for entry in entries if entry.get("action") == "authorized"]


async def run_load(client: AsyncClient, requests: list[dict[str, Any]], during: Any) -> dict[int, Any]:
    """Each worker takes requests in turn; an open breaker makes it wait as told and ask again with the same
    request (the agent's payment is still to be made). `during` runs once a third of them have ended."""
    results: dict[int, Any] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(requests)):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            for _ in range(100):
                try:
                    results[index] = await client.authorize(order_hash=f"o-{index}", **PAYMENT, **requests[index])
                    break
                except countersign.CircuitOpen as error:
                    results[index] = error
                    await asyncio.sleep(error.retry_after)
                except countersign.CountersignError as error:
                    results[index] = error
                    break

    workers = [asyncio.ensure_future(worker()) for _ in range(WORKERS)]
    while len(results) < len(requests) // 3:
        await asyncio.sleep(0.01)
    await during()
    await asyncio.gather(*workers)
    return results


def check(results: dict[int, Any], total: int) -> dict[int, Authorization]:
    assert len(results) == total
    authorized = {index: outcome for index, outcome in results.items() if isinstance(outcome, Authorization)}
    refused = [outcome for outcome in results.values() if not isinstance(outcome, Authorization)]
    assert {error.code for error in refused} <= OUTAGE_CODES, [str(error) for error in refused][:5]
    assert len(authorized) >= total // 2, f"most rode out the outage; refused: {sorted(error.code for error in refused)}"
    return authorized


def test_kill_and_restart_under_load(tmp_path_factory) -> None:  # noqa: ANN001
    server = Server(tmp_path_factory.mktemp("outage"))
    try:
        asyncio.run(asyncio.wait_for(_killed(server), timeout=300))
    finally:
        server.stop()


async def _killed(server: Server) -> None:
    client = AsyncClient.from_credential_file(server.credential("agent-load"), server.address, breaker_cooldown=0.3)
    # Amounts are unique, so the audit log tells every request's authorizations apart.
    requests = [dict(amount=100 + n, idempotency_key=f"outage-{uuid.uuid4()}") for n in range(TOTAL)]

    async def kill_and_restart() -> None:
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)

    results = await run_load(client, requests, kill_and_restart)
    await client.close()
    authorized = check(results, TOTAL)

    amounts = authorized_amounts(server)
    assert len(amounts) == len(set(amounts)), "no request was authorized twice"
    assert {outcome.raw["authorization_id"] for outcome in authorized.values()} and all(requests[i]["amount"] in amounts for i in authorized)

    # The agent's own keys again: the same authorization for those that got one; one whose answer was lost is
    # answered now, never authorized a second time.
    async with AsyncClient.from_credential_file(server.credential("agent-load"), server.address) as again:
        for index in range(TOTAL):
            outcome = await again.authorize(order_hash=f"o-{index}", **PAYMENT, **requests[index])
            assert isinstance(outcome, Authorization)
            if index in authorized:
                assert outcome.jws == authorized[index].jws
        report = await again.budgets()
    amounts = authorized_amounts(server)
    assert len(amounts) == len(set(amounts)), "no request was authorized twice"
    agent_day = next(budget for budget in report.budgets if budget.scope == "agent:agent-load")
    assert agent_day.spent == sum(amounts), "the budget counts each authorization exactly once"


def test_a_frozen_server_times_out_opens_the_breaker_and_is_used_again_when_it_thaws(tmp_path_factory) -> None:  # noqa: ANN001
    server = Server(tmp_path_factory.mktemp("frozen"))
    try:
        asyncio.run(asyncio.wait_for(_frozen(server), timeout=300))
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


async def _frozen(server: Server) -> None:
    client = AsyncClient.from_credential_file(
        server.credential("agent-load"), server.address, breaker_cooldown=0.5, retry=RetryPolicy(attempt_timeout=1.0, patience=4.0)
    )
    requests = [dict(amount=5000 + n, idempotency_key=f"frozen-{uuid.uuid4()}") for n in range(120)]

    async def freeze_then_thaw() -> None:
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        await asyncio.sleep(3)  # the outage itself: real time, as a frozen process knows no other
        os.kill(server.process.pid, signal.SIGCONT)

    results = await run_load(client, requests, freeze_then_thaw)
    refused = [outcome for outcome in results.values() if not isinstance(outcome, Authorization)]
    assert {error.code for error in refused} <= OUTAGE_CODES
    after = await client.authorize(idempotency_key="after-the-thaw", amount=9999, order_hash="after", **PAYMENT)
    assert isinstance(after, Authorization), "after the thaw the server is used again"
    assert client.breaker_states() == ["closed"]
    await client.close()
    amounts = authorized_amounts(server)
    assert len(amounts) == len(set(amounts)), "no request was authorized twice"
