"""A readers-writer lock for faiss indexes: searches may run together, writes run alone.

faiss indexes allow concurrent searches but not a search concurrent with add/remove. The standard
library has no RW lock. This one is phase-fair, so neither side can starve the other:
- a reader arriving while a writer holds the lock or waits for it waits (a stream of searches
  cannot starve adds: a waiting writer gets the lock once the readers inside leave);
- a writer releasing the lock hands it to every reader waiting at that moment, before the next
  writer (a stream of adds cannot starve searches: a waiting reader gets in after at most one write).
Writers get the lock one at a time, in no particular order among themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0  # holding the lock (including those a writer admitted that have not woken yet)
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._read_turn = 0  # bumped when a releasing writer admits the waiting readers

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            if self._writer or self._writers_waiting:
                turn = self._read_turn
                self._readers_waiting += 1
                try:
                    while self._read_turn == turn and (self._writer or self._writers_waiting):
                        self._cond.wait()
                except BaseException:
                    if self._read_turn == turn:
                        self._readers_waiting -= 1
                    else:  # admitted meanwhile: give the place back
                        self._readers -= 1
                        self._cond.notify_all()
                    raise
                if self._read_turn == turn:  # no writer left to admit us: come in on our own
                    self._readers_waiting -= 1
                    self._readers += 1
            else:
                self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def read_if_free(self) -> Iterator[bool]:
        """The read lock if it can be had without waiting (no writer holds it or waits): yields True
        then, else False at once (the caller does without it)."""
        with self._cond:
            free = not (self._writer or self._writers_waiting)
            if free:
                self._readers += 1
        try:
            yield free
        finally:
            if free:
                with self._cond:
                    self._readers -= 1
                    if not self._readers:
                        self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            except BaseException:
                self._writers_waiting -= 1
                self._cond.notify_all()
                raise
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                if self._readers_waiting:  # their turn comes before the next writer's
                    self._readers += self._readers_waiting
                    self._readers_waiting = 0
                    self._read_turn += 1
                self._cond.notify_all()
