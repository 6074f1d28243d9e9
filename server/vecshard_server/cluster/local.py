"""A local cluster: N shard worker processes and one coordinator process on this machine.

`vecshard serve` runs one; `vecshard bench` and the tests run them too, on port 0. Each child writes the
port it bound to a port file once it is serving, so a cluster on ephemeral ports needs no guessing.

It imports nothing of vecshard_server: it starts the roles as processes (`python -m vecshard_server ...`),
so it sits below both cli/ and bench/, which use it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    pass


class Process:
    """One child process of the cluster and the port it reports."""

    def __init__(
        self,
        name: str,
        args: list[str],
        port_file: Path,
        env: dict[str, str] | None,
        stdout: Path | None = None,
        stderr: Path | None = None,
    ) -> None:
        self.name = name
        self.port_file = port_file
        self.args = args
        self.env = env
        self.stdout, self.stderr = stdout, stderr  # files to capture the child's output into
        self.port = 0
        self.popen = self._spawn(args)

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        self.port_file.parent.mkdir(parents=True, exist_ok=True)  # also after the cluster's stop removed it
        self.port_file.unlink(missing_ok=True)
        out = open(self.stdout, "ab") if self.stdout else None  # noqa: SIM115 - handed to the child
        err = open(self.stderr, "ab") if self.stderr else None  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "vecshard_server", *args, "--port-file", str(self.port_file), "--exit-with-parent"],
            env={**os.environ, **(self.env or {})},
            # Own session: a Ctrl-C reaches only the parent, which stops the children in order.
            start_new_session=True,
            stdout=out,
            stderr=err,
        )

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush or snapshot."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()

    def restart(self, timeout: float = 60.0, extra: list[str] | None = None) -> int:
        """Start the process again on the port it had, and wait until it serves."""
        args = list(self.args) + (extra or [])
        args[args.index("--port") + 1] = str(self.port)
        self.popen = self._spawn(args)
        return self.wait_port(time.monotonic() + timeout)

    def wait_port(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ClusterError(f"{self.name} exited with code {self.popen.returncode} before serving")
            if self.port_file.exists():
                self.port = int(self.port_file.read_text())
                return self.port
            time.sleep(0.02)
        raise ClusterError(f"{self.name} did not start serving in time")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs: killing it", self.name, timeout)
            self.popen.kill()
            return self.popen.wait()


class LocalCluster:
    """Start with `with LocalCluster(shards=2) as cluster: Client(cluster.address)`."""

    def __init__(
        self,
        shards: int = 2,
        replicas: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        log_level: str = "INFO",
        metrics_port: int = 0,
        internal_token: str | None = None,
        log_dir: Path | None = None,
        shard_mode: str = "remote",
        ui: bool = False,
        ui_port: int | None = None,
        ui_host: str = "127.0.0.1",
        ui_insecure: bool = False,
    ) -> None:
        """metrics_port: when set, the coordinator serves Prometheus metrics on it and shard process i
        (in start order) on metrics_port + 1 + i; 0 turns metrics off in every child, whatever
        VECSHARD_METRICS_PORT says (children would otherwise all try to bind the same port).

        Shards listen on 127.0.0.1 whatever `host` is (only the coordinator listens on `host`);
        internal_token: the shared secret the shards then require of every caller (the coordinator
        and replica peers get it through their environment).
        log_dir: each child's stdout and stderr go to log_dir/<name>.0.log (appended on restarts).
        shard_mode: "remote" (a process per shard, called over gRPC) or "local" (the shards in the
        coordinator's process, called directly; one replica each). The data dir layout is the same.
        ui: the coordinator serves the web dashboard on ui_host:ui_port (None: the coordinator's default
        port, skipped with a warning when in use; 0: a free port); `ui_url` says where."""
        if shards < 1 or replicas < 1:
            raise ClusterError("a cluster needs at least one shard of at least one replica")
        if shard_mode not in ("remote", "local"):
            raise ClusterError(f"shard_mode must be 'remote' or 'local', got {shard_mode!r}")
        if shard_mode == "local" and replicas > 1:
            raise ClusterError(
                "local shards have one replica each (replicas need their own processes to fail "
                "independently): use shard_mode='remote' with replicas"
            )
        self.shard_mode = shard_mode
        self.num_shards = shards
        self.num_replicas = replicas
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.env = {**(env or {}), **({"VECSHARD_INTERNAL_TOKEN": internal_token} if internal_token else {})}
        self.internal_token = internal_token
        self.log_dir = log_dir
        self.shard_host = "127.0.0.1"
        self.log_level = log_level
        self.metrics_port = metrics_port
        self.metrics_ports: dict[str, int] = {}  # process name -> its metrics port, once started
        self.shards: list[Process] = []  # every shard process, group by group
        self.groups: list[list[Process]] = []  # the replicas of each shard group
        self.coordinator: Process | None = None
        self.ui, self.ui_port, self.ui_host, self.ui_insecure = ui, ui_port, ui_host, ui_insecure
        self.ui_url: str | None = None  # the dashboard's address, once started (None: none)
        self._run_dir = Path(tempfile.mkdtemp(prefix="vecshard-run-"))

    @property
    def address(self) -> str:
        if self.coordinator is None:
            raise ClusterError("the cluster is not started")
        return f"{self.host}:{self.coordinator.port}"

    @property
    def shard_addresses(self) -> list[str]:
        """One entry per shard group: its replicas' addresses, comma-separated (the --shard format)."""
        return [",".join(f"{self.shard_host}:{p.port}" for p in group) for group in self.groups]

    def _peers(self, group: list[Process], replica: Process | None) -> list[str]:
        return [arg for p in group if p is not replica and p.port for arg in ("--peer", f"{self.shard_host}:{p.port}")]

    def restart_replica(self, group: int, replica: int, timeout: float = 60.0) -> int:
        """Restart one replica (after kill()); it catches up from its peers before serving."""
        proc = self.groups[group][replica]
        proc.args = [
            a for a, b in zip(proc.args, ["", *proc.args[:-1]], strict=True) if a != "--peer" and b != "--peer"
        ]
        return proc.restart(timeout, extra=self._peers(self.groups[group], proc))

    def _check_layout(self) -> None:
        """Each collection records its placement over groups 0..S-1: reopening data with fewer groups than
        it was made with would lose ids (more is fine: a reshard may use them)."""
        if self.data_dir is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        layout = self.data_dir / "cluster.json"
        if layout.exists():
            recorded = json.loads(layout.read_text())
            if self.shard_mode == "local":  # the coordinator also serves every shard-i dir a reshard added
                dirs = [int(p.name[6:]) + 1 for p in self.data_dir.glob("shard-*") if p.name[6:].isdigit()]
                self.num_shards = max([self.num_shards, recorded["shards"], *dirs])
            if recorded["shards"] > self.num_shards or recorded.get("replicas", 1) != self.num_replicas:
                raise ClusterError(
                    f"{self.data_dir} holds a cluster of {recorded['shards']} shards x {recorded.get('replicas', 1)} "
                    f"replicas; start it with --shards {recorded['shards']} --replicas {recorded.get('replicas', 1)} "
                    "or use another --data-dir"
                )
        layout.write_text(json.dumps({"shards": self.num_shards, "replicas": self.num_replicas}) + "\n")

    def start(self, timeout: float = 60.0) -> LocalCluster:
        self._check_layout()
        deadline = time.monotonic() + timeout
        common = ["--log-level", self.log_level]
        try:
            self.groups = [[] for _ in range(self.num_shards if self.shard_mode == "remote" else 0)]
            processes = self.num_replicas if self.shard_mode == "remote" else 0
            for r in range(processes):  # replica r starts knowing replicas 0..r-1 as peers
                for g in range(self.num_shards):
                    name = f"shard-{g}" if self.num_replicas == 1 else f"shard-{g}-r{r}"
                    args = ["shard", "--host", self.shard_host, "--port", "0", "--name", name, *common]
                    args += ["--metrics-port", str(self._metrics_port_for(name, 1 + len(self.shards)))]
                    if self.data_dir is not None:
                        args += ["--data-dir", str(self.data_dir / name)]
                    proc = self._process(name, args + self._peers(self.groups[g], None), self._shard_env())
                    self.groups[g].append(proc)
                    self.shards.append(proc)
                for g in range(self.num_shards):
                    self.groups[g][r].wait_port(deadline)
            args = ["coordinator", "--host", self.host, "--port", str(self.port), *common]
            args += ["--metrics-port", str(self._metrics_port_for("coordinator", 0))]
            for addr in self.shard_addresses:
                args += ["--shard", addr]
            if self.shard_mode == "local":
                args += ["--local-shards", str(self.num_shards)]
                if self.data_dir is not None:
                    args += ["--data-dir", str(self.data_dir)]
            self.coordinator = self._process("coordinator", args + self._ui_args())
            self.coordinator.wait_port(deadline)
            self._read_ui_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _ui_args(self) -> list[str]:
        if not self.ui:
            return ["--no-ui"]
        args = ["--ui-host", self.ui_host, "--ui-port-file", str(self._run_dir / "coordinator.ui-port")]
        args += ["--ui-port", str(self.ui_port)] if self.ui_port is not None else []
        return args + (["--ui-insecure"] if self.ui_insecure else [])

    def _read_ui_port(self) -> None:
        """The dashboard writes its port before the coordinator serves (no file: it is off)."""
        path = self._run_dir / "coordinator.ui-port"
        if self.ui and path.exists():
            host = "127.0.0.1" if self.ui_host in ("0.0.0.0", "") else self.ui_host
            host = f"[{host}]" if ":" in host else host
            scheme = "https" if {**os.environ, **self.env}.get("VECSHARD_TLS_CERT") else "http"
            self.ui_url = f"{scheme}://{host}:{int(path.read_text())}/"

    def _process(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.log_dir / f"{name}.0.log" if self.log_dir is not None else None
        return Process(name, args, self._run_dir / f"{name}.port", env or self._env(), stdout=log, stderr=log)

    def _env(self) -> dict[str, str]:
        """Every child's: faiss's OpenMP threads sleep when idle (the default spins for a while, taking
        CPU from the other processes of this host: the probe searches of `vecshard bench --abuse` waited),
        and two malloc arenas (glibc's per-thread arenas each kept freed batch buffers: a shard held
        255 bytes a vector beyond its IVF_PQ codes, 143 with two)."""
        given = {**os.environ, **self.env}
        defaults = {"OMP_WAIT_POLICY": "PASSIVE", "MALLOC_ARENA_MAX": "2"}
        return {**{k: v for k, v in defaults.items() if k not in given}, **self.env}

    def _shard_env(self) -> dict[str, str]:
        """A shard's: also the host's cores shared among its shard processes (OpenMP would give each
        every core, and S x R processes on C cores then oversubscribe them C x S x R ways)."""
        given = {**os.environ, **self.env}
        threads = max(1, (os.cpu_count() or 1) // (self.num_shards * self.num_replicas))
        return {**({} if "OMP_NUM_THREADS" in given else {"OMP_NUM_THREADS": str(threads)}), **self._env()}

    def _metrics_port_for(self, name: str, offset: int) -> int:
        if not self.metrics_port:
            return 0
        port = self.metrics_port + offset
        if port > 65535:
            raise ClusterError(f"--metrics-port {self.metrics_port} leaves no room for {name}: choose a lower port")
        self.metrics_ports[name] = port
        return port

    def processes(self) -> list[Process]:
        return [p for p in [self.coordinator, *self.shards] if p is not None]

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM the coordinator, then the shards (they snapshot on the way out); returns exit codes."""
        codes: dict[str, int] = {}
        if self.coordinator is not None:
            self.coordinator.terminate()
            codes[self.coordinator.name] = self.coordinator.wait(timeout)
        for s in self.shards:
            s.terminate()
        for s in self.shards:
            codes[s.name] = s.wait(timeout)
        shutil.rmtree(self._run_dir, ignore_errors=True)
        return codes

    def poll(self) -> Process | None:
        """A child that has exited, if any."""
        return next((p for p in self.processes() if p.popen.poll() is not None), None)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
