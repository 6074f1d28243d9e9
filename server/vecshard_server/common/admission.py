"""Admission control and fair scheduling: one caller must not take a process down.

`Admission` bounds the work a process has in flight, in cost units its owner chooses (the
coordinator: estimated bytes of requests, copies and replies; embedding: characters). A request is
admitted at once or refused at once (RESOURCE_EXHAUSTED with a retry-after hint): nothing queues
without bound. Requests whose cost is at most `small` go to a lane of their own, so a burst of large
requests never refuses (or delays) a small one; large ones share the other lane. A request bigger
than its whole lane is admitted only into an empty lane (it takes all of it), so it is never
starved forever, and the bound on memory stays one request's worth above the budget at most.

The retry-after hint is when enough of the admitted work should have finished: each lane learns the
seconds per cost unit of the requests it ran (a moving average) and adds up the expected ends of the
requests in flight until the refused one would fit.

`FairScheduler` runs pieces of work (embedding sub-batches) a few at a time and picks the next piece
by start-time fair queuing: every request (a flow) has a virtual clock advanced by the cost of each
of its pieces, and the piece with the smallest virtual start runs next. A one-text request that
arrives while a 256-text one is being embedded waits for at most the piece that is running, not the
rest of the big batch.

Both live on one asyncio event loop and are not thread-safe.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from vecshard.errors import ResourceExhausted

P = ParamSpec("P")
R = TypeVar("R")

MIN_RETRY_S = 0.05
MAX_RETRY_S = 30.0


@dataclass
class _Ticket:
    cost: int
    started: float


@dataclass
class Lane:
    """A budget of cost units and the requests holding part of it."""

    name: str
    budget: int
    in_flight: int = 0
    held: dict[int, _Ticket] = field(default_factory=dict)
    seconds_per_unit: float = 0.0  # learnt from finished requests (0: nothing finished yet)

    def fits(self, cost: int) -> bool:
        return self.in_flight + cost <= self.budget or self.in_flight == 0

    def retry_after(self, cost: int, now: float) -> float:
        """Seconds until enough of the work in flight should have finished for `cost` to fit."""
        rate = self.seconds_per_unit
        if rate == 0.0:  # nothing finished yet: no measure of speed, suggest a short wait
            return 0.5
        need = self.in_flight + min(cost, self.budget) - self.budget
        freed, wait = 0, MIN_RETRY_S
        for ticket in sorted(self.held.values(), key=lambda t: t.started + t.cost * rate):
            freed += ticket.cost
            wait = ticket.started + ticket.cost * rate - now
            if freed >= need:
                break
        return min(MAX_RETRY_S, max(MIN_RETRY_S, wait))


class Admission:
    """Admission control of one process (see the module doc).

    name: what the lanes are called in messages (e.g. "coordinator").
    unit: how a cost is spelt in messages (e.g. "bytes").
    budget / budget_setting: the large lane and the setting that sets it.
    small / small_budget / small_budget_setting: requests of cost <= small use the small lane.
    """

    def __init__(
        self,
        name: str,
        unit: str,
        budget: int,
        budget_setting: str,
        small: int,
        small_budget: int,
        small_budget_setting: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.unit = unit
        self.large = Lane("large", budget)
        self.small = Lane("small", small_budget)
        self.small_cost = small
        self._settings = {"large": budget_setting, "small": small_budget_setting}
        self._ids = itertools.count()
        self._clock = clock
        self.refused = 0

    def lane_of(self, cost: int) -> Lane:
        return self.small if cost <= self.small_cost else self.large

    def check(self, cost: int, what: str) -> None:
        """Raise ResourceExhausted (with retry_after_s) if `cost` would not be admitted now; holds nothing."""
        cost = max(1, int(cost))
        self._refuse_unless_fits(cost, self.lane_of(cost), self._clock(), what)

    @contextmanager
    def admit(self, cost: int, what: str) -> Iterator[None]:
        """Hold `cost` units of the request's lane for the `with` block, or raise ResourceExhausted
        (with retry_after_s) at once when the lane is full."""
        cost = max(1, int(cost))
        lane = self.lane_of(cost)
        now = self._clock()
        self._refuse_unless_fits(cost, lane, now, what)
        ticket = next(self._ids)
        held = min(cost, lane.budget)
        lane.in_flight += held
        lane.held[ticket] = _Ticket(held, now)
        try:
            yield
        finally:
            lane.in_flight -= held
            done = lane.held.pop(ticket)
            elapsed = self._clock() - done.started
            rate = elapsed / done.cost
            lane.seconds_per_unit = rate if lane.seconds_per_unit == 0.0 else 0.8 * lane.seconds_per_unit + 0.2 * rate

    def _refuse_unless_fits(self, cost: int, lane: Lane, now: float, what: str) -> None:
        if not lane.fits(cost):
            self.refused += 1
            wait = lane.retry_after(cost, now)
            setting = self._settings[lane.name]
            raise ResourceExhausted(
                f"{self.name} is busy: {what} (about {cost:,} {self.unit} of work) does not fit beside the "
                f"{lane.in_flight:,} {self.unit} of {lane.name} requests in flight ({setting}={lane.budget:,}): "
                f"retry in about {wait:.2f}s (retry-after), send smaller requests, or raise {setting}",
                retry_after_s=wait,
            )


@dataclass(order=True)
class _Piece:
    start: float
    seq: int
    ready: asyncio.Future[None] = field(compare=False)


class Flow:
    """One request's share of a FairScheduler: its virtual clock."""

    def __init__(self) -> None:
        self.finish = 0.0


class FairScheduler:
    """Runs pieces of work `slots` at a time, the next one chosen by start-time fair queuing."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self.running = 0
        self.vtime = 0.0  # the virtual start of the piece that began last
        self._queue: list[_Piece] = []
        self._seq = itertools.count()

    async def run(self, flow: Flow, cost: float, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """fn(*args, **kwargs) on a worker thread, when this piece's turn comes."""
        start = max(self.vtime, flow.finish)
        flow.finish = start + max(cost, 1.0)
        if self.running >= self.slots or self._queue:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            piece = _Piece(start, next(self._seq), ready)
            heapq.heappush(self._queue, piece)
            try:
                await ready
            except asyncio.CancelledError:
                if ready.done() and not ready.cancelled():
                    self._release()  # it was handed the slot: pass it on
                elif piece in self._queue:
                    self._queue.remove(piece)
                    heapq.heapify(self._queue)
                raise
        else:
            self.running += 1
        self.vtime = max(self.vtime, start)
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        finally:
            self._release()

    def _release(self) -> None:
        """Hand the slot to the next piece (the smallest virtual start), or free it."""
        while self._queue:
            piece = heapq.heappop(self._queue)
            if not piece.ready.done():
                piece.ready.set_result(None)  # the slot passes on: `running` is unchanged
                return
        self.running -= 1
