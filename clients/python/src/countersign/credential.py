"""A principal's credential file and the handshake signature it makes (docs/protocol.md, "The handshake")."""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Union

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .errors import InvalidRequest

TRANSCRIPT_LABEL = b"countersign-handshake-v1"
PROTOCOL_VERSION = 1

PrivateKey = Union[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or any(c not in _B64URL for c in text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def transcript(principal: str, challenge: bytes) -> bytes:
    """What AUTH signs: the label, 0x00, the version, the principal's length and bytes, the 32 challenge bytes."""
    name = principal.encode("utf-8")
    return TRANSCRIPT_LABEL + b"\x00" + bytes([PROTOCOL_VERSION]) + struct.pack(">H", len(name)) + name + challenge


@dataclass(frozen=True)
class Credential:
    """Who the client is and the key it proves it with. The private key never leaves this object: it is not in
    ``repr``, and nothing in this package sends or logs it."""

    principal: str
    algorithm: str
    _key: PrivateKey = field(repr=False)
    server: str | None = None

    @staticmethod
    def from_file(path: str | os.PathLike[str]) -> "Credential":
        """Reads a credential file written by `countersign agents add` (JSON, mode 0600). A file that others can
        read is refused: the key in it would no longer be the agent's alone."""
        try:
            mode = os.stat(path).st_mode
        except OSError as error:
            raise InvalidRequest(f"cannot read the credential file '{os.fspath(path)}': {error.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidRequest(f"the credential file '{os.fspath(path)}' is readable by others; chmod 600 it")
        with open(path, "rb") as handle:
            data = handle.read()
        try:
            document = json.loads(data)
            return Credential.from_values(document["principal"], document["algorithm"], document["private_key"], document.get("server"))
        except (ValueError, KeyError, TypeError):
            raise InvalidRequest(f"'{os.fspath(path)}' is not a Countersign credential file") from None

    @staticmethod
    def from_values(principal: str, algorithm: str, private_key_b64url: str, server: str | None = None) -> "Credential":
        raw = b64url_decode(private_key_b64url)
        if len(raw) != 32:
            raise ValueError("a private key is 32 bytes")
        key: PrivateKey
        if algorithm == "ES256":
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        elif algorithm == "Ed25519":
            key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        else:
            raise ValueError(f"unknown algorithm {algorithm!r}")
        return Credential(principal=principal, algorithm=algorithm, _key=key, server=server)

    def sign_handshake(self, challenge: bytes) -> bytes:
        """The AUTH signature: ES256 as raw r‖s (64 bytes), or Ed25519 (64 bytes)."""
        message = transcript(self.principal, challenge)
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(message)
        r, s = decode_dss_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def public_key_b64url(self) -> str:
        """The public key as AGENTS_ADD registers it: uncompressed P-256 point, or the 32 Ed25519 bytes."""
        from cryptography.hazmat.primitives import serialization

        public = self._key.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            return b64url_encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        return b64url_encode(public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
