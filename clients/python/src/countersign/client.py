"""The blocking client: the asyncio client on an event loop of its own, in a background thread.

```python
with Client.from_credential_file("agent-7.credential") as client:
    outcome = client.authorize(idempotency_key="order-1234", amount=1250, currency="USD", merchant_id="m-42",
                               merchant_category_code="5734", description="2 USB-C cables",
                               line_items=[LineItem("USB-C cable", 2, 625)])
```

Safe to share between threads: their requests are pipelined on one connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any, Coroutine, Sequence, TypeVar

from .aio import AsyncClient
from .credential import Credential
from .errors import ConnectionFailed
from .models import Authorization, BudgetReport, LineItem, Outcome, Voided

T = TypeVar("T")


class Client:
    """``AsyncClient``'s calls, blocking. Same options, same retry, failover and breaker rules."""

    def __init__(self, credential: Credential, servers: Sequence[str] | str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="countersign-client", daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(credential, servers, **options)

        self._client = self._run(make())

    @staticmethod
    def from_credential_file(path: str | os.PathLike[str], servers: Sequence[str] | str | None = None, **options: Any) -> "Client":
        return Client(Credential.from_file(path), servers, **options)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if not self._thread.is_alive():
            coroutine.close()
            raise ConnectionFailed("the client is closed")
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
        except concurrent.futures.CancelledError:
            raise ConnectionFailed("the client was closed while the request waited") from None

    def authorize(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        merchant_id: str,
        merchant_category_code: str,
        description: str,
        line_items: Sequence[LineItem] | None = None,
        order_hash: str | None = None,
    ) -> Outcome:
        """See ``AsyncClient.authorize``."""
        return self._run(
            self._client.authorize(
                amount=amount,
                currency=currency,
                merchant_id=merchant_id,
                merchant_category_code=merchant_category_code,
                description=description,
                line_items=line_items,
                order_hash=order_hash,
                idempotency_key=idempotency_key,
            )
        )

    def fetch(self, authorization_id: str, wait_seconds: int = 0) -> Outcome:
        return self._run(self._client.fetch(authorization_id, wait_seconds))

    def wait_for_approval(self, authorization_id: str, timeout: float = 900.0) -> Authorization:
        return self._run(self._client.wait_for_approval(authorization_id, timeout))

    def void(self, authorization_id: str) -> Voided:
        return self._run(self._client.void(authorization_id))

    def budgets(self, agent_id: str | None = None) -> BudgetReport:
        return self._run(self._client.budgets(agent_id))

    def keys(self) -> dict[str, Any]:
        return self._run(self._client.keys())

    def ping(self) -> None:
        self._run(self._client.ping())

    def breaker_states(self) -> list[str]:
        return self._client.breaker_states()

    def close(self) -> None:
        """Closes the connection; calls still running in other threads end with ``ConnectionFailed``."""
        if not self._thread.is_alive():
            return

        async def shut() -> None:
            await self._client.close()
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self._run(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
