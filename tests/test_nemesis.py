"""Seeded fault injection against a real cluster of 2 shard groups x 2 replicas (see tests/nemesis.py):
kill -9, SIGSTOP and damaged files under a recorded workload, then a check of every acknowledged op.

The short profiles run here (about 40 s + 30 s on 2 cores: every fault kind once with a write quorum
of all, twice with a quorum of 1; pytest -s prints the figures).
VECSHARD_NEMESIS_MINUTES=N runs each profile time-boxed to N/2 minutes instead (the long run:
`VECSHARD_NEMESIS_MINUTES=N pytest tests/test_nemesis.py -s`); VECSHARD_NEMESIS_SEED picks the seed.
VECSHARD_NEMESIS_DIR=path keeps the data dirs and the process logs (<path>/<profile>/logs/
<process>.<start>.log) for a look after a violation.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from .nemesis import env_minutes, run_profile, short_profiles

SEED = int(os.environ.get("VECSHARD_NEMESIS_SEED", "20240611"))
MINUTES = env_minutes()


@pytest.mark.slow
@pytest.mark.timeout(300 + int(MINUTES * 60))
@pytest.mark.parametrize("index", [0, 1], ids=["quorum-all", "quorum-1"])
def test_nemesis_loses_no_acknowledged_write(tmp_path: Path, index: int) -> None:
    profile = short_profiles(SEED)[index]
    if MINUTES:
        profile = replace(profile, rounds=0, seconds=MINUTES * 60 / 2)
    keep = os.environ.get("VECSHARD_NEMESIS_DIR")
    work = Path(keep) / profile.name if keep else tmp_path
    report = run_profile(profile, work)
    print("\n" + report.format())
    assert report.rounds >= (len(profile.kinds) * profile.rounds if profile.rounds else 1)
    assert not report.violations, report.format()
