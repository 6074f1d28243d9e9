"""The `vecshard` command line (click)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from vecshard_server.cli.client import COMMANDS

if TYPE_CHECKING:
    from vecshard_server.common.config import Settings

LOG_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="VECSHARD_LOG_FORMAT",
    help="json: one JSON object per line, with request ids",
)
METRICS_PORT = click.option(
    "--metrics-port",
    default=0,
    type=click.IntRange(0, 65535),
    envvar="VECSHARD_METRICS_PORT",
    help="serve Prometheus metrics on this port (0: off)",
)


INSECURE = click.option(
    "--insecure", is_flag=True, help="listen beyond loopback without internal authentication (not for production)"
)


MAX_PAYLOAD_BYTES = click.option(
    "--max-payload-bytes",
    type=click.IntRange(16),
    envvar="VECSHARD_MAX_PAYLOAD_BYTES",
    help="largest encoded payload of one point, stored text included (payloads stay in the shards' memory: "
    "docs/limits.md)  [default: 1 MiB]",
)
DEFAULT_UI_PORT = 50080


def UI_OPTIONS(command: Any) -> Any:  # noqa: N802 - used as a decorator, like click's
    """The dashboard's options (docs/dashboard.md)."""
    for option in reversed(
        [
            click.option(
                "--ui-port",
                default=DEFAULT_UI_PORT,
                show_default=True,
                type=click.IntRange(0, 65535),
                envvar="VECSHARD_UI_PORT",
                help="serve the web dashboard on this port (0: any free port); the default port, when in use, is "
                "skipped with a warning",
            ),
            click.option(
                "--ui-host",
                default="127.0.0.1",
                show_default=True,
                envvar="VECSHARD_UI_HOST",
                help="address the dashboard listens on; beyond loopback it needs API keys and TLS (docs/dashboard.md)",
            ),
            click.option("--no-ui", is_flag=True, help="serve no dashboard"),
            click.option(
                "--ui-insecure", is_flag=True, help="let the dashboard listen beyond loopback without API keys or TLS"
            ),
        ]
    ):
        command = option(command)
    return command


def _ui_port_given() -> bool:
    """Whether --ui-port was asked for (a flag or VECSHARD_UI_PORT), not the default."""
    source = click.get_current_context().get_parameter_source("ui_port")
    return source not in (None, click.core.ParameterSource.DEFAULT)


MODELS = click.option(
    "--models",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="embedding model registry (TOML/JSON); the built-in minilm needs none",
)


def ROLE_OPTIONS(command: Any) -> Any:  # noqa: N802 - used as a decorator, like click's
    """The options every server role shares: port file, parent watch, logging and metrics."""
    for option in reversed(
        [
            click.option("--port-file", type=click.Path(path_type=Path), help="write the bound port here once serving"),
            click.option("--exit-with-parent", is_flag=True, hidden=True, help="stop when the parent process exits"),
            click.option("--log-level", default="INFO", show_default=True, type=LOG_LEVELS),
            LOG_FORMAT,
            METRICS_PORT,
        ]
    ):
        command = option(command)
    return command


def _logging(level: str, role: str, log_format: str = "text") -> None:
    from vecshard_server.common.observability import configure_logging

    configure_logging(level, role, log_format == "json")


def _settings(**overrides: Any) -> Settings:
    try:
        from vecshard_server.common.config import Settings
    except ImportError as err:
        raise click.ClickException(
            f"the server needs the 'server' extra ({err.name} is missing): pip install 'vecshard[server]'"
        ) from None
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as err:  # pydantic ValidationError: a bad VECSHARD_* variable
        raise click.ClickException(f"invalid VECSHARD_* setting: {err}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vecshard")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="VECSHARD_CONFIG",
    help="TOML settings file (VECSHARD_* variables and flags take precedence over it)",
)
def cli(config: Path | None) -> None:
    """vecshard: a gRPC vector search server with a sharded faiss index."""
    if config is not None:
        os.environ["VECSHARD_CONFIG"] = str(config.resolve())  # child processes read it too


@cli.command()
@click.option("--shards", default=2, show_default=True, type=click.IntRange(1, 64), help="shard groups")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(1, 8), help="replicas per shard group")
@click.option(
    "--shard-mode",
    type=click.Choice(["auto", "local", "remote"]),
    default="auto",
    show_default=True,
    help="local: the shards run inside the coordinator's process, called without gRPC (fastest); remote: a process "
    "per shard replica; auto: local unless --replicas > 1",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="address the coordinator listens on")
@click.option("--port", default=50051, show_default=True, type=click.IntRange(0, 65535), help="coordinator port")
@click.option(
    "--data-dir",
    default="./vecshard-data",
    show_default=True,
    type=click.Path(path_type=Path),
    help="where shards keep their data (one folder per shard)",
)
@MODELS
@MAX_PAYLOAD_BYTES
@click.option("--log-level", default="INFO", show_default=True, type=LOG_LEVELS)
@LOG_FORMAT
@click.option(
    "--metrics-port",
    default=0,
    type=click.IntRange(0, 65535),
    envvar="VECSHARD_METRICS_PORT",
    help="metrics: the coordinator on this port, shard process i on port+1+i (0: off)",
)
@UI_OPTIONS
def serve(
    shards: int,
    replicas: int,
    shard_mode: str,
    host: str,
    port: int,
    data_dir: Path,
    models: Path | None,
    max_payload_bytes: int | None,
    log_level: str,
    log_format: str,
    metrics_port: int,
    ui_port: int,
    ui_host: str,
    no_ui: bool,
    ui_insecure: bool,
) -> None:
    """Run a local cluster: a coordinator and SHARDS shards (in its process, or one process each).

    Ctrl-C or SIGTERM stops every process cleanly (shards snapshot their data on the way out).
    """
    if shard_mode == "local" and replicas > 1:
        raise click.UsageError("local shards have one replica each: use --shard-mode remote (or auto) with --replicas")
    _logging(log_level, "serve", log_format)
    _check_models(_settings(models_file=models))
    from vecshard_server.cluster.local import ClusterError, LocalCluster

    log = logging.getLogger("vecshard.serve")
    env = {"VECSHARD_MODELS_FILE": str(models.resolve())} if models else None
    env = {**(env or {}), "VECSHARD_LOG_FORMAT": log_format}
    if max_payload_bytes is not None:
        env["VECSHARD_MAX_PAYLOAD_BYTES"] = str(max_payload_bytes)
    cluster = LocalCluster(
        shards=shards,
        replicas=replicas,
        host=host,
        port=port,
        data_dir=data_dir,
        log_level=log_level,
        env=env,
        metrics_port=metrics_port,
        # A fresh secret per run: the shards (on loopback) accept only this cluster's own processes.
        internal_token=None if _internal_token_set() else secrets.token_urlsafe(32),
        shard_mode=("local" if replicas == 1 else "remote") if shard_mode == "auto" else shard_mode,
        ui=not no_ui,
        ui_port=ui_port if _ui_port_given() else None,
        ui_host=ui_host,
        ui_insecure=ui_insecure,
    )
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
    except ClusterError as err:
        raise click.ClickException(str(err)) from None
    for name, mport in cluster.metrics_ports.items():
        log.info("metrics of %s on http://%s:%d/metrics", name, host, mport)
    where = ", ".join(cluster.shard_addresses) or ", ".join(f"local-shard-{i}" for i in range(shards))
    log.info("vecshard is serving on %s (shards: %s; data in %s). Ctrl-C stops it.", cluster.address, where, data_dir)
    if cluster.ui_url:
        log.info("dashboard: %s", cluster.ui_url)
    failed = None
    while not stopping:
        failed = cluster.poll()
        if failed is not None:
            log.error("%s exited with code %s: stopping the cluster", failed.name, failed.popen.returncode)
            break
        time.sleep(0.2)
    codes = cluster.stop()
    log.info("stopped: %s", ", ".join(f"{n}={c}" for n, c in codes.items()))
    if failed is not None or any(codes.values()):
        sys.exit(1)


@cli.command()
@click.option(
    "--shard",
    "shards",
    multiple=True,
    metavar="HOST:PORT[,HOST:PORT...]",
    help="a shard group: its replicas' addresses, comma-separated; repeat in placement order "
    "(the order must never change)",
)
@click.option(
    "--local-shards",
    default=0,
    type=click.IntRange(0, 64),
    help="shard groups served in this process, called without gRPC (after the --shard groups)",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="--local-shards: their data (DIR/shard-i; without it, in memory)",
)
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=50051, show_default=True, type=click.IntRange(0, 65535))
@MODELS
@click.option("--embedder", metavar="HOST:PORT", help="embed through this `vecshard embedder` instead of in-process")
@MAX_PAYLOAD_BYTES
@UI_OPTIONS
@click.option("--ui-port-file", type=click.Path(path_type=Path), hidden=True, help="write the dashboard's port here")
@ROLE_OPTIONS
def coordinator(
    shards: tuple[str, ...],
    local_shards: int,
    data_dir: Path | None,
    host: str,
    port: int,
    models: Path | None,
    embedder: str | None,
    max_payload_bytes: int | None,
    ui_port: int,
    ui_host: str,
    no_ui: bool,
    ui_insecure: bool,
    ui_port_file: Path | None,
    port_file: Path | None,
    exit_with_parent: bool,
    log_level: str,
    log_format: str,
    metrics_port: int,
) -> None:
    """Run the coordinator, over shard workers at the given addresses and/or local shards."""
    if any(not s.strip(" ,") for s in shards):
        raise click.UsageError("a --shard value is empty: give each group's replica addresses, HOST:PORT[,HOST:PORT]")
    if not shards and not local_shards:
        raise click.UsageError("give the shard groups (--shard HOST:PORT, repeated) or --local-shards N")
    if data_dir is not None and not local_shards:
        raise click.UsageError("--data-dir is for --local-shards (remote shards keep their own data)")
    _logging(log_level, "coordinator", log_format)
    settings = _settings(models_file=models, embedder=embedder, max_payload_bytes=max_payload_bytes)
    _observe("coordinator", host, settings, metrics_port)
    from vecshard_server.coordinator.service import serve_coordinator

    scratch = None
    if not no_ui and port == 0 and port_file is None:  # (how the dashboard learns the port)
        scratch = Path(tempfile.mkdtemp(prefix="vecshard-ui-"))
        port_file = scratch / "coordinator.port"
    serving = serve_coordinator(settings, host, port, list(shards), port_file, exit_with_parent, local_shards, data_dir)
    ui = {"host": ui_host, "port": ui_port, "insecure": ui_insecure, "required": _ui_port_given()}
    try:
        asyncio.run(serving if no_ui else _with_dashboard(serving, settings, host, port, port_file, ui, ui_port_file))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


async def _with_dashboard(
    serving: Any,
    settings: Settings,
    host: str,
    port: int,
    port_file: Path | None,
    ui: dict[str, Any],
    ui_port_file: Path | None,
) -> None:
    """Serve the dashboard (ui/) beside the coordinator, on its event loop: it starts first (so that a
    refused listener stops the coordinator before it serves) and calls the coordinator's own gRPC port
    once that is known (a port file tells it when the port was 0)."""
    from vecshard_server.common.rpc import write_port_file
    from vecshard_server.ui.server import grpc_target, start_dashboard

    def target() -> str | None:
        if port:
            return grpc_target(host, port)
        assert port_file is not None
        return grpc_target(host, int(port_file.read_text())) if port_file.exists() else None

    try:
        dashboard = await start_dashboard(settings, ui["host"], ui["port"], target, ui["insecure"], ui["required"])
    except BaseException:
        serving.close()  # (never awaited)
        raise
    if dashboard is not None and ui_port_file is not None:
        write_port_file(ui_port_file, dashboard.port)
    try:
        await serving
    finally:
        if dashboard is not None:
            await dashboard.close()


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=50061, show_default=True, type=click.IntRange(0, 65535))
@click.option("--data-dir", type=click.Path(path_type=Path), help="snapshot folder (none: memory only)")
@click.option("--name", default="shard", show_default=True, help="name used in logs")
@click.option("--device", help="auto (GPU when faiss sees one), cpu or cuda:N  [default: auto]")
@click.option(
    "--peer",
    "peers",
    multiple=True,
    metavar="HOST:PORT",
    help="another replica of this shard group: catch up from it before serving (repeat)",
)
@INSECURE
@ROLE_OPTIONS
def shard(
    host: str,
    port: int,
    data_dir: Path | None,
    name: str,
    device: str | None,
    peers: tuple[str, ...],
    insecure: bool,
    port_file: Path | None,
    exit_with_parent: bool,
    log_level: str,
    log_format: str,
    metrics_port: int,
) -> None:
    """Run one shard worker (one replica of a shard group)."""
    _logging(log_level, name, log_format)
    settings = _settings(device=device)
    _observe("shard", host, settings, metrics_port, insecure)
    from vecshard_server.shard.engine import SnapshotCorrupt
    from vecshard_server.shard.service import serve_shard
    from vecshard_server.shard.wal import WalCorrupt

    try:
        asyncio.run(serve_shard(settings, host, port, data_dir, name, port_file, exit_with_parent, list(peers)))
    except (WalCorrupt, SnapshotCorrupt) as err:
        logging.getLogger("vecshard.shard").error("%s", err)
        raise click.ClickException(str(err)) from None


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=50071, show_default=True, type=click.IntRange(0, 65535))
@MODELS
@click.option("--preload", multiple=True, metavar="MODEL", help="load this model before serving (repeat)")
@INSECURE
@ROLE_OPTIONS
def embedder(
    host: str,
    port: int,
    models: Path | None,
    preload: tuple[str, ...],
    insecure: bool,
    port_file: Path | None,
    exit_with_parent: bool,
    log_level: str,
    log_format: str,
    metrics_port: int,
) -> None:
    """Run an embedding server that coordinators call with --embedder (GPU when torch sees one)."""
    _logging(log_level, "embedder", log_format)
    settings = _settings(models_file=models)
    _check_models(settings)
    _observe("embedder", host, settings, metrics_port, insecure)
    from vecshard_server.embedding.service import serve_embedder

    asyncio.run(serve_embedder(settings, host, port, settings.models_file, list(preload), port_file, exit_with_parent))


def _observe(role: str, host: str, settings: Settings, metrics_port: int, insecure: bool | None = None) -> None:
    """What every server role does before serving: refuse an unauthenticated internal listener
    (shards, embedders: `insecure` given), then metrics on the role's host and tracing."""
    from vecshard_server.common.observability import setup_tracing, start_metrics
    from vecshard_server.common.security import check_internal_listener

    if insecure is not None:
        check_internal_listener(role, host, settings, insecure)
    start_metrics(role, metrics_port, host)
    setup_tracing(role, settings.otel_exporter)


def _internal_token_set() -> bool:
    return bool(os.environ.get("VECSHARD_INTERNAL_TOKEN") or os.environ.get("VECSHARD_INTERNAL_TOKEN_FILE"))


def _check_models(settings: Settings) -> None:
    """Fail at startup, not at first use, when the model registry is unusable."""
    from vecshard_server.embedding.registry import RegistryError, load_registry

    try:
        load_registry(settings.models_file)
    except RegistryError as err:
        raise click.ClickException(str(err)) from None


@cli.command()
@click.option(
    "--shards",
    "shards_list",
    multiple=True,
    type=click.IntRange(1, 64),
    default=(1, 2),
    show_default=True,
    help="shard counts to measure (repeat)",
)
@click.option("--dataset", type=click.Choice(["sift5k", "synthetic"]), default="sift5k", show_default=True)
@click.option("-n", "--num-vectors", "n", default=100_000, show_default=True, help="synthetic data set size")
@click.option("--dim", default=128, show_default=True, help="synthetic dimension")
@click.option("--nlist", default=64, show_default=True)
@click.option("--nprobe", default=16, show_default=True)
@click.option("-k", default=10, show_default=True)
@click.option(
    "--batch",
    "batch_sizes",
    multiple=True,
    type=click.IntRange(1),
    default=(1, 64),
    show_default=True,
    help="queries per call (repeat)",
)
@click.option("--duration", default=3.0, show_default=True, help="seconds per measurement")
@click.option(
    "--clients",
    "concurrency",
    multiple=True,
    type=click.IntRange(1),
    default=(1,),
    show_default=True,
    help="concurrent clients (repeat)",
)
@click.option("--out", type=click.Path(path_type=Path), help="write bench.json and bench.md here")
@click.option(
    "--peers", multiple=True, type=click.Choice(["milvus", "chroma"]), help="also measure these systems (repeat)"
)
@click.option("--embed", is_flag=True, help="measure embedding throughput and text retrieval instead")
@click.option(
    "--filter",
    "filtered",
    is_flag=True,
    help="measure filtered search instead: synthetic clustered data with payloads (-n, --dim, --nlist, --nprobe; "
    "first --shards), pass rates 0.01%-50%, uncorrelated / correlated / anti-correlated; --peers chroma compares",
)
@click.option(
    "--scale",
    is_flag=True,
    help="measure IVF_FLAT, IVF_SQ8 and IVF_PQ+refine at -n vectors (memory-mapped synthetic data in --workdir) "
    "through a local cluster with data dirs (first --shards) against in-process faiss: load, train, memory, recall "
    "and QPS at batch 1/64/1024 for several nprobe; writes a QPS-recall plot with --out",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("bench-work"),
    show_default=True,
    help="--scale: data, ground truth and cluster data dirs (needs ~3x the data size free)",
)
@click.option(
    "--latency",
    is_flag=True,
    help="measure latency instead, in both shard modes: single-query p50/p99 and CPU per query, 1/8/32 concurrent "
    "clients, 256-query batches, beside a bare gRPC echo (the floor) and in-process faiss (first --shards)",
)
@click.option("--floor", is_flag=True, help="add the floor row: a bare unary gRPC echo of a query's size")
@click.option(
    "--reshard",
    "reshard_to",
    multiple=True,
    type=click.IntRange(1, 64),
    help="measure resharding instead (repeat: the steps, e.g. --reshard 3 --reshard 2): -n clustered vectors, "
    "IVF_FLAT (--nlist, --nprobe) on a local cluster of the first --shards groups; searchers and a writer run "
    "idle, then during each reshard (throughput, failures, recall@10, p50/p99)",
)
@click.option("--reshard-rate", default=0, show_default=True, help="--reshard: max points per second (0: no limit)")
@click.option("--reshard-page", default=0, help="--reshard: points scanned per copied page (0: the server's 2,000)")
@click.option(
    "--abuse",
    is_flag=True,
    help="measure latency under abuse instead (docs/limits.md): -n clustered vectors in FLAT and IVF_FLAT (--nlist, "
    "--nprobe) on a local cluster of the first --shards with API keys; a probe search every 0.2 s and health checks "
    "run alone for --duration seconds, then beside each abuse case (p50/p99/max, how each abuse ended, peak RSS)",
)
@click.option(
    "--abuse-case",
    "abuse_cases",
    multiple=True,
    type=click.Choice(["a", "b", "c", "d", "d2", "e"]),
    help="--abuse: run only these cases (repeat; default all)",
)
@click.option("--no-limits", is_flag=True, help="--abuse: raise every limit of docs/limits.md out of the way (before)")
@click.option("--abuse-timeout", default=120.0, show_default=True, help="--abuse: deadline of each abuse request (s)")
@click.option(
    "--workload",
    type=click.Choice(["keyword", "hybrid", "hybrid-quality", "backup"]),
    help="keyword: BM25 search on a generated Zipf corpus (--docs, --terms) through a local cluster (first "
    "--shards, --workdir) beside bm25s in-process: build documents/s, p50/p99 and QPS at 1 and 32 clients, bytes "
    "per posting, restart cost; hybrid: the same with dense vectors, adding dense and hybrid searches; "
    "hybrid-quality: recall/MRR/nDCG@10 of keyword, dense and hybrid search on the stdlib docstrings corpus "
    "(docs/hybrid.md); backup: backup and restore MB/s of -n x --dim vectors with payloads to a directory and to "
    "a local S3 server (docs/backup.md)",
)
@click.option(
    "--docs",
    type=click.IntRange(1),
    help="--workload keyword/hybrid: generated documents (default 1,000,000); hybrid-quality: documents loaded "
    "(every relevant one and the first others; default all)",
)
@click.option("--terms", default=100_000, show_default=True, help="--workload keyword/hybrid: vocabulary size")
@click.option(
    "--report",
    "report_all",
    is_flag=True,
    help="measure every performance goal against its floor in one run (bare gRPC echo servers, in-process faiss, "
    "faiss add + fsync; -n default 200,000, --nlist default 256) in both shard modes, and memory per vector at "
    "--memory-n for IVF_FLAT, IVF_SQ8 and IVF_PQ: writes bench_report.md/.json/.png to --out (README, Performance)",
)
@click.option(
    "--memory-n",
    default=2_000_000,
    show_default=True,
    type=click.IntRange(0),
    help="--report: vectors of the memory measurement (0: skip it)",
)
@click.option("--no-restart", is_flag=True, help="--workload keyword/hybrid: skip the restart measurements")
def bench(
    shards_list: tuple[int, ...],
    dataset: str,
    n: int,
    dim: int,
    nlist: int,
    nprobe: int,
    k: int,
    batch_sizes: tuple[int, ...],
    duration: float,
    concurrency: tuple[int, ...],
    out: Path | None,
    peers: tuple[str, ...],
    embed: bool,
    filtered: bool,
    scale: bool,
    workdir: Path,
    latency: bool,
    floor: bool,
    reshard_to: tuple[int, ...],
    reshard_rate: int,
    reshard_page: int,
    abuse: bool,
    abuse_cases: tuple[str, ...],
    no_limits: bool,
    abuse_timeout: float,
    workload: str | None,
    docs: int | None,
    terms: int,
    no_restart: bool,
    report_all: bool,
    memory_n: int,
) -> None:
    """Measure search and add through local clusters against in-process faiss (same data, same run)."""
    _logging("WARNING", "bench")
    if workload:
        _settings()
        _bench_workload(out, workload, docs, terms, shards_list[0], duration, workdir, not no_restart, (n, dim))
        return
    if abuse:
        _bench_abuse(out, n, dim, nlist, nprobe, shards_list[0], duration, abuse_cases, no_limits, abuse_timeout)
        return
    if reshard_to:
        _bench_reshard(out, n, dim, nlist, nprobe, k, reshard_to, shards_list[0], workdir, reshard_rate, reshard_page)
        return
    _settings()
    if report_all:
        _bench_report(out, n, dim, nlist, nprobe, k, shards_list[0], duration, memory_n, workdir)
        return
    if latency:
        _bench_latency(out, dataset, n, dim, nlist, nprobe, k, shards_list[0], duration, workdir)
        return
    if scale:
        from vecshard_server.bench import scale as bench_scale

        result = bench_scale.run_scale_bench(n, dim, nlist, k, shards_list[0], workdir, log=_echo_err)
        _publish(out, "bench_scale", bench_scale.format_markdown(result), result)
        if out:
            bench_scale.plot(result, out / "bench_scale.png")
        return
    if filtered:
        from vecshard_server.bench import filtered as bench_filtered

        result = bench_filtered.run_filter_bench(n, dim, nlist, nprobe, k, 100, shards_list[0], peers, log=_echo_err)
        _publish(out, "bench_filter", bench_filtered.format_markdown(result), result)
        return
    if embed:
        from vecshard_server.bench import embed as bench_embed

        report = bench_embed.format_markdown(bench_embed.run_embed_bench())
        if out:
            out.mkdir(parents=True, exist_ok=True)
            (out / "bench_embed.md").write_text(report + "\n")
        click.echo(report)
        return
    args = (shards_list, dataset, n, dim, nlist, nprobe, k, batch_sizes, duration, out, concurrency, peers)
    _bench_search(*args, floor=floor, workdir=workdir)


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


def _bench_workload(
    out: Path | None,
    workload: str,
    docs: int | None,
    terms: int,
    shards: int,
    duration: float,
    workdir: Path,
    restart: bool,
    vectors: tuple[int, int],
) -> None:
    if workload == "backup":  # (-n vectors of --dim)
        from vecshard_server.bench import backup as bench_backup

        result = bench_backup.run_backup_bench(*vectors, log=_echo_err)
        _publish(out, "bench_backup", bench_backup.format_markdown(result), result)
        return
    if workload == "hybrid-quality":
        from vecshard_server.bench import hybrid_quality

        quality = hybrid_quality.run_quality_bench(shards, docs, log=_echo_err)
        _publish(out, "bench_hybrid_quality", hybrid_quality.format_markdown(quality), quality)
        return
    from vecshard_server.bench import keyword as bench_keyword

    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = bench_keyword.run_keyword_bench(
            workload, docs or 1_000_000, terms, shards, duration, workdir, restart=restart, log=_echo_err
        )
    except ImportError as err:
        raise click.ClickException(f"{err}: the keyword bench's reference is bm25s (pip install bm25s)") from None
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    _publish(out, f"bench_{workload}", bench_keyword.format_markdown(result), result)


def _bench_abuse(
    out: Path | None,
    n: int,
    dim: int,
    nlist: int,
    nprobe: int,
    shards: int,
    idle_s: float,
    cases: tuple[str, ...],
    no_limits: bool,
    abuse_timeout: float,
) -> None:
    from vecshard_server.bench import abuse as bench_abuse

    result = bench_abuse.run_abuse_bench(
        n,
        dim,
        nlist,
        nprobe,
        shards,
        cases=cases or bench_abuse.CASES,
        no_limits=no_limits,
        idle_s=idle_s,
        abuse_timeout=abuse_timeout,
        log=_echo_err,
    )
    _publish(out, "bench_abuse", bench_abuse.format_markdown(result), result)


def _bench_reshard(
    out: Path | None,
    n: int,
    dim: int,
    nlist: int,
    nprobe: int,
    k: int,
    reshard_to: tuple[int, ...],
    shards: int,
    workdir: Path,
    rate: int,
    page: int,
) -> None:
    from vecshard_server.bench import reshard as bench_reshard

    result = bench_reshard.run_reshard_bench(
        n, dim, nlist, nprobe, k, reshard_to, shards, workdir=workdir, max_points_per_s=rate, page_size=page
    )
    _publish(out, "bench_reshard", bench_reshard.format_markdown(result), result)


def _bench_latency(
    out: Path | None,
    dataset: str,
    n: int,
    dim: int,
    nlist: int,
    nprobe: int,
    k: int,
    shards: int,
    duration: float,
    workdir: Path,
) -> None:
    from vecshard_server.bench import latency as bench_latency

    workdir.mkdir(parents=True, exist_ok=True)
    result = bench_latency.run_latency_bench(
        dataset, n, dim, nlist, nprobe, k, shards, duration, workdir=workdir, log=_echo_err
    )
    _publish(out, "bench_latency", bench_latency.format_markdown(result), result)


def _bench_report(
    out: Path | None,
    n: int,
    dim: int,
    nlist: int,
    nprobe: int,
    k: int,
    shards: int,
    duration: float,
    memory_n: int,
    workdir: Path,
) -> None:
    from click.core import ParameterSource

    from vecshard_server.bench import report as bench_report

    ctx = click.get_current_context()
    defaulted = {p: ctx.get_parameter_source(p) == ParameterSource.DEFAULT for p in ("n", "nlist", "shards_list")}
    result = bench_report.run_report(
        n=200_000 if defaulted["n"] else n,
        dim=dim,
        nlist=256 if defaulted["nlist"] else nlist,
        nprobe=nprobe,
        k=k,
        shards=2 if defaulted["shards_list"] else shards,
        duration_s=duration,
        memory_n=memory_n,
        workdir=workdir,
        log=_echo_err,
    )
    _publish(out, "bench_report", bench_report.format_markdown(result), result)
    if out:
        bench_report.plot(result, out / "bench_report.png")


def _bench_search(
    shards_list: tuple[int, ...],
    dataset: str,
    n: int,
    dim: int,
    nlist: int,
    nprobe: int,
    k: int,
    batch_sizes: tuple[int, ...],
    duration: float,
    out: Path | None,
    concurrency: tuple[int, ...],
    peers: tuple[str, ...],
    *,
    floor: bool,
    workdir: Path,
) -> None:
    from vecshard_server.bench.search import format_markdown, run_bench

    try:
        result = run_bench(
            list(shards_list),
            dataset,
            n,
            dim,
            nlist,
            nprobe,
            k,
            batch_sizes,
            duration,
            out,
            concurrency,
            peers=peers,
        )
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    report = format_markdown(result)
    if floor:
        from vecshard_server.bench.latency import echo_floor

        workdir.mkdir(parents=True, exist_ok=True)
        row = echo_floor(4 * result["params"]["dim"] + 64, 12 * k + 32, 2000, workdir)
        report += (
            f"\nFloor (a bare unary grpc.aio echo of a query's size, same run): p50 {row['p50_ms']:.3f} ms, "
            f"p99 {row['p99_ms']:.3f} ms, {row['qps']:,.0f} calls/s one at a time\n"
        )
        if out:
            (out / "bench.md").write_text(report)
    click.echo(report)


def _publish(out: Path | None, stem: str, report: str, result: dict[str, Any]) -> None:
    """Print a bench report; with --out, also write it (stem.md) and its figures (stem.json)."""
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.md").write_text(report)
        (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    click.echo(report)


for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli()
