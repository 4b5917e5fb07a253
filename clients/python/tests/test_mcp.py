"""`countersign mcp` driven by the official Python MCP client over stdio, against a real countersignd."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import countersign
from countersign import fetch_jwks, verify

from .conftest import BIN, Server


@asynccontextmanager
async def session(server: Server, agent: str) -> AsyncIterator[ClientSession]:
    parameters = StdioServerParameters(
        command=str(BIN / "countersign"),
        args=["mcp"],
        env={"COUNTERSIGN_CREDENTIAL": str(server.credential(agent)), "COUNTERSIGN_SERVER": server.address},
    )
    async with stdio_client(parameters) as (read, write):
        async with ClientSession(read, write) as client:
            await client.initialize()
            yield client


def text(result: Any) -> str:
    return "\n".join(part.text for part in result.content if getattr(part, "type", "") == "text")


def secret_of(server: Server, agent: str) -> str:
    return json.loads(server.credential(agent).read_text())["private_key"]


def pay(reference: str, amount: str, **extra: Any) -> dict[str, Any]:
    arguments = {
        "payment_reference": reference,
        "amount": amount,
        "currency": "USD",
        "merchant_id": "m-42",
        "merchant_category_code": "5734",
        "description": "USB-C cables",
    }
    arguments.update(extra)
    return arguments


def test_tools_are_listed_with_schemas_and_no_idempotency_key(server: Server) -> None:
    async def scenario() -> None:
        async with session(server, "agent-mcp") as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {"request_payment_authorization", "get_authorization_status", "void_authorization", "get_budgets"}
            schema = tools["request_payment_authorization"].input_schema
            assert schema["properties"]["amount"]["type"] == "string"
            assert "idempotency_key" not in json.dumps(schema), "the model never chooses an idempotency key"

    asyncio.run(scenario())


def test_a_payment_is_authorized_once_per_reference_and_verifies_offline(server: Server) -> None:
    async def scenario() -> None:
        reference = f"order-{uuid.uuid4().hex[:12]}"
        items = [{"description": "USB-C cable", "quantity": 2, "unit_price": "6.25"}]
        outputs: list[str] = []
        async with session(server, "agent-mcp") as client:
            first = await client.call_tool("request_payment_authorization", pay(reference, "12.50", line_items=items))
            outputs.append(text(first))
            assert not first.is_error, text(first)
            assert text(first).startswith("Authorized 12.50 USD")
            token = first.structured_content["authorization_token"]
            assert token in text(first)
            claims = verify(token, fetch_jwks(server.jwks_url), audience="m-42", amount=1250, currency="USD")
            assert claims.agent == "agent-mcp"

            again = await client.call_tool("request_payment_authorization", pay(reference, "12.50", line_items=items))
            outputs.append(text(again))
            assert again.structured_content["authorization_token"] == token, "asking again about one payment answers its one authorization"

            other = await client.call_tool("request_payment_authorization", pay(reference, "13.00", order_reference="cart-9"))
            outputs.append(text(other))
            assert other.is_error and "IDEMPOTENCY_CONFLICT" in text(other) and "new payment_reference" in text(other)

            voided = await client.call_tool("void_authorization", {"authorization_id": first.structured_content["authorization_id"]})
            outputs.append(text(voided))
            assert not voided.is_error and "Voided" in text(voided)
            budgets = await client.call_tool("get_budgets", {})
            outputs.append(text(budgets))
            assert not budgets.is_error and "agent:agent-mcp" in text(budgets) and "remains" in text(budgets)
        secret = secret_of(server, "agent-mcp")
        assert all(secret not in output for output in outputs), "no answer carries the private key"

    asyncio.run(scenario())


def test_refusals_are_tool_errors_saying_what_would_succeed(server: Server) -> None:
    async def scenario() -> None:
        with countersign.Client.from_credential_file(server.credential("agent-tight"), server.address) as direct:
            remaining = direct.budgets().remaining("USD")
        assert remaining is not None and remaining > 0
        async with session(server, "agent-tight") as client:
            over = await client.call_tool("request_payment_authorization", pay(f"r-{uuid.uuid4().hex[:8]}", "60.00", order_reference="cart-1"))
            assert over.is_error
            assert "BUDGET_EXCEEDED" in text(over)
            assert f"At most {countersign.format_minor_units(remaining, 'USD')} remains" in text(over)

            number = await client.call_tool("request_payment_authorization", pay("r-number", 12.5, order_reference="cart-1"))  # type: ignore[arg-type]
            assert number.is_error and "INVALID_ARGUMENTS" in text(number) and "not a number" in text(number)

            fraction = await client.call_tool("request_payment_authorization", pay("r-fraction", "1.005", order_reference="cart-1"))
            assert fraction.is_error and "at most 2 decimal place(s)" in text(fraction)

            unknown = await client.call_tool("request_payment_authorization", pay("r-extra", "1.00", order_reference="c", idempotency_key="mine"))
            assert unknown.is_error and "unknown argument 'idempotency_key'" in text(unknown)

            blocked = await client.call_tool("get_authorization_status", {"authorization_id": "AAAAAAAAAAAAAAAAAAAAAA"})
            assert blocked.is_error and "AUTHORIZATION_NOT_FOUND" in text(blocked)

    asyncio.run(scenario())


def test_a_payment_that_needs_approvers_is_pending_in_words_then_authorized(server: Server) -> None:
    async def scenario() -> None:
        async with session(server, "agent-mcp") as client:
            pending = await client.call_tool(
                "request_payment_authorization",
                pay(f"rack-{uuid.uuid4().hex[:8]}", "70000.00", line_items=[{"description": "server rack", "quantity": 1, "unit_price": "70000.00"}]),
            )
            assert not pending.is_error, text(pending)
            assert pending.structured_content["status"] == "pending_approval"
            assert "Do not pay yet" in text(pending) and "get_authorization_status" in text(pending)
            authorization_id = pending.structured_content["authorization_id"]
            for approver in ("alice", "bob"):
                await asyncio.to_thread(server.cli, "approvals", "approve", authorization_id, credential=server.credential(approver))
            done = await client.call_tool("get_authorization_status", {"authorization_id": authorization_id, "wait_seconds": 5})
            assert not done.is_error and done.structured_content["status"] == "authorized"
            assert done.structured_content["approvers"] == ["alice", "bob"]
            assert "Approved by alice and bob" in text(done)

    asyncio.run(scenario())
