"""`vecshard backup create|list|describe|verify|delete` and `vecshard restore` (docs/backup.md).

The coordinator does the work (its shards write the files, so a directory location is a path on the
server machines); these commands start a job, draw its progress (tqdm, on stderr) until it ends,
and cancel it on Ctrl-C (the server then removes what the job wrote). `backup create` prints the new
backup's id as the last line of its standard output.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any

import click

from vecshard import BackupInfo, BackupProgress, Client
from vecshard_server.cli.options import ADDRESS, AS_JSON, connect

FROM = click.option("--from", "location", required=True, help="the backups' location: /abs/dir or s3://bucket/prefix")
S3_ENDPOINT = click.option(
    "--s3-endpoint", default="", help="S3 endpoint URL (default: the server's AWS_ENDPOINT_URL, else AWS)"
)
TIMEOUT = click.option("--timeout", default=60.0, show_default=True, help="seconds per call")
POLL_S = 0.3
ENDED = {"DONE", "FAILED", "CANCELLED"}


def _follow(c: Client, progress: BackupProgress, show: bool, unit: str) -> BackupProgress:
    """Poll the job until it ends, with a progress bar; Ctrl-C cancels it (and waits for the cleanup)."""
    bar: Any = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=progress.total or None, unit=unit, file=sys.stderr, dynamic_ncols=True)
    try:
        while progress.phase not in ENDED:
            if bar is not None:
                bar.total = progress.total or None
                bar.n = progress.done
                bar.set_description(progress.phase.lower())
                bar.refresh()
            time.sleep(POLL_S)
            progress = c.backup_status(progress.job)
    except KeyboardInterrupt:
        click.echo(f"\ncancelling {progress.kind} {progress.job} ...", err=True)
        progress = c.backup_status(progress.job, cancel=True)
        raise click.ClickException(f"{progress.kind} {progress.job} cancelled; what it wrote was removed") from None
    finally:
        if bar is not None:
            bar.n = progress.done
            bar.close()
    if progress.phase != "DONE":
        raise click.ClickException(f"{progress.kind} {progress.job} {progress.phase}: {progress.error}")
    return progress


def _info_dict(b: BackupInfo) -> dict[str, Any]:
    out = dataclasses.asdict(b)
    for c, coll in zip(out["collections"], b.collections, strict=True):
        info = c.pop("info")
        c["name"], c["count"], c["dim"] = coll.info.name, coll.info.count, coll.info.dim
        c["metric"], c["index"], c["id_type"] = info["metric"].value, info["index_type"].value, info["id_type"]
        c["payload_indexes"] = info["payload_indexes"]
        if not c["files"]:
            del c["files"]
    return out


@click.group()
def backup() -> None:
    """Consistent online backups of collections to a directory or S3 (docs/backup.md)."""


@backup.command("create")
@click.option("--collection", "names", multiple=True, help="collection to back up (repeat; default: every one)")
@click.option(
    "--to", "location", required=True, help="where: an absolute directory on the server, or s3://bucket/prefix"
)
@S3_ENDPOINT
@click.option("--progress/--no-progress", default=None, help="draw a progress bar (default: on a terminal)")
@ADDRESS
@TIMEOUT
def create(
    names: tuple[str, ...], location: str, s3_endpoint: str, progress: bool | None, address: str, timeout: float
) -> None:
    """Back up collections, online: writes pause for a moment at the cut. Prints the backup's id last."""
    show = sys.stderr.isatty() if progress is None else progress
    with connect(address, timeout) as c:
        started = c.create_backup(location, collections=names, s3_endpoint=s3_endpoint, wait=False)
        done = _follow(c, started, show, "part")
        info = c.describe_backup(done.backup_id, location, s3_endpoint=s3_endpoint)
    click.echo(f"backup of {', '.join(done.collections) or 'no collection'}: {info.files} files, {info.bytes:,} bytes")
    click.echo(done.backup_id)


@backup.command("list")
@FROM
@S3_ENDPOINT
@AS_JSON
@ADDRESS
@TIMEOUT
def list_(location: str, s3_endpoint: str, as_json: bool, address: str, timeout: float) -> None:
    """The complete backups at a location, newest first."""
    with connect(address, timeout) as c:
        backups = c.list_backups(location, s3_endpoint=s3_endpoint)
    if as_json:
        click.echo(json.dumps([_info_dict(b) for b in backups], indent=2))
        return
    for b in backups:
        colls = ", ".join(f"{x.name} ({x.info.count:,})" for x in b.collections)
        click.echo(f"{b.id}  {b.created}  {b.bytes:>14,} bytes  {colls}")


@backup.command("describe")
@click.argument("backup_id")
@FROM
@S3_ENDPOINT
@AS_JSON
@ADDRESS
@TIMEOUT
def describe(backup_id: str, location: str, s3_endpoint: str, as_json: bool, address: str, timeout: float) -> None:
    """A backup's manifest: its cut, collections and files."""
    with connect(address, timeout) as c:
        b = c.describe_backup(backup_id, location, s3_endpoint=s3_endpoint)
    if as_json:
        click.echo(json.dumps(_info_dict(b), indent=2))
        return
    click.echo(f"backup {b.id}: cut at {b.created} (version {b.cut_version}), writes paused {b.fence_ms:.1f} ms")
    for x in b.collections:
        i = x.info
        click.echo(
            f"  {x.name}: {i.count:,} points, dim {i.dim}, {i.metric.value}, {i.index_type.value}, {x.shards} groups, "
            f"{'trained' if x.trained else 'untrained'}, payload indexes {i.payload_indexes or 'none'}"
        )
        for f in x.files:
            click.echo(f"    {f.path}  {f.size:,} bytes  sha256 {f.sha256[:16]}...")
    click.echo(f"{b.files} files, {b.bytes:,} bytes")


@backup.command("verify")
@click.argument("backup_id")
@FROM
@S3_ENDPOINT
@ADDRESS
@click.option("--timeout", default=3600.0, show_default=True, help="seconds for the whole check")
def verify(backup_id: str, location: str, s3_endpoint: str, address: str, timeout: float) -> None:
    """Read every file of a backup and check its SHA-256; exits 1 on any problem."""
    with connect(address, timeout) as c:
        v = c.verify_backup(backup_id, location, s3_endpoint=s3_endpoint)
    for p in v.problems:
        click.echo(f"PROBLEM: {p}")
    if not v.ok:
        raise click.ClickException(f"backup {backup_id} is damaged: {len(v.problems)} problems")
    click.echo(f"backup {backup_id} is whole: {v.files_checked} files, {v.bytes_checked:,} bytes checked")


@backup.command("delete")
@click.argument("backup_id")
@FROM
@S3_ENDPOINT
@ADDRESS
@TIMEOUT
def delete(backup_id: str, location: str, s3_endpoint: str, address: str, timeout: float) -> None:
    """Delete a backup (or what an interrupted one left)."""
    with connect(address, timeout) as c:
        n = c.delete_backup(backup_id, location, s3_endpoint=s3_endpoint)
    click.echo(f"deleted backup {backup_id} ({n} files)")


@backup.command("prune")
@FROM
@click.option("--keep", type=click.IntRange(1, None), required=True, help="how many of the newest backups to keep")
@S3_ENDPOINT
@ADDRESS
@TIMEOUT
def prune(location: str, keep: int, s3_endpoint: str, address: str, timeout: float) -> None:
    """Delete all but the newest --keep backups at a location (retention; the CronJob runs it)."""
    with connect(address, timeout) as c:
        backups = c.list_backups(location, s3_endpoint=s3_endpoint)  # (newest first)
        for b in backups[keep:]:
            n = c.delete_backup(b.id, location, s3_endpoint=s3_endpoint)
            click.echo(f"deleted backup {b.id} ({n} files)")
    click.echo(f"kept {min(keep, len(backups))} backups")


@click.command()
@click.argument("backup_id")
@FROM
@click.option("--collection", default="", help="restore only this collection (default: every one)")
@click.option("--as", "as_name", default="", help="with --collection: restore it under this name")
@click.option("--shards", default=0, type=click.IntRange(0, 1024), help="shard groups to place it on (0: all)")
@click.option("--replicas", default=0, type=click.IntRange(0, 64), help="replicas per group the cluster must have")
@S3_ENDPOINT
@click.option("--progress/--no-progress", default=None, help="draw a progress bar (default: on a terminal)")
@ADDRESS
@TIMEOUT
def restore(
    backup_id: str,
    location: str,
    collection: str,
    as_name: str,
    shards: int,
    replicas: int,
    s3_endpoint: str,
    progress: bool | None,
    address: str,
    timeout: float,
) -> None:
    """Restore a backup onto this cluster, on any shard count; run it again to resume an interrupted one."""
    if as_name and not collection:
        raise click.BadParameter("--as renames one collection: name it with --collection")
    show = sys.stderr.isatty() if progress is None else progress
    with connect(address, timeout) as c:
        started = c.restore_backup(
            backup_id,
            location,
            collection=collection,
            as_name=as_name,
            shards=shards,
            replicas=replicas,
            s3_endpoint=s3_endpoint,
            wait=False,
        )
        done = _follow(c, started, show, "pt")
    click.echo(f"restored {', '.join(done.collections)} from backup {backup_id} ({done.done:,} points)")


COMMANDS = [backup, restore]
