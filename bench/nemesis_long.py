"""The long, time-boxed nemesis run: `python bench/nemesis_long.py --minutes 30 --seed 7`.

Runs the profiles of tests/nemesis.py (write quorum all with damaged files; write quorum 1 with
kills and stops only) in segments of --segment-minutes each, alternating, each on a fresh cluster
and checked at its end; prints every segment's figures and the totals. Exit status 1 on any
violation. Meant to be run niced on a shared machine: `nice -n 10 python bench/nemesis_long.py ...`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.nemesis import Report, run_profile, short_profiles  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="total time box (default 30)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--segment-minutes", type=float, default=5.0, help="one cluster's run (default 5)")
    ap.add_argument("--profile", choices=["both", "quorum-all", "quorum-1"], default="both")
    ap.add_argument("--work-dir", type=Path, default=None, help="keep data and logs here (default: a temp dir)")
    ap.add_argument("--max-violations", type=int, default=25, help="violations printed in full per segment")
    args = ap.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vecshard-nemesis-"))
    deadline = time.monotonic() + args.minutes * 60
    reports: list[Report] = []
    n = 0
    while True:
        left = deadline - time.monotonic()
        if left < 30:
            break
        base = short_profiles(args.seed + 1000 * n)
        profiles = base if args.profile == "both" else [p for p in base if p.name == args.profile]
        profile = profiles[n % len(profiles)]
        seconds = min(args.segment_minutes * 60, left - 15)
        profile = replace(profile, rounds=0, seconds=seconds)
        report = run_profile(profile, work / f"segment-{n:02d}-{profile.name}")
        print(report.format(args.max_violations), flush=True)
        reports.append(report)
        n += 1
    total_faults: Counter[str] = Counter()
    total_starts: Counter[str] = Counter()
    total_checked: Counter[str] = Counter()
    total_kinds: Counter[str] = Counter()
    for r in reports:
        total_faults.update(r.faults)
        total_starts.update(r.starts)
        total_checked.update(r.checked)
        total_kinds.update(v.kind for v in r.violations)
    print(f"\n== totals over {len(reports)} segments, seeds {[r.profile.seed for r in reports]}, data in {work}")
    print("rounds:", sum(r.rounds for r in reports))
    for title, c in (
        ("faults", total_faults),
        ("starts", total_starts),
        ("checked", total_checked),
        ("violations", total_kinds),
    ):
        print(f"{title}: " + (", ".join(f"{k}={v}" for k, v in sorted(c.items())) or "-"))
    by_profile = Counter({r.profile.name: 0 for r in reports})
    for r in reports:
        by_profile[r.profile.name] += len(r.violations)
    print("violations by profile:", dict(by_profile))
    return 1 if any(r.violations for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
