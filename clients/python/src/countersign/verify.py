"""Offline verification of an authorization, for merchants: no call to Countersign, only its published key set.

```python
claims = verify(token, jwks, audience="m-42", issuer="countersign.example")
charge(claims.amount, claims.currency)
```

The same checks as the server's own verifier (`countersign verify`), with its codes: ``MALFORMED_TOKEN``,
``UNKNOWN_KEY``, ``BAD_SIGNATURE``, ``EXPIRED``, ``NOT_YET_VALID``, ``AMOUNT_ABOVE_KEY_LIMIT``, and
``WRONG_TYPE``, ``WRONG_AUDIENCE``, ``WRONG_ISSUER``, ``AMOUNT_MISMATCH`` for what only a merchant knows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import _wire
from .credential import b64url_decode

TOKEN_TYPE = "payauth+jwt"


class VerificationError(ValueError):
    """Why an authorization must not be honoured: ``code`` and a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VerifiedAuthorization:
    """The claims of an authorization whose signature, type, times, audience and amount were checked."""

    authorization_id: str
    agent: str
    merchant_id: str
    amount: int
    currency: str
    merchant_category_code: str
    tier: str
    issued_at: int
    expires_at: int
    intent_hash: str
    kid: str
    approvers: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def verify(
    token: str,
    jwks: dict[str, Any],
    *,
    audience: str,
    issuer: str | None = None,
    amount: int | None = None,
    currency: str | None = None,
    leeway: int = 60,
    now: int | None = None,
) -> VerifiedAuthorization:
    """Verifies a compact JWS from Countersign against its JWKS.

    Checks, refusing with ``VerificationError`` at the first failure: three base64url parts; the header is exactly
    ES256 (never ``none`` or an HMAC), ``typ`` ``payauth+jwt`` and a ``kid`` in the key set; that key is a payment
    key (not the audit log's) and its P-256 signature holds; ``nbf``/``exp`` against ``now`` with ``leeway``
    seconds; ``aud`` is ``audience`` (your merchant id); ``iss`` is ``issuer`` when given; ``amount`` is an
    integer no larger than the key's ``max_amount`` for the currency (a low-tier key cannot vouch for a high
    amount); and, when given, ``amount`` and ``currency`` are what you are about to charge."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise VerificationError("MALFORMED_TOKEN", "a compact JWS has three dot-separated parts")
    header = _json_part(parts[0], "header")
    claims = _json_part(parts[1], "payload")
    if header.get("alg") != "ES256":
        raise VerificationError("MALFORMED_TOKEN", f"the algorithm is {header.get('alg')!r}; Countersign signs with ES256 only")
    if header.get("typ") != TOKEN_TYPE:
        raise VerificationError("WRONG_TYPE", f"the token's typ is {header.get('typ')!r}, not {TOKEN_TYPE!r}")
    if set(header) - {"alg", "kid", "typ"}:
        raise VerificationError("MALFORMED_TOKEN", f"unexpected header members {sorted(set(header) - {'alg', 'kid', 'typ'})}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise VerificationError("MALFORMED_TOKEN", "the header names no key (kid)")
    jwk = next((key for key in jwks.get("keys", []) if isinstance(key, dict) and key.get("kid") == kid), None)
    if jwk is None:
        raise VerificationError("UNKNOWN_KEY", f"no key {kid!r} in the key set (refresh the JWKS once; a retired key is gone)")
    if jwk.get("tier") == "audit" or not isinstance(jwk.get("max_amount"), dict) or not jwk["max_amount"]:
        raise VerificationError("UNKNOWN_KEY", f"key {kid!r} signs the audit log, not payments")
    _check_signature(jwk, f"{parts[0]}.{parts[1]}".encode("ascii"), parts[2])

    moment = int(time.time()) if now is None else now
    for name in ("iat", "nbf", "exp", "amount", "audit_log_index"):
        if isinstance(claims.get(name), bool) or not isinstance(claims.get(name), int):
            raise VerificationError("MALFORMED_TOKEN", f"the claim {name!r} is not an integer")
    for name in ("iss", "sub", "aud", "jti", "currency", "mcc", "tier", "intent_hash"):
        if not isinstance(claims.get(name), str):
            raise VerificationError("MALFORMED_TOKEN", f"the claim {name!r} is not a string")
    if moment + leeway < claims["nbf"]:
        raise VerificationError("NOT_YET_VALID", f"valid from {claims['nbf']}, it is {moment}")
    if moment - leeway >= claims["exp"]:
        raise VerificationError("EXPIRED", f"expired at {claims['exp']}, it is {moment}")
    if claims["aud"] != audience:
        raise VerificationError("WRONG_AUDIENCE", f"the authorization is for merchant {claims['aud']!r}, not {audience!r}")
    if issuer is not None and claims["iss"] != issuer:
        raise VerificationError("WRONG_ISSUER", f"issued by {claims['iss']!r}, not {issuer!r}")
    limit = jwk["max_amount"].get(claims["currency"])
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise VerificationError("AMOUNT_ABOVE_KEY_LIMIT", f"key {kid!r} (tier {jwk.get('tier')}) may not sign in {claims['currency']}")
    if not 0 < claims["amount"] <= limit:
        raise VerificationError("AMOUNT_ABOVE_KEY_LIMIT", f"key {kid!r} (tier {jwk.get('tier')}) may sign at most {limit}, not {claims['amount']}")
    if amount is not None and claims["amount"] != amount or currency is not None and claims["currency"] != currency:
        raise VerificationError("AMOUNT_MISMATCH", f"the authorization is for {claims['amount']} {claims['currency']} (minor units)")
    approvers = claims.get("approvers") or []
    return VerifiedAuthorization(
        authorization_id=claims["jti"],
        agent=claims["sub"],
        merchant_id=claims["aud"],
        amount=claims["amount"],
        currency=claims["currency"],
        merchant_category_code=claims["mcc"],
        tier=claims["tier"],
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        intent_hash=claims["intent_hash"],
        kid=kid,
        approvers=tuple(approvers),
        claims=claims,
    )


def _json_part(part: str, name: str) -> dict[str, Any]:
    try:
        value = _wire.loads(b64url_decode(part))
    except (ValueError, _wire.ProtocolViolation) as error:
        raise VerificationError("MALFORMED_TOKEN", f"the {name} is not base64url JSON: {error}") from None
    if not isinstance(value, dict):
        raise VerificationError("MALFORMED_TOKEN", f"the {name} is not a JSON object")
    return value


def _check_signature(jwk: dict[str, Any], signing_input: bytes, signature_part: str) -> None:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or jwk.get("alg", "ES256") != "ES256":
        raise VerificationError("UNKNOWN_KEY", f"key {jwk.get('kid')!r} is not an ES256 P-256 key")
    try:
        x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
        public = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()).public_key()
        signature = b64url_decode(signature_part)
    except (KeyError, ValueError) as error:
        raise VerificationError("MALFORMED_TOKEN", f"the key or the signature cannot be read: {error}") from None
    if len(signature) != 64:
        raise VerificationError("BAD_SIGNATURE", "an ES256 signature is 64 bytes (r‖s)")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VerificationError("BAD_SIGNATURE", "the signature does not match the key") from None


def fetch_jwks(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The key set from countersignd's HTTP listener (``http://host:7680/.well-known/jwks.json``)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        value = _wire.loads(response.read())
    if not isinstance(value, dict):
        raise VerificationError("MALFORMED_TOKEN", "the key set is not a JSON object")
    return value


