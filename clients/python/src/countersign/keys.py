"""Idempotency keys for payments that have no natural one (an order number is best when there is one)."""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

__all__ = ["time_ordered_key"]


def time_ordered_key(milliseconds: Optional[int] = None, random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A new UUID of version 7 (RFC 9562, 5.7), in lowercase: 48 bits of Unix time in milliseconds, then 74 random bits.

    Make it once per payment and store it with the payment before the first call: a call that failed may still have
    been recorded, and only the same key asks for that payment again (docs/agents.md). Keys made later sort after
    keys made earlier, which costs the server less to store than a random key (docs/protocol.md, "Choosing keys"). ``milliseconds`` and ``random_bytes`` are for tests: the time (default now)
    and the source of the 10 random bytes (``rand_a`` from the low 12 bits of the first two, ``rand_b`` from the low
    62 bits of the last eight).
    """
    if milliseconds is None:
        milliseconds = time.time_ns() // 1_000_000
    if not 0 <= milliseconds < 1 << 48:
        raise ValueError("milliseconds must fit in 48 bits")
    random = random_bytes(10)
    if len(random) != 10:
        raise ValueError("random_bytes(10) must return 10 bytes")
    rand_a = int.from_bytes(random[:2], "big") & 0x0FFF
    rand_b = int.from_bytes(random[2:], "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = milliseconds << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
