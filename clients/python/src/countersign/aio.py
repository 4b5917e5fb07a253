"""The asyncio client: authenticated, pipelined connections; retries, failover and a breaker per server.

```python
client = AsyncClient.from_credential_file("agent-7.credential", servers=["10.0.0.1:7600", "10.0.0.2:7600"])
outcome = await client.authorize(idempotency_key="order-1234", amount=1250, currency="USD", merchant_id="m-42",
                                 merchant_category_code="5734", description="2 USB-C cables",
                                 line_items=[LineItem("USB-C cable", 2, 625)])
```
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from typing import Any, Awaitable, Callable, Sequence

from . import _wire
from ._wire import MessageType
from .credential import Credential, b64url_decode, b64url_encode
from .errors import (
    CONNECTION_LEVEL,
    AuthenticationFailed,
    InvalidRequest,
    CircuitOpen,
    ConnectionFailed,
    CountersignError,
    ProtocolError,
    RequestTimeout,
)
from .models import Authorization, BudgetReport, LineItem, Outcome, PendingApproval, Voided, outcome_from_json
from .resilience import CircuitBreaker, RetryPolicy

CLIENT_NAME = "countersign-python/0.1.0"


class Connection:
    """One TCP (or TLS) connection, authenticated as one principal, carrying many requests at once: each has its own
    request id and its answer is matched by it, in whatever order the server answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, principal: str, role: str) -> None:
        self._reader = reader
        self._writer = writer
        self.principal = principal
        self.role = role
        self._pending: dict[int, tuple[int, asyncio.Future[dict[str, Any]]]] = {}
        self._next_id = 3  # 1 and 2 were the handshake's
        self._write_lock = asyncio.Lock()
        self._ending: CountersignError | None = None
        self._closed = False
        self._reading = asyncio.get_running_loop().create_task(self._read_answers())

    @staticmethod
    async def open(
        host: str,
        port: int,
        credential: Credential,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        client_name: str = CLIENT_NAME,
    ) -> "Connection":
        """Connects and completes the handshake within ``timeout`` seconds, both together.

        Raises ``ConnectionFailed`` when the server cannot be reached or closes during the handshake (it may be
        stopping), ``AuthenticationFailed`` / ``PrincipalRevoked`` when it refuses the credential."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl_context, limit=_wire.MAX_RESPONSE_BYTES), timeout
            )
        except (OSError, asyncio.TimeoutError) as error:
            raise ConnectionFailed(f"cannot connect to {host}:{port}: {_reason(error)}") from None
        try:
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            welcome = await asyncio.wait_for(_handshake(reader, writer, credential, client_name), left)
        except BaseException as error:
            writer.close()
            if isinstance(error, CountersignError):
                raise
            if isinstance(error, (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError)):
                raise ConnectionFailed(f"{host}:{port} closed the connection during the handshake: {_reason(error)}") from None
            raise
        return Connection(reader, writer, welcome["principal"], welcome["role"])

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def refused(self) -> bool:
        """Whether the server ended the connection over a request of its own (FRAME_TOO_LARGE, MALFORMED_FRAME), not
        over its own state: it is alive."""
        return self._ending is not None and self._ending.code not in CONNECTION_LEVEL

    async def request(self, message_type: MessageType, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Sends one request and waits up to ``timeout`` seconds for its answer.

        An ERROR answer raises its ``CountersignError``; a lost connection raises ``ConnectionFailed`` (or the
        code the server gave for closing, such as ``SHUTTING_DOWN``); no answer in time raises ``RequestTimeout``."""
        if self._closed:
            raise self._ending or ConnectionFailed("the connection is closed")
        frame = _wire.encode_frame(message_type, 0, body)
        if len(frame) - 4 > _wire.MAX_REQUEST_BYTES:
            # The server would answer FRAME_TOO_LARGE and close, failing every request in flight with it.
            raise InvalidRequest(f"the request is {len(frame) - 4} bytes; the server's limit is {_wire.MAX_REQUEST_BYTES}")
        request_id = self._take_id()
        frame = frame[:6] + request_id.to_bytes(4, "big") + frame[10:]
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (message_type.response, answer)

        async def exchange() -> dict[str, Any]:
            # Writing is inside the deadline too: a frozen server stops reading, and drain() would wait for ever.
            async with self._write_lock:
                self._writer.write(frame)
                await self._writer.drain()
            return await asyncio.shield(answer)

        try:
            return await asyncio.wait_for(exchange(), timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no answer to {message_type.name} within {timeout:g} s") from None
        except (OSError, ConnectionError) as error:
            raise self._ending or ConnectionFailed(f"the connection was lost: {_reason(error)}") from None
        finally:
            self._pending.pop(request_id, None)

    async def close(self) -> None:
        """Closes at once: what is still unsent is dropped (a frozen server would never take it)."""
        self._closed = True
        self._reading.cancel()
        self._writer.transport.abort()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        except (OSError, ConnectionError, ssl.SSLError, asyncio.TimeoutError):
            pass
        self._fail_pending(ConnectionFailed("the connection was closed"))

    def _take_id(self) -> int:
        while True:
            request_id = self._next_id
            self._next_id = 1 if self._next_id >= 0xFFFF_FFFF else self._next_id + 1
            if request_id not in self._pending:
                return request_id

    async def _read_answers(self) -> None:
        ending: CountersignError = ConnectionFailed("the server closed the connection")
        try:
            await self._read_loop()
        except CountersignError as error:
            ending = error
        except (asyncio.IncompleteReadError, OSError, ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            ending = ConnectionFailed("the connection was closed")
        except Exception as error:  # a bug here must not leave requests waiting for ever
            ending = ProtocolError(f"the connection's reader failed: {type(error).__name__}")
        finally:
            self._closed = True
            self._fail_pending(self._ending or ending)
            self._writer.transport.abort()

    async def _read_loop(self) -> None:
        while True:
            message_type, request_id, body = await _read_frame(self._reader)
            if request_id == 0 and message_type == MessageType.ERROR:
                # The connection's end, with its reason (SHUTTING_DOWN, IDLE_TIMEOUT): requests still waiting
                # get that code once the stream ends.
                self._ending = _error(body)
                continue
            waiting = self._pending.get(request_id)
            if waiting is None:
                continue  # an answer to a request that timed out meanwhile
            expected, future = waiting
            if future.done():
                continue
            if message_type == MessageType.ERROR:
                future.set_exception(_error(body))
            elif message_type == expected:
                future.set_result(body)
            else:
                future.set_exception(ProtocolError(f"answer of type 0x{message_type:02x} to a request expecting 0x{expected:02x}"))

    def _fail_pending(self, error: CountersignError) -> None:
        for _, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here too: a request that timed out no longer awaits it


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, int, dict[str, Any]]:
    header = await reader.readexactly(10)
    length, version, message_type, request_id = _wire.HEADER.unpack(header)
    if length < 6 or length > _wire.MAX_RESPONSE_BYTES:
        raise ProtocolError(f"the server sent a frame length of {length}")
    if version != _wire.VERSION:
        raise ProtocolError(f"the server sent protocol version {version}")
    payload = await reader.readexactly(length - 6)
    try:
        body = _wire.loads(payload)
    except _wire.ProtocolViolation as error:
        raise ProtocolError(f"the server's answer is not valid: {error}") from None
    if not isinstance(body, dict):
        raise ProtocolError("the server's answer is not a JSON object")
    return message_type, request_id, body


def _error(body: dict[str, Any]) -> CountersignError:
    code, message, retryable = body.get("code"), body.get("message"), body.get("retryable")
    if not isinstance(code, str) or not isinstance(message, str) or not isinstance(retryable, bool):
        return ProtocolError("the server sent an ERROR frame without code, message and retryable")
    return CountersignError.from_answer(code, message, retryable)


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, credential: Credential, client_name: str) -> dict[str, Any]:
    writer.write(_wire.encode_frame(MessageType.HELLO, 1, {"principal": credential.principal, "client": client_name}))
    await writer.drain()
    message_type, _, body = await _read_frame(reader)
    if message_type == MessageType.ERROR:
        raise _error(body)
    if message_type != MessageType.CHALLENGE:
        raise ProtocolError(f"expected CHALLENGE, got 0x{message_type:02x}")
    try:
        challenge = b64url_decode(body["challenge"])
    except (KeyError, ValueError):
        raise ProtocolError("the CHALLENGE holds no base64url challenge") from None
    if len(challenge) != 32:
        raise ProtocolError("the challenge is not 32 bytes")
    if credential.algorithm not in body.get("algorithms", []):
        raise AuthenticationFailed(f"the server does not accept {credential.algorithm}")
    signature = credential.sign_handshake(challenge)
    writer.write(_wire.encode_frame(MessageType.AUTH, 2, {"algorithm": credential.algorithm, "signature": b64url_encode(signature)}))
    await writer.drain()
    message_type, _, body = await _read_frame(reader)
    if message_type == MessageType.ERROR:
        raise _error(body)
    if message_type != MessageType.WELCOME:
        raise ProtocolError(f"expected WELCOME, got 0x{message_type:02x}")
    return body


def _reason(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    if isinstance(error, asyncio.IncompleteReadError):
        return "the stream ended"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def parse_server(text: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets: ``[::1]:7600``)."""
    text = text.strip()
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"a server is host:port, not '{text}'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class AsyncClient:
    """An agent's client of one or several servers sharing one store.

    Every call is safe to repeat, and is repeated when it can succeed by asking again: a lost or unreachable server
    (the next server is asked), or an answer the server marked retryable (``HSM_UNAVAILABLE``, ``RATE_LIMITED``, …;
    asked again after a pause). An authorization keeps its idempotency key across attempts, so however many times it
    is sent, to however many servers, at most one authorization exists. Pauses follow ``RetryPolicy`` (full
    jitter); a server that failed ``breaker_threshold`` times in a row is skipped for ``breaker_cooldown`` seconds,
    and when every server is skipped calls fail at once with ``CircuitOpen`` instead of piling up.

    Many coroutines may call one client at once: their requests share one connection (pipelined)."""

    def __init__(
        self,
        credential: Credential,
        servers: Sequence[str] | str | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        retry: RetryPolicy | None = None,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client_name: str = CLIENT_NAME,
    ) -> None:
        if servers is None:
            servers = os.environ.get("COUNTERSIGN_SERVER") or credential.server or "127.0.0.1:7600"
        if isinstance(servers, str):
            servers = [part for part in servers.split(",") if part.strip()]
        if not servers:
            raise ValueError("no server given")
        self.credential = credential
        self.servers: list[tuple[str, int]] = [parse_server(server) for server in servers]
        self.retry = retry or RetryPolicy()
        self._ssl = ssl_context
        self._clock = clock
        self._sleep = sleep
        self._client_name = client_name
        self._breakers = [CircuitBreaker(breaker_threshold, breaker_cooldown, clock) for _ in self.servers]
        self._connection: Connection | None = None
        self._connected_to = 0
        self._next = 0
        self._connecting = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @staticmethod
    def from_credential_file(path: str | os.PathLike[str], servers: Sequence[str] | str | None = None, **options: Any) -> "AsyncClient":
        """A client with a credential file's identity (``countersign agents add … --out``). The servers are
        ``servers``, else ``$COUNTERSIGN_SERVER``, else the file's ``server``, else 127.0.0.1:7600 (the CLI's order)."""
        return AsyncClient(Credential.from_file(path), servers, **options)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # The agent's requests.

    async def authorize(
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
        """Asks for a signed authorization: an ``Authorization`` (its ``jws`` goes to the merchant), or a
        ``PendingApproval`` when the tier needs approvers (then ``wait_for_approval``).

        ``idempotency_key`` names this one intended payment (your order id, or a key you store with it; 1–200
        printable ASCII characters). It is required, not generated: a call that failed (the server lost, the breaker
        open) may still have been recorded, and the same key is how asking again, from this process or after a
        restart of your agent, answers that payment's one authorization instead of making a second. The same key
        with another body is ``IdempotencyConflict``. Within a call the client retries with it by itself.

        ``amount`` is integer minor units (``to_minor_units("12.50", "USD")`` → 1250). Refusals raise their
        ``CountersignError`` (``BudgetExceeded``, ``MerchantNotAllowed``, …)."""
        if not isinstance(idempotency_key, str) or not idempotency_key:
            raise TypeError("idempotency_key names the payment (e.g. your order id): a non-empty string")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError("amount is an integer number of minor units (1250 = 12.50 USD); use to_minor_units for text")
        intent: dict[str, Any] = {"description": description, "order_hash": order_hash}
        if line_items is not None:
            intent["line_items"] = [item.to_json() for item in line_items]
        body = {
            "idempotency_key": idempotency_key,
            "amount": amount,
            "currency": currency,
            "merchant_id": merchant_id,
            "merchant_category_code": merchant_category_code,
            "intent": intent,
        }
        return outcome_from_json(await self._perform(MessageType.AUTHORIZE, _without_nulls(body)))

    async def fetch(self, authorization_id: str, wait_seconds: int = 0) -> Outcome:
        """The authorization's state now, or (with ``wait_seconds``, at most 60) as soon as approvers decide.
        A denied, expired or withdrawn request raises ``ApprovalDenied``, ``ApprovalExpired``, ``ApprovalClosed``."""
        if not 0 <= wait_seconds <= 60:
            raise ValueError("wait_seconds is 0 … 60")
        body: dict[str, Any] = {"authorization_id": authorization_id}
        if wait_seconds:
            body["wait_seconds"] = wait_seconds
        return outcome_from_json(await self._perform(MessageType.FETCH_AUTHORIZATION, body, extra_time=wait_seconds))

    async def wait_for_approval(self, authorization_id: str, timeout: float = 900.0) -> Authorization:
        """Waits (asking with 60-second waits) until approvers sign it off; raises their refusal, or
        ``RequestTimeout`` after ``timeout`` seconds with the request still pending."""
        deadline = self._clock() + timeout
        while True:
            left = deadline - self._clock()
            if left <= 0:
                raise RequestTimeout(f"authorization {authorization_id} still waits for approvers after {timeout:g} s")
            outcome = await self.fetch(authorization_id, wait_seconds=max(1, min(60, int(left))))
            if isinstance(outcome, Authorization):
                return outcome

    async def void(self, authorization_id: str) -> Voided:
        """Promises not to use an authorization: its amount stops counting against the budgets. Voiding twice
        answers the first ``voided_at``."""
        body = await self._perform(MessageType.VOID, {"authorization_id": authorization_id})
        return Voided(authorization_id=body["authorization_id"], voided_at=body["voided_at"])

    async def budgets(self, agent_id: str | None = None) -> BudgetReport:
        """Every budget the agent's spending counts against, with what remains in its window."""
        body = await self._perform(MessageType.BUDGETS_SHOW, {"agent_id": agent_id or self.credential.principal})
        return BudgetReport.from_json(body)

    async def keys(self) -> dict[str, Any]:
        """The JWKS that verifies the server's authorizations (what merchants fetch over HTTP)."""
        return await self._perform(MessageType.GET_KEYS, {})

    async def ping(self) -> None:
        await self._perform(MessageType.PING, {})

    def breaker_states(self) -> list[str]:
        """Each server's breaker: ``closed``, ``open`` or ``half-open``, in the order of ``servers``."""
        return [breaker.state for breaker in self._breakers]

    async def close(self) -> None:
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # Attempts.

    async def _perform(self, message_type: MessageType, body: dict[str, Any], extra_time: float = 0) -> dict[str, Any]:
        started = self._clock()
        failures = 0
        while True:
            if self._closed:
                raise ConnectionFailed("the client is closed")
            connection: Connection | None = None
            index = 0
            try:
                connection, index = await self._current(self.retry.patience - (self._clock() - started))
                answer = await connection.request(message_type, body, self.retry.attempt_timeout + extra_time)
                self._breakers[index].succeeded()
                return answer
            except CircuitOpen:
                raise
            except CountersignError as error:
                if connection is not None:
                    self._judge(connection, index, error)
                failures += 1
                if not error.retryable or failures >= self.retry.max_attempts:
                    raise
                pause = self.retry.delay(failures)
                if self._clock() - started + pause > self.retry.patience:
                    raise
                await self._sleep(pause)
                if self._closed:
                    raise

    def _judge(self, connection: Connection, index: int, error: CountersignError) -> None:
        """After a failed attempt on server ``index``: a connection-level failure counts against its breaker and
        the next attempt goes to the next server; any other answer proves it alive."""
        if error.code in CONNECTION_LEVEL:
            if self._connection is connection:
                self._connection = None
                self._breakers[index].failed()
                self._closing.add(asyncio.get_running_loop().create_task(connection.close()))
                for task in [task for task in self._closing if task.done()]:
                    self._closing.discard(task)
        else:
            self._breakers[index].succeeded()
            if connection.closed and self._connection is connection:
                # A refusal that closed the connection for the request's own sake (FRAME_TOO_LARGE): the server is
                # alive, and the next request connects to it again.
                self._connection = None
                self._next = index
                self._closing.add(asyncio.get_running_loop().create_task(connection.close()))

    async def _current(self, left: float) -> tuple[Connection, int]:
        """The connection in use, or a new one to the next server whose breaker lets it be tried, each server given at
        most the ``left`` seconds of the call's patience (and at most the attempt timeout)."""
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection, self._connected_to
        async with self._connecting:
            connection = self._connection
            if connection is not None and not connection.closed:
                return connection, self._connected_to
            if connection is not None:
                self._connection = None
                if connection.refused:  # a refusal ended it (another task's FRAME_TOO_LARGE): the same server again
                    self._next = self._connected_to
                else:  # closed under us (the server went): count it once
                    self._breakers[self._connected_to].failed()
            last: CountersignError | None = None
            tried = 0
            begun = self._clock()
            for offset in range(len(self.servers)):
                remaining = left - (self._clock() - begun)
                if remaining <= 0:
                    raise RequestTimeout(f"no server answered within the call's patience of {self.retry.patience} s")
                index = (self._next + offset) % len(self.servers)
                breaker = self._breakers[index]
                if not breaker.allow():
                    continue
                tried += 1
                host, port = self.servers[index]
                try:
                    connection = await Connection.open(
                        host, port, self.credential, ssl_context=self._ssl, timeout=min(self.retry.attempt_timeout, remaining),
                        client_name=self._client_name,
                    )
                except CountersignError as error:
                    if error.code not in CONNECTION_LEVEL:
                        # The server answered (AUTHENTICATION_FAILED, PRINCIPAL_REVOKED): another would answer the same.
                        breaker.released()
                        raise
                    breaker.failed()  # unreachable, or TOO_MANY_CONNECTIONS / SHUTTING_DOWN at the handshake
                    last = error
                    continue
                except BaseException:
                    breaker.released()
                    raise
                breaker.succeeded()
                if self._closed:
                    await connection.close()
                    raise ConnectionFailed("the client is closed")
                self._connection, self._connected_to = connection, index
                self._next = (index + 1) % len(self.servers)
                return connection, index
            if tried == 0:
                if any(breaker.probing for breaker in self._breakers):
                    # A probe's outcome is moments away: wait for it like any transient failure, not fail fast.
                    raise ConnectionFailed("another request is probing whether the server is back")
                wait = min(breaker.retry_after() for breaker in self._breakers)
                raise CircuitOpen(
                    f"every server failed {self._breakers[0].threshold} times in a row; not trying again for {wait:.1f} s", retry_after=wait
                )
            assert last is not None
            raise last


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(member) for key, member in value.items() if member is not None}
    if isinstance(value, list):
        return [_without_nulls(member) for member in value]
    return value
