"""A server killed with SIGKILL under load and restarted: every payment authorized at most once, every request
answered (an authorization or a refusal with a code), no caller hangs."""

from __future__ import annotations

import asyncio
import uuid

import countersign
from countersign import AsyncClient, Authorization, RetryPolicy

from .conftest import Server

TOTAL = 400
WORKERS = 8


def test_kill_and_restart_under_load(tmp_path_factory) -> None:  # noqa: ANN001
    server = Server(tmp_path_factory.mktemp("outage"))
    try:
        asyncio.run(asyncio.wait_for(_scenario(server), timeout=240))
    finally:
        server.stop()


async def _scenario(server: Server) -> None:
    client = AsyncClient.from_credential_file(server.credential("agent-load"), server.address, breaker_cooldown=0.3, retry=RetryPolicy(patience=60))
    requests = [dict(amount=100 + n, idempotency_key=f"outage-{uuid.uuid4()}") for n in range(TOTAL)]
    results: dict[int, Authorization | countersign.CountersignError] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(TOTAL):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            try:
                outcome = await client.authorize(currency="USD", merchant_id="m-42", merchant_category_code="5734", description="cables", order_hash=f"o-{index}", **requests[index])
                assert isinstance(outcome, Authorization)
                results[index] = outcome
            except countersign.CircuitOpen as error:
                results[index] = error
                await asyncio.sleep(error.retry_after)  # what an agent does: wait as long as it is told
            except countersign.CountersignError as error:
                results[index] = error

    workers = [asyncio.ensure_future(worker()) for _ in range(WORKERS)]
    while len(results) < 120:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)
    await asyncio.gather(*workers)
    await client.close()

    assert len(results) == TOTAL
    authorized = {index: outcome for index, outcome in results.items() if isinstance(outcome, Authorization)}
    refused = {index: outcome for index, outcome in results.items() if not isinstance(outcome, Authorization)}
    assert all(error.code for error in refused.values())
    assert len(authorized) >= TOTAL // 2, f"most rode out the restart; refused: {sorted({e.code for e in refused.values()})}"

    # Every request again with its idempotency key: the same authorization for those that got one; those that did not
    # may have been recorded with their answer lost (answered now), never authorized a second time.
    spent = 0
    ids: set[str] = set()
    async with AsyncClient.from_credential_file(server.credential("agent-load"), server.address) as again:
        for index, request in enumerate(requests):
            outcome = await again.authorize(currency="USD", merchant_id="m-42", merchant_category_code="5734", description="cables", order_hash=f"o-{index}", **request)
            assert isinstance(outcome, Authorization)
            if index in authorized:
                assert outcome.jws == authorized[index].jws
            ids.add(outcome.authorization_id)
            spent += request["amount"]  # type: ignore[operator]
        report = await again.budgets()
    assert len(ids) == TOTAL
    agent_day = next(budget for budget in report.budgets if budget.scope == "agent:agent-load")
    assert agent_day.spent == spent, "the budget counts each payment exactly once"
