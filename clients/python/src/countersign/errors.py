"""Every refusal as an exception: the server's stable code, whether asking again may succeed, and its sentence.

``CountersignError.from_answer`` picks the class of a code; a code this package does not know (from a newer
server) still becomes a ``CountersignError`` carrying the code and the server's ``retryable`` flag.
"""

from __future__ import annotations

from typing import ClassVar


class CountersignError(Exception):
    """A refusal: ``code`` (stable, docs/protocol.md "Errors"), ``retryable``, and ``message``, a sentence for people."""

    CODE: ClassVar[str] = "ERROR"
    RETRYABLE: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: str = code or self.CODE
        self.retryable: bool = self.RETRYABLE if retryable is None else retryable

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @staticmethod
    def from_answer(code: str, message: str, retryable: bool) -> "CountersignError":
        """The exception for an ERROR frame's members."""
        cls = _BY_CODE.get(code)
        if cls is None:
            return CountersignError(message, code=code, retryable=retryable)
        return cls(message, retryable=retryable)


# Raised by this client, never sent by a server.


class ConnectionFailed(CountersignError):
    """No server could be reached, or the connection was lost before the answer. Asking again is safe."""

    CODE = "CONNECTION_FAILED"
    RETRYABLE = True


class RequestTimeout(CountersignError):
    """No answer within the attempt's timeout; the connection was dropped (the request may have been recorded)."""

    CODE = "TIMEOUT"
    RETRYABLE = True


class CircuitOpen(CountersignError):
    """Every server failed repeatedly: the client fails fast, without connecting, for ``retry_after`` seconds."""

    CODE = "CIRCUIT_OPEN"
    RETRYABLE = True

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProtocolError(CountersignError):
    """The server's answer broke docs/protocol.md (not JSON, a repeated member, a fraction): never guessed at."""

    CODE = "PROTOCOL_ERROR"


# The server's codes (docs/protocol.md, "Errors").

class FrameTooLarge(CountersignError):
    """The frame's length exceeds the server's maximum."""

    CODE = "FRAME_TOO_LARGE"


class MalformedFrame(CountersignError):
    """The frame's length field is below 6."""

    CODE = "MALFORMED_FRAME"


class TruncatedFrame(CountersignError):
    """The connection ended inside a frame."""

    CODE = "TRUNCATED_FRAME"


class UnsupportedVersion(CountersignError):
    """The frame's version byte is not 1."""

    CODE = "UNSUPPORTED_VERSION"


class UnknownMessageType(CountersignError):
    """Not a request type."""

    CODE = "UNKNOWN_MESSAGE_TYPE"


class MalformedJson(CountersignError):
    """The body is not I-JSON."""

    CODE = "MALFORMED_JSON"


class InvalidRequest(CountersignError):
    """A field is repeated, unknown, mistyped or outside its rule; the message names it."""

    CODE = "INVALID_REQUEST"


class HandshakeRequired(CountersignError):
    """A request before the handshake completed."""

    CODE = "HANDSHAKE_REQUIRED"


class HandshakeTimeout(CountersignError):
    """The handshake did not complete within the server's timeout."""

    CODE = "HANDSHAKE_TIMEOUT"


class AuthenticationFailed(CountersignError):
    """Unknown principal, wrong algorithm, or bad signature."""

    CODE = "AUTHENTICATION_FAILED"


class PrincipalRevoked(CountersignError):
    """The credential was revoked."""

    CODE = "PRINCIPAL_REVOKED"


class Forbidden(CountersignError):
    """The principal's role may not send this request."""

    CODE = "FORBIDDEN"


class TooManyConnections(CountersignError):
    """The server is at its connection limit."""

    CODE = "TOO_MANY_CONNECTIONS"
    RETRYABLE = True


class IdleTimeout(CountersignError):
    """Nothing happened on the connection for the server's idle timeout."""

    CODE = "IDLE_TIMEOUT"
    RETRYABLE = True


class ShuttingDown(CountersignError):
    """The server is stopping; ask again elsewhere or after its restart."""

    CODE = "SHUTTING_DOWN"
    RETRYABLE = True


class CurrencyNotAccepted(CountersignError):
    """Not an ISO 4217 code, or no tier accepts the currency."""

    CODE = "CURRENCY_NOT_ACCEPTED"


class AmountAboveLimit(CountersignError):
    """Above the highest tier's bound."""

    CODE = "AMOUNT_ABOVE_LIMIT"


class HsmUnavailable(CountersignError):
    """The HSM failed, was too slow, or its circuit breaker is open."""

    CODE = "HSM_UNAVAILABLE"
    RETRYABLE = True


class SigningUnavailable(CountersignError):
    """No active key for the tier."""

    CODE = "SIGNING_UNAVAILABLE"
    RETRYABLE = True


class IdempotencyConflict(CountersignError):
    """This idempotency key was used for a different request."""

    CODE = "IDEMPOTENCY_CONFLICT"


class AuthorizationNotFound(CountersignError):
    """No such authorization of this agent."""

    CODE = "AUTHORIZATION_NOT_FOUND"


class AuthorizationExpired(CountersignError):
    """The authorization is past its expiry."""

    CODE = "AUTHORIZATION_EXPIRED"


class PerAuthorizationLimit(CountersignError):
    """Above the agent's maximum per authorization."""

    CODE = "PER_AUTHORIZATION_LIMIT"


class TierNotAllowed(CountersignError):
    """The amount needs a tier above the agent's highest tier."""

    CODE = "TIER_NOT_ALLOWED"


class MerchantNotAllowed(CountersignError):
    """The merchant is blocked for the agent, or not on its allow-list."""

    CODE = "MERCHANT_NOT_ALLOWED"


class CategoryNotAllowed(CountersignError):
    """The merchant category is blocked for the agent, or not on its allow-list."""

    CODE = "CATEGORY_NOT_ALLOWED"


class BudgetExceeded(CountersignError):
    """A budget would be exceeded; the message names it, its limit and what is counted."""

    CODE = "BUDGET_EXCEEDED"


class RateLimited(CountersignError):
    """More requests than the agent's profile allows in its window."""

    CODE = "RATE_LIMITED"
    RETRYABLE = True


class EscalationAboveLimit(CountersignError):
    """The request looks anomalous and no tier above (nor approvers) can take it."""

    CODE = "ESCALATION_ABOVE_LIMIT"


class AnomalyRefused(CountersignError):
    """The anomaly model refuses it: the payment is unlike the agent's usual ones; a person must review it."""

    CODE = "ANOMALY_REFUSED"


class IntentRequired(CountersignError):
    """The tier needs the intent's line items."""

    CODE = "INTENT_REQUIRED"


class IntentMismatch(CountersignError):
    """The line items do not sum to the amount."""

    CODE = "INTENT_MISMATCH"


class ApprovalDenied(CountersignError):
    """An approver denied the authorization."""

    CODE = "APPROVAL_DENIED"


class ApprovalExpired(CountersignError):
    """The approval deadline passed."""

    CODE = "APPROVAL_EXPIRED"


class ApprovalClosed(CountersignError):
    """The authorization no longer takes verdicts."""

    CODE = "APPROVAL_CLOSED"


class AlreadyDecided(CountersignError):
    """This approver already gave a verdict."""

    CODE = "ALREADY_DECIDED"


class ContextNotFound(CountersignError):
    """No mode of that name."""

    CODE = "CONTEXT_NOT_FOUND"


class KeyNotFound(CountersignError):
    """No such key version."""

    CODE = "KEY_NOT_FOUND"


class KeyStateConflict(CountersignError):
    """The key version's state does not allow this."""

    CODE = "KEY_STATE_CONFLICT"


class KeyInUse(CountersignError):
    """Unexpired authorizations were signed by this key version."""

    CODE = "KEY_IN_USE"


class DualControl(CountersignError):
    """A second, different admin must confirm."""

    CODE = "DUAL_CONTROL"


class KeyNotAdoptable(CountersignError):
    """The HSM object cannot be adopted; the message says why."""

    CODE = "KEY_NOT_ADOPTABLE"


class StoreUnavailable(CountersignError):
    """The store could not be read or written."""

    CODE = "STORE_UNAVAILABLE"
    RETRYABLE = True


class AuditUnavailable(CountersignError):
    """The audit log could not be written; nothing was issued."""

    CODE = "AUDIT_UNAVAILABLE"
    RETRYABLE = True


class PrincipalExists(CountersignError):
    """A principal with this id exists."""

    CODE = "PRINCIPAL_EXISTS"


class PrincipalNotFound(CountersignError):
    """No principal with this id."""

    CODE = "PRINCIPAL_NOT_FOUND"


class InternalError(CountersignError):
    """A server bug; details are only in the server's log."""

    CODE = "INTERNAL_ERROR"
    RETRYABLE = True


_BY_CODE: dict[str, type[CountersignError]] = {
    cls.CODE: cls
    for cls in (
        FrameTooLarge,
        MalformedFrame,
        TruncatedFrame,
        UnsupportedVersion,
        UnknownMessageType,
        MalformedJson,
        InvalidRequest,
        HandshakeRequired,
        HandshakeTimeout,
        AuthenticationFailed,
        PrincipalRevoked,
        Forbidden,
        TooManyConnections,
        IdleTimeout,
        ShuttingDown,
        CurrencyNotAccepted,
        AmountAboveLimit,
        HsmUnavailable,
        SigningUnavailable,
        IdempotencyConflict,
        AuthorizationNotFound,
        AuthorizationExpired,
        PerAuthorizationLimit,
        TierNotAllowed,
        MerchantNotAllowed,
        CategoryNotAllowed,
        BudgetExceeded,
        RateLimited,
        EscalationAboveLimit,
        AnomalyRefused,
        IntentRequired,
        IntentMismatch,
        ApprovalDenied,
        ApprovalExpired,
        ApprovalClosed,
        AlreadyDecided,
        ContextNotFound,
        KeyNotFound,
        KeyStateConflict,
        KeyInUse,
        DualControl,
        KeyNotAdoptable,
        StoreUnavailable,
        AuditUnavailable,
        PrincipalExists,
        PrincipalNotFound,
        InternalError,
    )
}

# After these the connection is finished: the next attempt goes to the next server.
# docs/protocol.md "Client behaviour", rule 3; they also count against the server's breaker.
CONNECTION_LEVEL = frozenset({"SHUTTING_DOWN", "TOO_MANY_CONNECTIONS", "IDLE_TIMEOUT", "CONNECTION_FAILED", "TIMEOUT"})
