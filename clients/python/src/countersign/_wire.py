"""Frames and JSON as docs/protocol.md defines them: the byte layout, the message types, strict JSON both ways."""

from __future__ import annotations

import json
import struct
from enum import IntEnum
from typing import Any

VERSION = 1
HEADER = struct.Struct(">IBBI")  # length, version, type, request id
# Answers may be larger than the server's request limit (a long AGENTS_LIST); the protocol says accept 16 MiB.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# What a server accepts by default (limits.max_frame_bytes): a larger request would close the connection.
MAX_REQUEST_BYTES = 65536


class MessageType(IntEnum):
    HELLO = 0x01
    CHALLENGE = 0x81
    AUTH = 0x02
    WELCOME = 0x82
    PING = 0x10
    AUTHORIZE = 0x11
    GET_KEYS = 0x12
    VOID = 0x13
    FETCH_AUTHORIZATION = 0x14
    BUDGETS_SHOW = 0x27
    ERROR = 0x7F

    @property
    def response(self) -> int:
        return self.value | 0x80


def encode_frame(message_type: int, request_id: int, body: dict[str, Any]) -> bytes:
    """One frame: length (6 + body), version 1, type, request id, the body as JSON."""
    payload = dumps(body)
    return HEADER.pack(6 + len(payload), VERSION, message_type, request_id) + payload


def dumps(value: Any) -> bytes:
    """JSON as the server reads it: sorted members, no whitespace, UTF-8, and never a floating-point number."""
    _refuse_floats(value, "body")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8")


def _refuse_floats(value: Any, path: str) -> None:
    if isinstance(value, float):
        raise TypeError(f"{path} is a float; Countersign numbers are integers (money in minor units)")
    if isinstance(value, dict):
        for key, member in value.items():
            _refuse_floats(member, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, member in enumerate(value):
            _refuse_floats(member, f"{path}[{index}]")


class ProtocolViolation(ValueError):
    """The server sent something the protocol does not allow (a repeated member, a fraction, bad JSON)."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ProtocolViolation(f"member '{key}' appears more than once")
        result[key] = value
    return result


def _no_float(text: str) -> Any:
    raise ProtocolViolation(f"the number {text} is not an integer")


def _no_constant(text: str) -> Any:
    raise ProtocolViolation(f"{text} is not JSON")


def loads(data: bytes) -> Any:
    """Reads an answer strictly: repeated members and non-integer numbers are refused, never guessed at."""
    if not data:
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtocolViolation("the body is not UTF-8") from error
    try:
        return json.loads(text, object_pairs_hook=_unique_members, parse_float=_no_float, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise ProtocolViolation(f"the body is not JSON: {error.msg}") from error
    except RecursionError:
        raise ProtocolViolation("the body nests too deeply") from None
    except ValueError as error:  # e.g. an integer longer than Python's digit limit
        raise ProtocolViolation(f"the body cannot be read: {error}") from None
