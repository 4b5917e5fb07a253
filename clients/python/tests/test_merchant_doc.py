"""docs/merchants.md's Python snippet, run as written against authorizations from a real countersignd."""

from __future__ import annotations

import re
import uuid
from typing import Any, Callable

import pytest

from countersign import Authorization, Client, LineItem, fetch_jwks

from .conftest import REPO, Server

ISSUER = "countersign.python-tests"


def snippet() -> Callable[..., dict[str, Any]]:
    page = (REPO / "docs" / "merchants.md").read_text()
    match = re.search(r"<!-- snippet: merchant-python -->\n```python\n(.*?)```", page, re.S)
    assert match, "docs/merchants.md has no merchant-python snippet"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), "docs/merchants.md", "exec"), namespace)  # noqa: S102 — our own documentation
    return namespace["verify_authorization"]


def test_the_documented_merchant_check_accepts_a_real_authorization_and_refuses_what_it_must(server: Server) -> None:
    verify_authorization = snippet()
    with Client.from_credential_file(server.credential("agent-es"), server.address) as client:
        outcome = client.authorize(
            idempotency_key=f"doc-{uuid.uuid4()}", amount=1250, currency="USD", merchant_id="m-42", merchant_category_code="5734", description="cables", line_items=[LineItem("cable", 2, 625)]
        )
    assert isinstance(outcome, Authorization)
    jwks = fetch_jwks(server.jwks_url)
    claims = verify_authorization(outcome.jws, jwks, merchant_id="m-42", issuer=ISSUER, amount=1250, currency="USD")
    assert claims["jti"] == outcome.authorization_id and claims["amount"] == 1250

    refusals: list[dict[str, Any]] = [
        dict(merchant_id="m-43", issuer=ISSUER, amount=1250, currency="USD"),
        dict(merchant_id="m-42", issuer="someone.else", amount=1250, currency="USD"),
        dict(merchant_id="m-42", issuer=ISSUER, amount=125000, currency="USD"),
        dict(merchant_id="m-42", issuer=ISSUER, amount=1250, currency="EUR"),
        dict(merchant_id="m-42", issuer=ISSUER, amount=1250, currency="USD", now=outcome.expires_at + 61),
    ]
    for arguments in refusals:
        with pytest.raises(ValueError):
            verify_authorization(outcome.jws, jwks, **arguments)
    header, payload, signature = outcome.jws.split(".")
    with pytest.raises(ValueError):
        verify_authorization(f"{header}.{payload}.{signature[:-2]}AA", jwks, merchant_id="m-42", issuer=ISSUER, amount=1250, currency="USD")
    lowered = {"keys": [dict(key, max_amount={"USD": 1000}) for key in jwks["keys"]]}
    with pytest.raises(ValueError):
        verify_authorization(outcome.jws, lowered, merchant_id="m-42", issuer=ISSUER, amount=1250, currency="USD")
