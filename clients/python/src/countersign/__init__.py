"""Countersign's Python client: signed payment authorizations for AI agents.

```python
from countersign import Client, LineItem

with Client.from_credential_file("agent-7.credential") as client:
    outcome = client.authorize(idempotency_key="order-1234", amount=1250, currency="USD", merchant_id="m-42", merchant_category_code="5734",
                               description="2 USB-C cables", line_items=[LineItem("USB-C cable", 2, 625)])
```
"""

from .aio import AsyncClient, Connection
from .client import Client
from .credential import Credential
from .errors import *  # noqa: F401,F403 — every error class, by its code's name
from .errors import CircuitOpen, ConnectionFailed, CountersignError, ProtocolError, RequestTimeout
from .keys import time_ordered_key
from .models import Authorization, Budget, BudgetReport, LineItem, Outcome, PendingApproval, Voided
from .money import format_minor_units, minor_unit_digits, to_minor_units
from .resilience import CircuitBreaker, RetryPolicy
from .verify import VerificationError, VerifiedAuthorization, fetch_jwks, verify

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Authorization",
    "Budget",
    "BudgetReport",
    "CircuitBreaker",
    "CircuitOpen",
    "Client",
    "Connection",
    "ConnectionFailed",
    "CountersignError",
    "Credential",
    "LineItem",
    "Outcome",
    "PendingApproval",
    "ProtocolError",
    "RequestTimeout",
    "RetryPolicy",
    "VerificationError",
    "VerifiedAuthorization",
    "Voided",
    "fetch_jwks",
    "format_minor_units",
    "minor_unit_digits",
    "time_ordered_key",
    "to_minor_units",
    "verify",
]
