"""The long-running jobs of this coordinator (reshard, train, backup, restore) and their progress, as
DescribeCluster reports them.

A job's owner starts it, updates `phase`/`done`/`total` as it goes, and finishes it; a finished job
stays listed for a while (its outcome, an error especially, stays visible to an operator).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

KEEP_FINISHED_S = 600.0


@dataclass
class Job:
    kind: str  # "reshard", "train", "backup" or "restore"
    collection: str = ""
    id: str = ""
    phase: str = "RUNNING"
    done: int = 0
    total: int = 0
    error: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None


class Jobs:
    """The registry: one per coordinator."""

    def __init__(self) -> None:
        self._jobs: list[Job] = []

    def start(self, kind: str, collection: str = "", id: str = "", total: int = 0) -> Job:
        job = Job(kind=kind, collection=collection, id=id, total=total)
        self._jobs.append(job)
        return job

    def finish(self, job: Job, error: str = "", phase: str | None = None) -> None:
        job.error = error
        job.phase = phase or ("FAILED" if error else "DONE")
        job.finished = time.time()

    def listed(self) -> list[Job]:
        """Running jobs and those finished in the last KEEP_FINISHED_S, oldest first."""
        now = time.time()
        self._jobs = [j for j in self._jobs if j.finished is None or now - j.finished < KEEP_FINISHED_S]
        return list(self._jobs)
