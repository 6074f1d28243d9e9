"""Plans: the SDK's logic written once, for `Client` and `AsyncClient` alike.

A plan is a generator that yields effects and gets back each one's outcome (or has its error thrown
in): `Call` an RPC, `Sleep`, `Spawn` another plan to run concurrently, `Wait` for spawned plans.
The plans (`vecshard.methods`) build the requests, parse the responses, retry, pace and fan out;
`Client` performs the effects with blocking calls and threads, `AsyncClient` with `await` and
tasks. Neither client holds logic of its own, so the two cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")

Plan: TypeAlias = Generator[Any, Any, T]
"""A generator that yields effects, is sent their outcomes, and returns a `T`."""


@dataclass(frozen=True)
class Call:
    """Call the VectorSearch RPC `method` with `request`; the outcome is its response. `timeout`:
    seconds (None: the client's default). A failure is thrown in as a `VecshardError`."""

    method: str
    request: Any
    timeout: float | None = None


@dataclass(frozen=True)
class Sleep:
    """Wait `seconds` (time.sleep, or asyncio.sleep)."""

    seconds: float


@dataclass(frozen=True)
class Spawn:
    """Start `plan` concurrently (on a thread, or as a task); the outcome is its handle (a
    `concurrent.futures.Future` or an `asyncio.Task`: `.result()` gives its result or raises)."""

    plan: Plan[Any]


@dataclass(frozen=True)
class Wait:
    """Wait for spawned plans; the outcome is the set of the finished ones. `return_when`:
    FIRST_COMPLETED or ALL_COMPLETED (the same constants in concurrent.futures and asyncio)."""

    handles: Sequence[Any]
    return_when: str = FIRST_COMPLETED


@dataclass(frozen=True)
class Invoke:
    """Call `fn()` in the caller's context (plain code under a plan, e.g. `Backoff.call`)."""

    fn: Callable[[], Any]


def invoke(fn: Callable[[], T]) -> Plan[T]:
    """A plan of one `Invoke`: fn's result."""
    result: T = yield Invoke(fn)
    return result


def unary(method: str, request: Any, timeout: float | None, parse: Callable[[Any], T]) -> Plan[T]:
    """A plan of one RPC: the parsed response."""
    return parse((yield Call(method, request, timeout)))


def step(plan: Plan[T], outcome: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Resume `plan` with the last effect's outcome (or its error): (False, the next effect), or
    (True, the plan's result) once it returned. An error the plan does not handle propagates."""
    try:
        return False, (plan.send(outcome) if error is None else plan.throw(error))
    except StopIteration as stop:
        return True, stop.value


def run(plan: Plan[T], perform: Callable[[Any], Any]) -> T:
    """Run `plan` to its result, performing each effect with `perform` (synchronously)."""
    outcome: Any = None
    error: BaseException | None = None
    while True:
        done, value = step(plan, outcome, error)
        if done:
            result: T = value
            return result
        outcome, error = None, None
        try:
            outcome = perform(value)
        except BaseException as err:  # thrown into the plan: it may retry, clean up, or let it through
            error = err


async def run_async(plan: Plan[T], perform: Callable[[Any], Awaitable[Any]]) -> T:
    """`run` for asyncio: each effect is performed by awaiting `perform(effect)`."""
    outcome: Any = None
    error: BaseException | None = None
    while True:
        done, value = step(plan, outcome, error)
        if done:
            result: T = value
            return result
        outcome, error = None, None
        try:
            outcome = await perform(value)
        except BaseException as err:  # as in `run`
            error = err


def perform_locally(effect: Any) -> Any:
    """Perform the effects that need no client: `Sleep` and `Invoke`."""
    if isinstance(effect, Sleep):
        time.sleep(effect.seconds)
        return None
    if isinstance(effect, Invoke):
        return effect.fn()
    raise TypeError(f"not an effect this code can perform: {effect!r}")
