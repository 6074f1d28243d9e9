"""A seeded, time-boxed fault injector ("nemesis") against a real replicated cluster, and a checker.

`run_profile(profile, work_dir)` starts `LocalCluster(shards=2, replicas=2)` over durable data dirs,
runs a recorded workload against its coordinator, injects faults, heals the cluster and checks the
history against what the cluster holds. It returns a `Report` (figures and violations).

Workload (threads, one SDK client each). Every call is recorded as an `Op`: kind, collection, ids,
versions, start and end (monotonic, relative to the run's start), outcome (acknowledged, or failed
with its status code).
- writers add new unique ids (upsert=False) to FLAT and IVF_FLAT collections;
- upserters replace ids whose add was acknowledged (a removed one comes back) with a new version;
- a remover removes such ids;
- a searcher and a reader (Get) check on the fly that every answer is a vector some write sent;
- a trainer calls Train on the IVF collection now and then (it also trains itself at a threshold);
- a cycler creates, fills, trims and drops a third collection, over and over.
The vector of (id, version) is `vec(id, version)`: row[0] = id * 2^-20, row[1] = version * 2^-10
(exact in float32) and pseudo-random components after, so any stored row names the write it came
from, and nothing else matches it exactly.

Nemesis (one fault at a time, so never both replicas of a group): kill -9 a shard replica and
restart it (it catches up from its peer), kill -9 the coordinator and restart it, SIGSTOP/SIGCONT
a shard or the coordinator, and (only with the default write quorum, all, where every acknowledged
write is on both replicas) kill a shard and damage its files before the restart: truncate the last
log segment at a random byte, flip a bit of a random byte of a log segment, of a snapshot's
index.faiss or of its meta.json. A damaged start must either serve (and then hold everything
acknowledged: checked at the end) or refuse with the damaged file named in its stderr; a refused
replica's data dir is wiped and it is started again, catching up from its peer.

Checker (after the faults stop, every process is up and a quiet period has passed; replicas get up
to 10 s more to converge, as they repair known misses in the background):
- Per id, the allowed final states. An acknowledged op took effect inside [start, end]; a failed op
  took effect at most once, somewhere in [start, end + FAILED_SLACK] (a write whose coordinator
  died or whose shard was stopped can land late; FAILED_SLACK = op timeout + 2 x the longest stop
  + 3 s bounds it), or never. The final state is the value of the op that took effect last, so op
  X may be the last iff no acknowledged op Y started after X's latest possible effect (Y then
  certainly took effect after X); the initial state (absent) is allowed iff no op on the id was
  acknowledged. The allowed set is the values of the ops that may be last. If every op on an id was
  acknowledged and none overlapped, this is exactly the last op's value. Every replica of the id's
  group and the coordinator's Get must hold an allowed value.
- A failed Add during which no fault was active (nothing killed, stopped or restarting from 2 s
  before its start to 2 s after its end) must leave nothing ("A failed Add leaves nothing").
- Replicas of each group agree: digest, count, training, centroids and the exported pairs.
- Searches equal a brute-force numpy top-k over the stored (checked) data, for the FLAT collection
  and for the IVF one at nprobe = nlist (exhaustive); the coordinator's count is the stored count.
- The cycled collection exists or not as its create/drop history allows (replicas of a group
  agree; a failed create/drop may leave it on some groups only: a note), holds no id added before
  an acknowledged drop, and holds every acknowledged add made after all creates and drops.
- No process exited on its own; searches and Gets during the run returned only written vectors,
  and with write quorum all each Get saw a value allowed at its time (same rule, restricted to the
  ops that started before the Get ended; acknowledged ops that ended before it started are certain).
- A write that a Get saw took effect by that Get's end (except a failed non-upsert Add, which its
  rollback takes back by design): a final state or a later Get that undoes it is a violation too
  (observed_write_undone, nonlinearizable_read) — unless only a *failed* write's being seen makes
  it wrong (uncommitted_write_undone, uncommitted_read): a write whose outcome the client does not
  know may be read before it is settled and then lost (say the one replica that applied it is wiped
  after a damaged start), as in any database that reads from replicas without a consensus round.
  Those are counted, not violations.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from vecshard import Client, VecshardError, wire
from vecshard.payload import payload_from_proto
from vecshard.v1 import shard_pb2, shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import ClusterError, LocalCluster, Process
from vecshard_server.common.placement import shard_of
from vecshard_server.shard.wal import segments

DIM = 8
ABSENT = 0  # the "version" of an absent id
GARBAGE = -1  # a stored row that is no vec(id, version) of a write to that id
FLAT, IVF, CYCLE = "nem_flat", "nem_ivf", "nem_cycle"
NLIST = 4
SHARDS, REPLICAS = 2, 2

KILL_SHARD, KILL_COORD = "kill_shard", "kill_coordinator"
STOP_SHARD, STOP_COORD = "stop_shard", "stop_coordinator"
WAL_TRUNCATE, WAL_FLIP = "damage_wal_truncate", "damage_wal_flip"
INDEX_FLIP, META_FLIP = "damage_index_flip", "damage_meta_flip"
PROCESS_FAULTS = (KILL_SHARD, KILL_COORD, STOP_SHARD, STOP_COORD)
DAMAGE_FAULTS = (WAL_TRUNCATE, WAL_FLIP, INDEX_FLIP, META_FLIP)


# -- vectors ------------------------------------------------------------------------------------------


def vec(ids: Any, versions: Any) -> np.ndarray:
    """The row written for each (id, version): decodable, and unlike any other write's."""
    i = np.atleast_1d(np.asarray(ids, dtype=np.float64))
    v = np.broadcast_to(np.atleast_1d(np.asarray(versions, dtype=np.float64)), i.shape)
    out = np.empty((i.size, DIM), dtype=np.float64)
    out[:, 0] = i * 2.0**-20
    out[:, 1] = v * 2.0**-10
    for j in range(2, DIM):
        x = np.sin(i * 12.9898 + v * 78.233 + j * 37.719) * 43758.5453
        out[:, j] = x - np.floor(x)
    return out.astype(np.float32)


def pay(ids: Any, versions: Any) -> list[dict[str, Any]]:
    """The payload written with vec(ids, versions): a stored point's payload must name its vector's write."""
    i = np.atleast_1d(np.asarray(ids, dtype=np.int64))
    v = np.broadcast_to(np.atleast_1d(np.asarray(versions, dtype=np.int64)), i.shape)
    return [{"id": a, "v": b, "big": (1 << 62) + b} for a, b in zip(i.tolist(), v.tolist(), strict=True)]


def decode(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The version each row of `ids` holds: ABSENT for a NaN row, GARBAGE for a row of no (id, version)."""
    out = np.full(len(ids), GARBAGE, dtype=np.int64)
    if not len(ids):
        return out
    missing = np.isnan(rows).any(axis=1)
    out[missing] = ABSENT
    have = ~missing
    ver = np.rint(rows[have, 1].astype(np.float64) * 2.0**10).astype(np.int64)
    same_id = np.rint(rows[have, 0].astype(np.float64) * 2.0**20).astype(np.int64) == ids[have]
    exact = (vec(ids[have], np.maximum(ver, 1)) == rows[have]).all(axis=1)
    out[np.flatnonzero(have)] = np.where(same_id & exact & (ver >= 1), ver, GARBAGE)
    return out


# -- the record ---------------------------------------------------------------------------------------


@dataclass
class Op:
    seq: int
    kind: str  # add | upsert | remove | create | drop | train | search | get
    coll: str
    ids: np.ndarray
    versions: np.ndarray | None
    start: float
    worker: str
    end: float = math.nan
    ok: bool = False
    code: str = "IN_FLIGHT"
    result: Any = None  # search: (queries, D, I); get: rows

    def latest(self, slack: float) -> float:
        """The latest moment this op may have taken effect."""
        return self.end if self.ok else self.end + slack

    def describe(self, t0: float = 0.0) -> str:
        outcome = "ack" if self.ok else f"FAILED {self.code}"
        return f"#{self.seq} {self.kind} [{self.start - t0:.3f}, {self.end - t0:.3f}] {outcome} ({self.worker})"


@dataclass
class Fault:
    kind: str
    target: str
    start: float
    end: float = math.nan
    detail: str = ""
    outcome: str = ""

    def describe(self) -> str:
        extra = f" {self.detail}" if self.detail else ""
        return f"{self.kind} {self.target} [{self.start:.3f}, {self.end:.3f}]{extra} -> {self.outcome}"


class History:
    """Every op, thread-safe; times are seconds since the run started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._next_id = 1
        self._versions: dict[tuple[str, int], int] = defaultdict(int)
        self.pools: dict[str, list[int]] = defaultdict(list)  # ids whose add was acknowledged

    def now(self) -> float:
        return time.monotonic() - self.t0

    def new_ids(self, n: int) -> np.ndarray:
        with self._lock:
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            self._next_id += n
            return ids

    def next_versions(self, coll: str, ids: np.ndarray) -> np.ndarray:
        with self._lock:
            out = []
            for i in ids.tolist():
                self._versions[(coll, i)] += 1
                out.append(self._versions[(coll, i)])
            return np.array(out, dtype=np.int64)

    def begin(
        self, kind: str, coll: str, worker: str, ids: np.ndarray | None = None, versions: np.ndarray | None = None
    ) -> Op:
        with self._lock:
            op = Op(
                len(self.ops), kind, coll, np.empty(0, np.int64) if ids is None else ids, versions, self.now(), worker
            )
            self.ops.append(op)
            return op

    def finish(self, op: Op, err: VecshardError | None = None, result: Any = None) -> None:
        op.end = self.now()
        op.ok = err is None
        op.code = "OK" if err is None else err.code.name
        op.result = result
        if op.ok and op.kind == "add" and op.coll in (FLAT, IVF, CYCLE):
            with self._lock:
                self.pools[op.coll].extend(op.ids.tolist())

    def pick(self, coll: str, rng: random.Random, n: int, hot: int = 150) -> np.ndarray:
        """n distinct ids from those whose add was acknowledged, mostly recent ones (so ops overlap)."""
        with self._lock:
            pool = self.pools[coll]
            if not pool:
                return np.empty(0, np.int64)
            source = pool[-hot:] if rng.random() < 0.75 else pool
            return np.array(sorted(set(rng.choice(source) for _ in range(n))), dtype=np.int64)


# -- the profile and the report ---------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    name: str
    quorum: int  # VECSHARD_WRITE_QUORUM; 0 = all (the default)
    kinds: tuple[str, ...]
    rounds: int = 2  # faults of each kind, in a seeded order; 0: random kinds until `seconds` pass
    seconds: float = 0.0
    seed: int = 0
    op_timeout: float = 3.0
    stop_s: tuple[float, float] = (0.3, 4.0)  # SIGSTOP duration range (beyond op_timeout: writes fail)
    down_s: tuple[float, float] = (0.2, 1.5)  # time a killed process stays down
    gap_s: tuple[float, float] = (0.3, 1.2)  # between faults
    quiet_s: float = 3.0
    converge_s: float = 10.0  # then, at most this long for the replicas to agree

    def __post_init__(self) -> None:
        if self.quorum != 0 and set(self.kinds) & set(DAMAGE_FAULTS):
            raise ValueError("damage only with quorum all: with quorum 1 a damaged replica may hold the only copy")

    @property
    def failed_slack(self) -> float:
        return self.op_timeout + 2 * self.stop_s[1] + 3.0


def short_profiles(seed: int) -> list[Profile]:
    return [
        Profile("quorum-all", 0, PROCESS_FAULTS + DAMAGE_FAULTS, rounds=1, seed=seed),
        Profile("quorum-1", 1, PROCESS_FAULTS, rounds=2, seed=seed + 1),
    ]


@dataclass
class Violation:
    kind: str
    summary: str
    details: list[str] = field(default_factory=list)

    def format(self) -> str:
        return "\n".join([f"[{self.kind}] {self.summary}", *("    " + d for d in self.details)])


# A failed write read by a Get and later not there (or a later Get not seeing it): see
# Report.set_aside_uncommitted.
UNCOMMITTED = ("uncommitted_write_undone", "uncommitted_read")


@dataclass
class Report:
    profile: Profile
    rounds: int = 0
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    starts: Counter[str] = field(default_factory=Counter)
    ops: Counter[str] = field(default_factory=Counter)  # kind/outcome
    checked: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    fault_log: list[Fault] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # allowed, but worth knowing

    def violate(self, kind: str, summary: str, details: list[str] | None = None) -> None:
        self.violations.append(Violation(kind, summary, details or []))

    def set_aside_uncommitted(self) -> None:
        """Move the findings that only a failed write's being read makes wrong out of the violations:
        a write that failed (UNAVAILABLE, DEADLINE_EXCEEDED: its outcome unknown to the client) may be
        read before it is settled and then lost, e.g. when the one replica that applied it is wiped
        after a damaged start. Acknowledged writes promise durability; failed ones promise nothing."""
        uncommitted = [v for v in self.violations if v.kind in UNCOMMITTED]
        self.violations = [v for v in self.violations if v.kind not in UNCOMMITTED]
        for kind, n in Counter(v.kind for v in uncommitted).items():
            self.checked[f"{kind} (a failed write read, then not: allowed)"] += n
        for v in uncommitted[:2]:
            self.notes.append(f"{v.kind}: {v.summary}")

    def format(self, max_violations: int = 25) -> str:
        p = self.profile
        lines = [
            f"== nemesis profile {p.name} (write quorum {p.quorum or 'all'}), seed {p.seed}: {self.rounds} rounds "
            f"in {self.seconds:.1f}s",
            "faults injected: " + _counts(self.faults),
            "process starts: " + _counts(self.starts),
            "ops: " + _counts(self.ops),
            "checked: " + _counts(self.checked),
            f"violations: {len(self.violations)} " + _counts(Counter(v.kind for v in self.violations)),
        ]
        lines += [f"note: {n}" for n in self.notes]
        for v in self.violations[:max_violations]:
            lines.append(v.format())
        if len(self.violations) > max_violations:
            lines.append(f"... {len(self.violations) - max_violations} more")
        return "\n".join(lines)


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(c.items())) or "-"


# -- the cluster --------------------------------------------------------------------------------------


class Harness:
    def __init__(self, profile: Profile, work_dir: Path, log: Callable[[str], None]) -> None:
        self.profile = profile
        self.work_dir = work_dir
        self.data_dir = work_dir / "data"
        self.log_dir = work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.say = log
        self.rng = random.Random(profile.seed)
        self.report = Report(profile)
        self.history = History()
        self.cluster: LocalCluster | None = None
        self.stop_load = threading.Event()
        self.threads: list[threading.Thread] = []
        self.stopped: set[str] = set()  # processes under SIGSTOP
        self.expected_down: set[str] = set()  # processes the nemesis killed and has not restarted yet
        self.starts: Counter[str] = Counter()  # per process: spawns, to name its log files
        self.worker_errors: list[str] = []

    # -- processes ------------------------------------------------------------------------------

    def start_cluster(self) -> LocalCluster:
        # Replicas compare themselves with their peers every second (default 10 s), so that the check
        # after the quiet period does not wait long for a repair whose coordinator was killed.
        env = {
            "VECSHARD_CHECKPOINT_INTERVAL_S": "2",
            "VECSHARD_CHECKPOINT_WAL_BYTES": str(256 * 1024),
            "VECSHARD_PEER_SYNC_S": "1",
        }
        if self.profile.quorum:
            env["VECSHARD_WRITE_QUORUM"] = str(self.profile.quorum)
        cluster = LocalCluster(
            shards=SHARDS, replicas=REPLICAS, data_dir=self.data_dir, env=env, log_level="INFO", log_dir=self.log_dir
        )
        cluster.start(timeout=120)
        self.cluster = cluster
        return cluster

    def proc(self, name: str) -> Process:
        assert self.cluster is not None
        return next(p for p in self.cluster.processes() if p.name == name)

    def where(self, name: str) -> tuple[int, int]:
        assert self.cluster is not None
        for g, group in enumerate(self.cluster.groups):
            for r, p in enumerate(group):
                if p.name == name:
                    return g, r
        raise KeyError(name)

    def _new_log(self, p: Process) -> Path:
        self.starts[p.name] += 1
        path = self.log_dir / f"{p.name}.{self.starts[p.name]}.log"
        p.stdout = p.stderr = path
        return path

    def restart(self, name: str) -> tuple[bool, str, Path]:
        """Start a killed process again; (served?, error, its log)."""
        assert self.cluster is not None
        p = self.proc(name)
        log = self._new_log(p)
        try:
            if name == "coordinator":
                p.restart(timeout=90)
            else:
                self.cluster.restart_replica(*self.where(name), timeout=90)
        except ClusterError as err:
            if p.popen.poll() is None:  # timed out: do not leave it half started
                p.kill()
            return False, str(err), log
        return True, "", log

    def wipe(self, name: str) -> None:
        shutil.rmtree(self.data_dir / name, ignore_errors=True)

    def check_alive(self, when: str) -> None:
        """A process that exited without being killed by the nemesis is a violation; restart it."""
        assert self.cluster is not None
        for p in self.cluster.processes():
            if p.name in self.expected_down or p.popen.poll() is None:
                continue
            log = self.log_dir / f"{p.name}.{self.starts[p.name]}.log"
            self.report.violate(
                "process_exited",
                f"{p.name} exited with code {p.popen.returncode} on its own ({when}, t={self.history.now():.3f})",
                [f"log {log}:", *_tail(log)],
            )
            ok, err, log = self.restart(p.name)
            self.report.starts["restart after own exit: " + ("ok" if ok else "FAILED")] += 1
            if not ok:
                raise ClusterError(f"cannot restart {p.name} after it exited: {err}")

    # -- faults ---------------------------------------------------------------------------------

    def inject(self, kind: str) -> Fault:
        assert self.cluster is not None
        rng = self.rng
        if kind in (KILL_COORD, STOP_COORD):
            target = "coordinator"
        else:
            target = rng.choice(self.cluster.shards).name
        fault = Fault(kind, target, self.history.now())
        self.report.fault_log.append(fault)
        p = self.proc(target)
        if kind in (STOP_SHARD, STOP_COORD):
            pause = rng.uniform(*self.profile.stop_s)
            self.stopped.add(target)
            p.popen.send_signal(signal.SIGSTOP)
            try:
                time.sleep(pause)
            finally:
                p.popen.send_signal(signal.SIGCONT)
                self.stopped.discard(target)
            fault.detail = f"for {pause:.2f}s"
            fault.outcome = "continued"
        else:
            self.expected_down.add(target)
            p.kill()
            time.sleep(rng.uniform(*self.profile.down_s))
            if kind in DAMAGE_FAULTS:
                self._damaged_restart(kind, target, fault)
            else:
                ok, err, log = self.restart(target)
                fault.outcome = "restarted" if ok else f"RESTART FAILED: {err}"
                self.report.starts["restart after kill: " + ("ok" if ok else "FAILED")] += 1
                if not ok:
                    self.report.violate(
                        "restart_refused",
                        f"{target} did not start again after a plain kill -9 "
                        f"(seed {self.profile.seed}, t={fault.start:.3f})",
                        [err, *_tail(log)],
                    )
                    if target == "coordinator":
                        raise ClusterError(f"the coordinator does not start: {err}")
                    self._wipe_and_restart(target, fault)
            self.expected_down.discard(target)
        fault.end = self.history.now()
        self.report.faults[kind] += 1
        self.report.rounds += 1
        self.say(f"  t={fault.start:7.2f} {fault.describe()}")
        return fault

    def _damage(self, kind: str, target: str) -> tuple[Path | None, str]:
        rng = self.rng
        root = self.data_dir / target
        if kind in (WAL_TRUNCATE, WAL_FLIP):
            segs = [s for s in segments(root / "wal") if s.stat().st_size > 0]
            if not segs:
                return None, "no log segment"
            path = segs[-1] if kind == WAL_TRUNCATE else rng.choice(segs)
        else:
            name = "index.faiss" if kind == INDEX_FLIP else "meta.json"
            files = [f for f in sorted((root / "collections").glob(f"*/{name}")) if "." not in f.parent.name]
            if not files:
                return None, f"no snapshot {name}"
            path = rng.choice(files)
        data = bytearray(path.read_bytes())
        if kind == WAL_TRUNCATE:
            cut = rng.randrange(len(data))
            path.write_bytes(bytes(data[:cut]))
            return path, f"{path.relative_to(self.data_dir)} cut from {len(data)} to {cut} bytes"
        at = rng.randrange(len(data))
        bit = 1 << rng.randrange(8)
        data[at] ^= bit
        path.write_bytes(bytes(data))
        return path, f"{path.relative_to(self.data_dir)} byte {at} of {len(data)} ^= {bit:#04x}"

    def _damaged_restart(self, kind: str, target: str, fault: Fault) -> None:
        path, what = self._damage(kind, target)
        fault.detail = what
        if path is None:
            self.report.faults[kind + " (no such file: plain kill)"] += 1
        ok, err, log = self.restart(target)
        text = log.read_text(errors="replace") if log.exists() else ""
        if ok:
            torn = "dropping a torn write" in text
            fault.outcome = "started" + (" (dropped a torn tail)" if torn else "")
            self.report.starts[f"damaged start served{' (torn tail dropped)' if torn else ''}"] += 1
            return
        if path is not None and str(path) in text:
            fault.outcome = "refused, naming the file"
            self.report.starts["damaged start refused, file named"] += 1
        elif path is not None and str(path.parent) in text:
            fault.outcome = "refused, naming its directory"
            self.report.starts["damaged start refused, its directory named (not the file)"] += 1
        else:
            fault.outcome = "refused WITHOUT naming the file"
            self.report.starts["damaged start refused, file NOT named"] += 1
            self.report.violate(
                "refused_unnamed",
                f"{target} refused to start after {what} without naming "
                f"{path} (seed {self.profile.seed}, t={fault.start:.3f})",
                [err, *_tail(log)],
            )
        self._wipe_and_restart(target, fault)

    def _wipe_and_restart(self, target: str, fault: Fault) -> None:
        self.wipe(target)
        ok, err, log = self.restart(target)
        self.report.starts["wiped, restarted from peer: " + ("ok" if ok else "FAILED")] += 1
        fault.outcome += "; wiped and restarted" + ("" if ok else f" -> FAILED {err}")
        if not ok:
            self.report.violate(
                "wiped_restart_failed", f"{target} with an empty data dir did not start", [err, *_tail(log)]
            )
            raise ClusterError(f"{target} does not start from an empty data dir: {err}")

    def nemesis(self) -> None:
        p = self.profile
        if p.rounds:
            plan = [k for k in p.kinds for _ in range(p.rounds)]
            self.rng.shuffle(plan)
        else:
            plan = []
        deadline = time.monotonic() + p.seconds
        i = 0
        while True:
            if p.rounds and i >= len(plan):
                break
            if not p.rounds and time.monotonic() >= deadline:
                break
            kind = plan[i] if p.rounds else self.rng.choice(p.kinds)
            i += 1
            time.sleep(self.rng.uniform(*p.gap_s))
            self.check_alive(f"before round {i}")
            self.inject(kind)
        time.sleep(1.0)  # some load on the healed cluster

    def heal(self) -> None:
        assert self.cluster is not None
        for name in list(self.stopped):
            self.proc(name).popen.send_signal(signal.SIGCONT)
        self.stopped.clear()
        for name in list(self.expected_down):
            ok, err, _ = self.restart(name)
            if not ok:
                raise ClusterError(f"cannot restart {name}: {err}")
        self.expected_down.clear()
        self.check_alive("at the end")

    # -- load -----------------------------------------------------------------------------------

    def _worker(self, name: str, step: Callable[[Client, random.Random], None], pause: tuple[float, float]) -> None:
        rng = random.Random(f"{self.profile.seed}/{name}")
        assert self.cluster is not None
        with Client(self.cluster.address, timeout=self.profile.op_timeout) as c:
            while not self.stop_load.is_set():
                try:
                    step(c, rng)
                except Exception as err:  # a harness bug: keep it visible
                    self.worker_errors.append(f"{name}: {type(err).__name__}: {err}")
                    time.sleep(0.5)
                self.stop_load.wait(rng.uniform(*pause))

    def _call(self, op: Op, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except VecshardError as err:
            self.history.finish(op, err)
            return None
        self.history.finish(op, None, result)
        return result

    def step_add(self, c: Client, rng: random.Random, worker: str = "writer") -> None:
        coll = rng.choice((FLAT, IVF))
        ids = self.history.new_ids(rng.randint(1, 6))
        versions = self.history.next_versions(coll, ids)
        op = self.history.begin("add", coll, worker, ids, versions)
        self._call(op, lambda: c.add(coll, ids, vec(ids, versions), payloads=pay(ids, versions)))

    def step_upsert(self, c: Client, rng: random.Random, worker: str = "upserter") -> None:
        coll = rng.choice((FLAT, IVF))
        ids = self.history.pick(coll, rng, rng.randint(1, 4))
        if not ids.size:
            return
        versions = self.history.next_versions(coll, ids)
        op = self.history.begin("upsert", coll, worker, ids, versions)
        self._call(op, lambda: c.add(coll, ids, vec(ids, versions), upsert=True, payloads=pay(ids, versions)))

    def step_remove(self, c: Client, rng: random.Random, worker: str = "remover") -> None:
        coll = rng.choice((FLAT, IVF))
        ids = self.history.pick(coll, rng, rng.randint(1, 3))
        if not ids.size:
            return
        op = self.history.begin("remove", coll, worker, ids)
        self._call(op, lambda: c.remove(coll, ids))

    def step_search(self, c: Client, rng: random.Random) -> None:
        coll = rng.choice((FLAT, IVF))
        nprng = np.random.default_rng(rng.randrange(2**32))
        queries = nprng.random((3, DIM), dtype=np.float32)
        known = self.history.pick(coll, rng, 2)
        if known.size:
            queries = np.vstack([queries, vec(known, 1)])
        op = self.history.begin("search", coll, "searcher")
        res = self._call(op, lambda: c.search(coll, queries, k=5))
        if res is not None:
            op.result = (queries, res.distances, res.ids)

    def step_get(self, c: Client, rng: random.Random) -> None:
        coll = rng.choice((FLAT, IVF))
        ids = self.history.pick(coll, rng, 8)
        if not ids.size:
            return
        op = self.history.begin("get", coll, "reader", ids)
        self._call(op, lambda: c.get(coll, ids, allow_missing=True))

    def step_train(self, c: Client, rng: random.Random) -> None:
        op = self.history.begin("train", IVF, "trainer")
        self._call(op, lambda: c.train(IVF, seed=rng.randrange(1000), timeout=30))

    def cycler(self) -> None:
        rng = random.Random(f"{self.profile.seed}/cycler")
        assert self.cluster is not None
        h = self.history
        with Client(self.cluster.address, timeout=self.profile.op_timeout) as c:
            while not self.stop_load.is_set():
                op = h.begin("create", CYCLE, "cycler")
                self._call(op, lambda: c.create_collection(CYCLE, DIM))
                if op.ok or op.code == "ALREADY_EXISTS":
                    added: list[int] = []
                    for _ in range(rng.randint(1, 4)):
                        if self.stop_load.wait(rng.uniform(0.05, 0.3)):
                            return
                        ids = h.new_ids(rng.randint(1, 5))
                        versions = h.next_versions(CYCLE, ids)
                        add = h.begin("add", CYCLE, "cycler", ids, versions)
                        self._call(add, partial(c.add, CYCLE, ids, vec(ids, versions)))
                        if add.ok:
                            added += ids.tolist()
                    if added and rng.random() < 0.7:
                        gone = np.array(sorted(rng.sample(added, min(2, len(added)))), dtype=np.int64)
                        rm = h.begin("remove", CYCLE, "cycler", gone)
                        self._call(rm, partial(c.remove, CYCLE, gone))
                if self.stop_load.wait(rng.uniform(0.1, 0.6)):
                    return
                op = h.begin("drop", CYCLE, "cycler")
                self._call(op, lambda: c.drop_collection(CYCLE))
                if self.stop_load.wait(rng.uniform(0.05, 0.3)):
                    return

    def start_load(self) -> None:
        workers: list[tuple[str, Callable[[Client, random.Random], None], tuple[float, float]]] = [
            ("writer-1", lambda c, r: self.step_add(c, r, "writer-1"), (0.01, 0.06)),
            ("writer-2", lambda c, r: self.step_add(c, r, "writer-2"), (0.01, 0.06)),
            ("upserter-1", lambda c, r: self.step_upsert(c, r, "upserter-1"), (0.01, 0.05)),
            ("upserter-2", lambda c, r: self.step_upsert(c, r, "upserter-2"), (0.01, 0.05)),
            ("remover", lambda c, r: self.step_remove(c, r, "remover"), (0.03, 0.12)),
            ("searcher", self.step_search, (0.02, 0.08)),
            ("reader", self.step_get, (0.02, 0.08)),
            ("trainer", self.step_train, (3.0, 7.0)),
        ]
        self.threads = [threading.Thread(target=self._worker, args=w, name=w[0], daemon=True) for w in workers]
        self.threads.append(threading.Thread(target=self.cycler, name="cycler", daemon=True))
        for t in self.threads:
            t.start()

    def end_load(self) -> None:
        self.stop_load.set()
        for t in self.threads:
            t.join(timeout=60)
            if t.is_alive():
                self.worker_errors.append(f"{t.name} still running 60 s after the stop")

    # -- the run --------------------------------------------------------------------------------

    def setup_collections(self) -> None:
        assert self.cluster is not None
        with Client(self.cluster.address, timeout=30) as c:
            c.create_collection(FLAT, DIM)
            c.create_collection(IVF, DIM, index="ivf_flat", nlist=NLIST, nprobe=2, train_threshold=300)

    def run(self) -> Report:
        started = time.monotonic()
        self.start_cluster()
        try:
            self.setup_collections()
            self.history = History()
            self.start_load()
            time.sleep(1.5)  # some data before the first fault
            try:
                self.nemesis()
            finally:
                self.heal()
                self.end_load()
            time.sleep(self.profile.quiet_s)  # background rollbacks retry every second
            self.check_alive("after the quiet period")
            Checker(self).check()
            self.report.set_aside_uncommitted()
        finally:
            for name in list(self.stopped):
                self.proc(name).popen.send_signal(signal.SIGCONT)
            assert self.cluster is not None
            self.cluster.stop()
        self.report.seconds = time.monotonic() - started
        for op in self.history.ops:
            self.report.ops[f"{op.kind}/{'ack' if op.ok else op.code.lower()}"] += 1
        for e in self.worker_errors:
            self.report.violate("harness_error", e)
        return self.report


def _tail(path: Path, lines: int = 8) -> list[str]:
    if not path.exists():
        return ["(no log)"]
    text = path.read_text(errors="replace").splitlines()
    return [line[:400] for line in text[-lines:]]


# -- the checker --------------------------------------------------------------------------------------


@dataclass
class State:
    """One replica's partition of a collection: its description and every stored pair."""

    exists: bool
    count: int = 0
    digest: int = 0
    trained: bool = False
    centroids: bytes = b""
    rows: dict[int, np.ndarray] = field(default_factory=dict)
    payloads: dict[int, dict[str, Any]] = field(default_factory=dict)


def shard_state(address: str, coll: str, token: str | None = None) -> State:
    """Asked of the replica directly (with the cluster's internal token, when it has one)."""
    md = [("x-vecshard-internal", token)] if token else None
    with grpc.insecure_channel(address) as ch:
        stub = shard_pb2_grpc.ShardStub(ch)
        listed = stub.ListCollections(pb.ListCollectionsRequest(), timeout=30, metadata=md).collections
        if coll not in [s.config.name for s in listed]:
            return State(False)
        req = pb.DescribeCollectionRequest(name=coll, include_centroids=True)
        d = stub.DescribeCollection(req, timeout=30, metadata=md)
        state = State(True, d.count, d.digest, d.trained, d.centroids.SerializeToString() if d.trained else b"")
        after = -1
        while True:
            export = shard_pb2.ExportRequest(collection=coll, after_id=after, limit=4096)
            page = stub.Export(export, timeout=60, metadata=md)
            ids = wire.unpack_ids(page.ids)
            if not ids.size:
                break
            rows = wire.unpack_matrix(page.vectors)
            state.rows.update(zip(ids.tolist(), rows, strict=True))
            state.payloads.update(zip(ids.tolist(), (payload_from_proto(p) for p in page.payloads), strict=True))
            after = int(ids[-1])
    return state


def _same(a: State, b: State) -> bool:
    if (a.exists, a.count, a.digest, a.trained, a.centroids) != (b.exists, b.count, b.digest, b.trained, b.centroids):
        return False
    return (
        a.rows.keys() == b.rows.keys()
        and all(np.array_equal(a.rows[i], b.rows[i]) for i in a.rows)
        and a.payloads == b.payloads
    )


class Checker:
    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.report = harness.report
        self.history = harness.history
        self.slack = harness.profile.failed_slack
        assert harness.cluster is not None
        self.cluster = harness.cluster
        self.by_id: dict[tuple[str, int], list[tuple[Op, int]]] = defaultdict(list)
        for op in self.history.ops:
            if math.isnan(op.end):  # never finished: unknown outcome
                op.end, op.ok, op.code = self.history.now(), False, "NEVER_FINISHED"
            if op.kind in ("add", "upsert"):
                assert op.versions is not None
                for i, v in zip(op.ids.tolist(), op.versions.tolist(), strict=True):
                    self.by_id[(op.coll, i)].append((op, v))
            elif op.kind == "remove":
                for i in op.ids.tolist():
                    self.by_id[(op.coll, i)].append((op, ABSENT))
        self.faults = self.report.fault_log
        self.acked = {op.seq for op in self.history.ops if op.ok}
        # Writes some Get saw during the run (op seq -> the earliest end of such a Get): they took
        # effect by then. A failed non-upsert Add is left out: its rollback may take it back by design.
        writer = {(c, i, v): op for (c, i), ops in self.by_id.items() for op, v in ops if v != ABSENT}
        self.seen: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
        for op in self.history.ops:
            if op.kind != "get" or not op.ok or op.result is None:
                continue
            for i, v in zip(op.ids.tolist(), decode(op.ids, np.asarray(op.result)).tolist(), strict=True):
                w = writer.get((op.coll, i, v))
                if w is None or (w.kind == "add" and not w.ok):
                    continue
                seen = self.seen[(op.coll, i)]
                seen[w.seq] = min(seen.get(w.seq, math.inf), op.end)

    # -- the per-id model -----------------------------------------------------------------------

    def allowed(
        self, ops: list[tuple[Op, int]], read: Op | None = None, seen: dict[int, float] | None = None
    ) -> set[int]:
        """The values the id may hold: at the end, or (read=) as seen by a read during the run.

        Op X may be the last to take effect iff no op Y that certainly took effect started after X's
        latest possible effect (Y is then certainly later; X itself never qualifies, as X.start <=
        X.latest). Acknowledged ops certainly took effect; with `seen` (op seq -> end of a Get that
        saw its value) so did those, by that time, which also bounds their latest effect. For a read
        R, only ops that started before R ended are possible, and only ops known to have taken
        effect before R started are certain.
        """
        seen = seen or {}

        def latest(op: Op) -> float:
            return min(op.latest(self.slack), seen.get(op.seq, math.inf))

        if read is None:
            certain = [op for op, _ in ops if op.ok or op.seq in seen]
            possible = ops
        else:
            certain = [
                op for op, _ in ops if (op.ok and op.end < read.start) or seen.get(op.seq, math.inf) < read.start
            ]
            possible = [(op, v) for op, v in ops if op.start <= read.end]
        newest = max((op.start for op in certain), default=-math.inf)
        out = {v for op, v in possible if newest <= latest(op)}
        if not certain:
            out.add(ABSENT)
        return out

    def judge(self, coll: str, i: int, v: int, read: Op | None = None) -> tuple[str | None, set[int]]:
        """(violation kind or None, the allowed values) for value v of id i, at the end or by a read."""
        ops = self.by_id[(coll, i)]
        allowed = self.allowed(ops, read)
        if v not in allowed:
            return ("stale_read" if read is not None else self.classify(v, allowed, ops)), allowed
        seen = self.seen[(coll, i)]
        allowed = self.allowed(ops, read, seen)
        if v not in allowed:  # only what Gets saw rules it out: a write seen by a client was undone
            acked = {seq: t for seq, t in seen.items() if seq in self.acked}
            if v in self.allowed(ops, read, acked):  # ... and only a failed write's being seen does
                return ("uncommitted_read" if read is not None else "uncommitted_write_undone"), allowed
            return ("nonlinearizable_read" if read is not None else "observed_write_undone"), allowed
        return None, allowed

    def repro(self, coll: str, i: int, observed: dict[str, int], allowed: set[int]) -> list[str]:
        ops = self.by_id[(coll, i)]
        lines = [
            f"seed {self.h.profile.seed}, profile {self.h.profile.name}; observed {observed}; allowed "
            f"{sorted(allowed)} (version 0 = absent)",
            "op history of the id:",
        ]
        seen = self.seen[(coll, i)]
        lines += [
            f"  {op.describe()} version {v if v else 'remove'}"
            + (f" (seen by a Get that ended at {seen[op.seq]:.3f})" if op.seq in seen else "")
            for op, v in ops
        ]
        g = int(shard_of(np.array([i]), SHARDS)[0])
        group = {p.name for p in self.cluster.groups[g]} | {"coordinator"}

        def overlaps(f: Fault, lo: float, hi: float) -> bool:
            return f.start <= hi and (math.isnan(f.end) or f.end >= lo)

        # Faults on the id's group or the coordinator: the last one before each op, those during it
        # (or, for a failed op, during the time it may still take effect), and the next ones after.
        near: list[Fault] = []
        for op, _ in ops:
            before = [f for f in self.faults if f.target in group and f.end < op.start]
            during = [f for f in self.faults if f.target in group and overlaps(f, op.start, op.latest(self.slack))]
            near += before[-1:] + during
        last = max(op.latest(self.slack) for op, _ in ops)
        after = [f for f in self.faults if f.start > last]
        later = [f for f in after if f.target == "coordinator"][:2]
        later += [f for f in after if f.target in group and f.target != "coordinator"][:3]
        near = sorted({id(f): f for f in near + later}.values(), key=lambda f: f.start)
        lines.append(f"faults on its group (shard-{g}) and the coordinator, before/during/after its ops:")
        lines += [f"  {f.describe()}" for f in near[:20]] or ["  none"]
        return lines

    @staticmethod
    def classify(observed: int, allowed: set[int], ops: list[tuple[Op, int]]) -> str:
        written = {v for _, v in ops}
        if observed == GARBAGE or (observed != ABSENT and observed not in written):
            return "stored_vector_of_no_write"
        if observed == ABSENT:
            return "acknowledged_write_lost"
        if allowed == {ABSENT}:
            return "acknowledged_remove_undone"
        return "acknowledged_upsert_undone"

    # -- checks ---------------------------------------------------------------------------------

    def check(self) -> None:
        # Replicas repair themselves in the background (resyncs of known misses): give them up to
        # converge_s after the quiet period before comparing.
        started = time.monotonic()
        while True:
            states = {coll: self.replica_states(coll) for coll in (FLAT, IVF, CYCLE)}
            if all(_same(*group) for groups in states.values() for group in groups):
                break
            if time.monotonic() - started > self.h.profile.converge_s:
                break
            time.sleep(1.0)
        self.report.checked["seconds waited for the replicas to agree"] += round(time.monotonic() - started)
        for coll in (FLAT, IVF):
            agree = self.check_replicas(coll, states[coll])
            self.check_ids(coll, states[coll])
            self.check_coordinator(coll, states[coll], agree)
        self.check_cycle(states[CYCLE])
        self.check_failed_adds(states)
        self.check_online_reads()

    def replica_states(self, coll: str) -> list[list[State]]:
        host = getattr(self.cluster, "shard_host", self.cluster.host)
        token = getattr(self.cluster, "internal_token", None)
        return [[shard_state(f"{host}:{p.port}", coll, token) for p in group] for group in self.cluster.groups]

    def check_replicas(self, coll: str, states: list[list[State]]) -> bool:
        agree = True
        for g, group in enumerate(states):
            a, b = group[0], group[1]
            self.report.checked["replica pairs compared"] += 1
            problems = []
            if a.exists != b.exists:
                problems.append(f"exists {a.exists} vs {b.exists}")
            else:
                if (a.count, a.digest) != (b.count, b.digest):
                    problems.append(f"count/digest {a.count}/{a.digest:#x} vs {b.count}/{b.digest:#x}")
                if a.trained != b.trained:
                    problems.append(f"trained {a.trained} vs {b.trained}")
                elif a.centroids != b.centroids:
                    problems.append("different centroids")
                diff = sorted(
                    i
                    for i in set(a.rows) | set(b.rows)
                    if i not in a.rows or i not in b.rows or not np.array_equal(a.rows[i], b.rows[i])
                )
                if diff:
                    problems.append(f"{len(diff)} ids differ")
            if problems:
                agree = False
                r0, r1 = (p.name for p in self.cluster.groups[g])
                details = [f"seed {self.h.profile.seed}, profile {self.h.profile.name}: " + "; ".join(problems)]
                ids_differ = [
                    i
                    for i in sorted(set(a.rows) | set(b.rows))
                    if i not in a.rows or i not in b.rows or not np.array_equal(a.rows[i], b.rows[i])
                ]
                for i in ids_differ[:3]:
                    seen = {r0: self._version(i, a), r1: self._version(i, b)}
                    details += self.repro(coll, i, seen, self.allowed(self.by_id[(coll, i)]))
                self.report.violate("replicas_disagree", f"{coll}: {r0} and {r1} differ", details)
        return agree

    @staticmethod
    def _version(i: int, state: State) -> int:
        if i not in state.rows:
            return ABSENT
        return int(decode(np.array([i]), state.rows[i][None, :])[0])

    def check_ids(self, coll: str, states: list[list[State]]) -> None:
        touched = np.array(sorted(i for (c, i) in self.by_id if c == coll), dtype=np.int64)
        owner = shard_of(touched, SHARDS) if touched.size else np.empty(0, np.int64)
        bad: dict[str, int] = Counter()
        for g, group in enumerate(states):
            ids = touched[owner == g]
            for r, state in enumerate(group):
                name = self.cluster.groups[g][r].name
                foreign = sorted(set(state.rows) - set(ids.tolist()))
                for i in foreign[:5]:
                    self.report.violate(
                        "stored_vector_of_no_write",
                        f"{coll}: {name} stores id {i}, never written (or on the wrong shard)",
                    )
                rows = np.array([state.rows.get(i, np.full(DIM, np.nan, np.float32)) for i in ids.tolist()])
                got = decode(ids, rows.reshape(-1, DIM))
                for i, v in zip(ids.tolist(), got.tolist(), strict=True):
                    kind, allowed = self.judge(coll, i, v)
                    self.report.checked[f"{coll} ids checked on a replica"] += 1
                    if v >= 1 and kind is None and state.payloads.get(i) != pay(i, v)[0]:
                        kind, allowed = "payload_of_another_write", {v}
                    if kind is not None:
                        bad[kind] += 1
                        if bad[kind] <= 6:
                            self.report.violate(
                                kind,
                                f"{coll} id {i} on {name}: holds version {v}, allowed {sorted(allowed)}",
                                self.repro(coll, i, {name: v}, allowed),
                            )
                        else:
                            self.report.violations.append(
                                Violation(kind, f"{coll} id {i} on {name} (details of the first 6 of this kind only)")
                            )
        for kind in ("add", "upsert", "remove"):
            self.report.checked[f"acknowledged {kind}s checked"] += sum(
                1 for op in self.history.ops if op.coll == coll and op.kind == kind and op.ok
            )
        certain = sum(1 for (c, _), ops in self.by_id.items() if c == coll and len(self.allowed(ops)) == 1)
        self.report.checked[f"{coll} ids with one allowed state"] += certain

    def check_coordinator(self, coll: str, states: list[list[State]], agree: bool) -> None:
        touched = np.array(sorted(i for (c, i) in self.by_id if c == coll), dtype=np.int64)
        with Client(self.cluster.address, timeout=60) as c:
            rows = (
                np.vstack(
                    [c.get(coll, touched[s : s + 4096], allow_missing=True) for s in range(0, len(touched), 4096)]
                )
                if touched.size
                else np.empty((0, DIM))
            )
            got = decode(touched, rows)
            wrong = 0
            for i, v in zip(touched.tolist(), got.tolist(), strict=True):
                kind, allowed = self.judge(coll, i, v)
                self.report.checked[f"{coll} ids checked through the coordinator"] += 1
                if kind is not None:
                    wrong += 1
                    if wrong <= 3:
                        self.report.violate(
                            kind,
                            f"{coll} id {i} read through the coordinator: version {v}",
                            self.repro(coll, i, {"coordinator": v}, allowed),
                        )
            if not agree:
                self.report.checked[f"{coll} searches skipped (replicas disagree)"] += 1
                return
            stored = {i: row for group in states for i, row in group[0].rows.items()}
            info = c.describe(coll)
            self.report.checked[f"{coll} counts compared"] += 1
            if info.count != len(stored):
                self.report.violate(
                    "count_mismatch", f"{coll}: the coordinator counts {info.count}, the replicas store {len(stored)}"
                )
            ids = np.array(sorted(stored), dtype=np.int64)
            data = np.array([stored[i] for i in ids.tolist()], dtype=np.float32).reshape(-1, DIM)
            nprng = np.random.default_rng(self.h.profile.seed)
            queries = nprng.random((24, DIM), dtype=np.float32)
            if len(ids):
                picks = data[nprng.choice(len(ids), min(16, len(ids)), replace=False)]
                queries = np.vstack([queries, picks, picks + 0.001]).astype(np.float32)
            k = 10
            res = c.search(coll, queries, k=k, nprobe=NLIST if coll == IVF else None)
            problems = search_problems(queries, res.distances, res.ids, ids, data, k)
            self.report.checked[f"{coll} searches against brute force"] += len(queries)
            if problems:
                self.report.violate(
                    "search_differs_from_brute_force",
                    f"{coll}: {len(problems)} of {len(queries)} queries (trained={info.trained})",
                    problems[:5],
                )

    def check_failed_adds(self, states: dict[str, list[list[State]]]) -> None:
        """A failed Add with no fault near it leaves nothing (docs/operations.md)."""
        for op in self.history.ops:
            if op.kind != "add" or op.ok or op.coll == CYCLE:
                continue
            quiet = not any(
                f.start <= op.end + 2.0 and (math.isnan(f.end) or f.end >= op.start - 2.0) for f in self.faults
            )
            self.report.checked["failed adds" + (" with no fault near (must leave nothing)" if quiet else "")] += 1
            owner = shard_of(op.ids, SHARDS)
            left = [
                (i, self.cluster.groups[g][r].name)
                for i, g in zip(op.ids.tolist(), owner.tolist(), strict=True)
                for r in range(REPLICAS)
                if i in states[op.coll][g][r].rows
            ]
            if left:
                self.report.checked["failed adds that left ids"] += 1
                if quiet:
                    self.report.violate(
                        "failed_add_left_ids",
                        f"{op.coll}: {op.describe()} left {left}",
                        self.repro(op.coll, left[0][0], {}, set()),
                    )

    def check_online_reads(self) -> None:
        """Searches and Gets during the run returned only vectors that some write had sent, and (write
        quorum all) every Get saw a value that the ops certainly before it and those concurrent
        with it allow: no acknowledged write was invisible to a later read."""
        written: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
        for (coll, i), ops in self.by_id.items():
            written[(coll, i)] = [(op.start, v) for op, v in ops if v != ABSENT]
        stale: Counter[str] = Counter()
        for op in self.history.ops:
            if not op.ok or op.kind not in ("search", "get") or op.result is None:
                continue
            if op.kind == "get":
                self.report.checked["gets during the run checked"] += 1
                got = decode(op.ids, np.asarray(op.result))
                for i, v in zip(op.ids.tolist(), got.tolist(), strict=True):
                    if v != ABSENT and not any(s <= op.end and w == v for s, w in written[(op.coll, i)]):
                        self.report.violate(
                            "read_of_no_write", f"{op.coll}: {op.describe()} returned version {v} of id {i}"
                        )
                        continue
                    kind, allowed = self.judge(op.coll, i, v, read=op)
                    if kind is None:
                        continue
                    # With write quorum 1 a read may hit a replica the write skipped: stale by design.
                    if self.h.profile.quorum == 1:
                        self.report.checked[f"{kind}s during the run (allowed with quorum 1)"] += 1
                        continue
                    stale[kind] += 1
                    if stale[kind] <= 5:
                        details = self.repro(op.coll, i, {"get": v}, allowed)
                        self.report.violate(kind, f"{op.coll}: {op.describe()} read version {v} of id {i}", details)
                    else:
                        self.report.violations.append(Violation(kind, f"{op.coll} id {i} (details: first 5 only)"))
                continue
            self.report.checked["searches during the run checked"] += 1
            queries, D, I = op.result
            for q in range(len(queries)):
                for i, d in zip(I[q].tolist(), D[q].tolist(), strict=True):
                    if i < 0:
                        continue
                    versions = [w for s, w in written[(op.coll, i)] if s <= op.end]
                    if not versions:
                        self.report.violate(
                            "read_of_no_write", f"{op.coll}: {op.describe()} returned id {i}, never written before"
                        )
                        continue
                    dists = ((vec(np.full(len(versions), i), versions) - queries[q]) ** 2).sum(axis=1)
                    if not np.isclose(dists, d, rtol=1e-4, atol=1e-5).any():
                        self.report.violate(
                            "read_of_no_write",
                            f"{op.coll}: {op.describe()} returned id {i} at "
                            f"distance {d}, which no written version of it has",
                        )

    def check_cycle(self, states: list[list[State]]) -> None:
        """The dropped and re-created collection: existence, no resurrection, acknowledged adds kept."""
        cd = [op for op in self.history.ops if op.coll == CYCLE and op.kind in ("create", "drop")]
        cd_values = [(op, 1 if op.kind == "create" else 0) for op in cd]
        may_exist = self.allowed(cd_values)
        self.report.checked["cycle create/drop ops checked"] += len(cd)
        acked_drops = [op for op in cd if op.kind == "drop" and op.ok]
        adds = {i: op for op in self.history.ops if op.coll == CYCLE and op.kind == "add" for i in op.ids.tolist()}
        flat = [(self.cluster.groups[g][r].name, s) for g, group in enumerate(states) for r, s in enumerate(group)]
        exists = {name: s.exists for name, s in flat}
        history = [f"seed {self.h.profile.seed}; create/drop history:", *(f"  {op.describe()}" for op in cd[-6:])]
        for g, group in enumerate(states):
            if group[0].exists != group[1].exists:
                self.report.violate(
                    "replicas_disagree", f"{CYCLE} exists on one replica of group {g} only: {exists}", history
                )
        if len(set(exists.values())) > 1 and len(may_exist) == 1:
            self.report.violate("collection_state_wrong", f"{CYCLE} exists on some groups only: {exists}", history)
        elif len(set(exists.values())) > 1:  # a failed create/drop need not be atomic across groups; a retry ends it
            self.report.notes.append(f"{CYCLE} exists on some groups only, after a failed create/drop: {exists}")
        for name, s in flat:
            if int(s.exists) not in may_exist:
                self.report.violate(
                    "collection_state_wrong",
                    f"{CYCLE} exists={s.exists} on {name}, allowed {sorted(may_exist)}",
                    [f"  {op.describe()}" for op in cd[-6:]],
                )
            for i, row in s.rows.items():
                add = adds.get(i)
                v = int(decode(np.array([i]), row[None, :])[0])
                if add is None or v == GARBAGE:
                    self.report.violate("stored_vector_of_no_write", f"{CYCLE} id {i} on {name}")
                elif any(d.start > add.latest(self.slack) for d in acked_drops):  # a drop certainly after it
                    drop = next(d for d in acked_drops if d.start > add.latest(self.slack))
                    self.report.violate(
                        "dropped_data_resurrected",
                        f"{CYCLE} id {i} on {name}, added by {add.describe()}, dropped by {drop.describe()}",
                        [f"seed {self.h.profile.seed}", *(f"  {op.describe()}" for op in cd if op.start >= add.start)],
                    )
        if may_exist != {1}:
            return
        for i, add in adds.items():
            if not add.ok or any(op.latest(self.slack) >= add.start for op in cd):
                continue
            g = int(shard_of(np.array([i]), SHARDS)[0])
            for r, s in enumerate(states[g]):
                self.report.checked[f"{CYCLE} ids checked on a replica"] += 1
                v = self._version(i, s)
                kind, allowed = self.judge(CYCLE, i, v)
                if kind is not None:
                    name = self.cluster.groups[g][r].name
                    self.report.violate(
                        kind,
                        f"{CYCLE} id {i} on {name}",
                        self.repro(CYCLE, i, {name: v}, allowed),
                    )


def search_problems(
    queries: np.ndarray, D: np.ndarray, I: np.ndarray, ids: np.ndarray, data: np.ndarray, k: int
) -> list[str]:
    """Differences from an exact top-k (L2 squared), tolerant of ties and float rounding only."""
    problems = []
    pos = {int(i): n for n, i in enumerate(ids.tolist())}
    exact = ((queries[:, None, :].astype(np.float64) - data[None, :, :].astype(np.float64)) ** 2).sum(-1)
    want = min(k, len(ids))
    for q in range(len(queries)):
        got = [(int(i), float(d)) for i, d in zip(I[q], D[q], strict=True) if i >= 0]
        kth = float(np.sort(exact[q])[want - 1]) if want else math.inf
        tol = 1e-4 * max(1.0, kth) + 1e-5
        msg = []
        if len(got) != want:
            msg.append(f"{len(got)} hits, expected {want}")
        if len({i for i, _ in got}) != len(got):
            msg.append("repeated ids")
        for i, d in got:
            if i not in pos:
                msg.append(f"id {i} is not stored")
                continue
            true = exact[q, pos[i]]
            if abs(true - d) > tol:
                msg.append(f"id {i} at distance {d}, its stored vector is at {true}")
            if true > kth + tol:
                msg.append(f"id {i} at {true} is not among the {want} nearest (k-th at {kth})")
        if any(b[1] < a[1] - tol for a, b in zip(got, got[1:], strict=False)):
            msg.append("distances not ascending")
        if msg:
            top = np.argsort(exact[q], kind="stable")[:want]
            problems.append(
                f"query {q}: " + "; ".join(msg[:4]) + f" | got {[i for i, _ in got]} expected {ids[top].tolist()}"
            )
    return problems


def run_profile(profile: Profile, work_dir: Path, log: Callable[[str], None] = print) -> Report:
    log(f"-- nemesis {profile.name}: seed {profile.seed}, data in {work_dir}")
    return Harness(profile, work_dir, log).run()


def env_minutes() -> float:
    return float(os.environ.get("VECSHARD_NEMESIS_MINUTES", "0") or 0)
