"""What requests carry and answers hold. Money is always integer minor units (1250 = 12.50 USD)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class LineItem:
    description: str
    quantity: int
    unit_amount: int
    category: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"description": self.description, "quantity": self.quantity, "unit_amount": self.unit_amount, "category": self.category}


@dataclass(frozen=True)
class Authorization:
    """A signed authorization: hand ``jws`` to the merchant."""

    authorization_id: str
    jws: str
    expires_at: int
    tier: str
    kid: str
    key_backend: str
    approvers: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    status = "authorized"

    @staticmethod
    def from_json(body: dict[str, Any]) -> "Authorization":
        return Authorization(
            authorization_id=body["authorization_id"],
            jws=body["jws"],
            expires_at=body["expires_at"],
            tier=body["tier"],
            kid=body["kid"],
            key_backend=body["key_backend"],
            approvers=tuple(body.get("approvers") or ()),
            raw=body,
        )


@dataclass(frozen=True)
class PendingApproval:
    """The tier needs human approvers: the amount is held; ask again with ``fetch(authorization_id, wait_seconds=…)``."""

    authorization_id: str
    tier: str
    approvals_required: int
    approvers: tuple[str, ...]
    approval_expires_at: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    status = "pending_approval"

    @staticmethod
    def from_json(body: dict[str, Any]) -> "PendingApproval":
        return PendingApproval(
            authorization_id=body["authorization_id"],
            tier=body["tier"],
            approvals_required=body["approvals_required"],
            approvers=tuple(body.get("approvers") or ()),
            approval_expires_at=body["approval_expires_at"],
            raw=body,
        )


Outcome = Union[Authorization, PendingApproval]


def outcome_from_json(body: dict[str, Any]) -> Outcome:
    if body.get("status") == "pending_approval":
        return PendingApproval.from_json(body)
    return Authorization.from_json(body)


@dataclass(frozen=True)
class Voided:
    authorization_id: str
    voided_at: int


@dataclass(frozen=True)
class Budget:
    """One budget the agent's spending counts against, in its current window (``spent`` includes ``pending``)."""

    scope: str
    window: str
    window_start: int
    currency: str
    limit: int
    spent: int
    pending: int
    remaining: int


@dataclass(frozen=True)
class BudgetReport:
    agent_id: str
    scopes: tuple[str, ...]
    budgets: tuple[Budget, ...]

    @staticmethod
    def from_json(body: dict[str, Any]) -> "BudgetReport":
        fields = ("scope", "window", "window_start", "currency", "limit", "spent", "pending", "remaining")
        return BudgetReport(
            agent_id=body["agent_id"],
            scopes=tuple(body["scopes"]),
            budgets=tuple(Budget(**{name: item[name] for name in fields}) for item in body["budgets"]),
        )

    def remaining(self, currency: str) -> int | None:
        """The least that remains across every budget in ``currency`` (what the next payment may take), or None."""
        values = [budget.remaining for budget in self.budgets if budget.currency == currency]
        return min(values) if values else None
