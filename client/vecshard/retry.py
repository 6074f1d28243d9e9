"""The SDK's one retry policy: which failures are worth retrying, and how long to wait before each
retry (exponential backoff with jitter). `Client` and `AsyncClient` retry through it (in their
shared plans), and so does `vecshard import`; `Backoff.call` retries plain code the same way."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from vecshard.errors import DeadlineExceeded, ResourceExhausted, Unavailable, VecshardError
from vecshard.plan import Plan, Sleep, invoke, perform_locally, run

T = TypeVar("T")

RETRYABLE = (Unavailable, DeadlineExceeded)
"""Failures that may succeed later as they are. A write that met one may have been applied: retry it
as an upsert."""


@dataclass(frozen=True)
class Backoff:
    """Retry what may succeed later, waiting longer each time.

    Retried: Unavailable and DeadlineExceeded and, with `busy`, ResourceExhausted that carries the
    server's retry-after hint (a busy server; without a hint the request itself is over a limit and
    fails again). The wait before retry n (0, 1, ...) is min(max_s, initial_s * 2**n), or the
    server's hint, times a random factor in [1, 1 + jitter), so that clients which failed together
    do not retry together. Anything else, or a failure after `retries` retries, is raised.

    Example:
        >>> from vecshard.retry import Backoff
        >>> D, I = Backoff(busy=True).call(lambda failed: c.search("docs", queries, k=10))
    """

    retries: int = 3
    initial_s: float = 0.2
    max_s: float = 2.0
    jitter: float = 0.5
    busy: bool = False

    def wait_s(self, err: BaseException, attempt: int) -> float | None:
        """Seconds to wait before retrying after `err` ended attempt `attempt` (0 for the first), or
        None when `err` is to be raised."""
        if attempt >= self.retries:
            return None
        if isinstance(err, RETRYABLE):
            wait = min(self.max_s, self.initial_s * 2.0**attempt)
        elif self.busy and isinstance(err, ResourceExhausted) and err.retry_after is not None:
            wait = err.retry_after
        else:
            return None
        return wait * (1 + self.jitter * random.random())

    def retried(self, attempt: Callable[[VecshardError | None], Plan[T]]) -> Plan[T]:
        """A plan that runs the plan `attempt(failed)` until it succeeds, per this policy; `failed` is
        the error that ended the previous attempt (None for the first). The SDK's one retry loop."""
        failed: VecshardError | None = None
        tries = 0
        while True:
            try:
                result: T = yield from attempt(failed)
                return result
            except VecshardError as err:
                wait = self.wait_s(err, tries)
                if wait is None:
                    raise
                failed, tries = err, tries + 1
            yield Sleep(wait)

    def call(self, fn: Callable[[VecshardError | None], T]) -> T:
        """Call `fn(failed)` until it succeeds, per this policy, sleeping between attempts (for plain
        synchronous code); `failed` is the error that ended the previous attempt (None at first)."""
        return run(self.retried(lambda failed: invoke(partial(fn, failed))), perform_locally)
