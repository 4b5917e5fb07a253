"""When to ask again and when to stop asking: jittered exponential backoff and a circuit breaker per server.

The rules are docs/protocol.md's "Client behaviour"; the Swift client (ClusterClient) follows the same ones.
Clocks and randomness are injected so tests decide time, never sleep for it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class RetryPolicy:
    """Full-jitter exponential backoff: before attempt n+1 wait a uniformly random part of
    min(maximum_delay, initial_delay × 2^n); give up when ``patience`` seconds have passed since the first attempt
    (the last error is raised) or after ``max_attempts``."""

    initial_delay: float = 0.1
    maximum_delay: float = 5.0
    patience: float = 60.0
    max_attempts: int = 20
    attempt_timeout: float = 15.0
    """How long one attempt may wait for its answer (a FETCH adds its wait_seconds) before the connection is
    considered stuck, dropped, and the request asked again elsewhere."""
    random: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, failures: int) -> float:
        """The pause after ``failures`` failed attempts (1, 2, …)."""
        bound = min(self.maximum_delay, self.initial_delay * (2 ** max(0, failures - 1)))
        return bound * self.random()


class CircuitBreaker:
    """One server's breaker. Closed: requests go through. After ``threshold`` consecutive connection failures
    (refused, reset, lost, timed out; not refusals, which prove the server is alive) it opens: for ``cooldown``
    seconds nothing is sent to that server. Then one probe is let through (half-open): its success closes the
    breaker, its failure opens it for another cool-down."""

    def __init__(self, threshold: int = 3, cooldown: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self._open_until is None:
            return "closed"
        return "open" if self._clock() < self._open_until or self._probing else "half-open"

    @property
    def probing(self) -> bool:
        """Whether a probe is in flight: its outcome, soon, closes the breaker or opens it again."""
        return self._probing

    def allow(self) -> bool:
        """Whether a request may go to this server now (in half-open, only the first caller's probe)."""
        if self._open_until is None:
            return True
        if self._clock() < self._open_until or self._probing:
            return False
        self._probing = True
        return True

    def retry_after(self) -> float:
        """Seconds until a probe will be allowed (0 when closed or half-open)."""
        if self._open_until is None:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    def succeeded(self) -> None:
        self._failures = 0
        self._open_until = None
        self._probing = False

    def released(self) -> None:
        """A probe that ended without telling (cancelled): the next caller may probe."""
        self._probing = False

    def failed(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._open_until = self._clock() + self.cooldown
            self._probing = False
