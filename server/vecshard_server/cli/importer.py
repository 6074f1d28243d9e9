"""`vecshard import COLLECTION FILE`: a resumable bulk import of a large vector file.

Formats, by extension: `.npy` (memory-mapped, any float or int dtype), TEXMEX `.fvecs` / `.bvecs`
(memory-mapped; every row's dimension field is checked before anything is sent) and `.parquet`
(read in record batches with pyarrow: a vector column, an optional id column, every other column
becomes the point's payload). Rows go out in Add requests of `batch_size` rows, `parallel` of them
in flight, from a thread pool over one sync client.

A state file (default `FILE.vecshard-import.json`) records the collection, the file's identity
(path, size, mtime) and the row ranges the server acknowledged, rewritten atomically as batches
are acknowledged. Running the same import again skips those ranges and sends the others with
upsert (a batch in flight when an import died may or may not have been applied; its rows are the
same data from the same file, so replacing them is harmless).
"""

from __future__ import annotations

import json
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from vecshard import Client, VecshardError
from vecshard.retry import RETRYABLE, Backoff

BATCH_BYTES = 4 << 20
"""Default batch: about this many bytes of float32 vectors per Add (8192 rows at dim 128)."""
MAX_BATCH_ROWS = 65_536
DEFAULT_PARALLEL = 4
STATE_SUFFIX = ".vecshard-import.json"
STATE_VERSION = 1
SAVE_EVERY_S = 0.5
SAVE_EVERY_BATCHES = 64
RETRIES = 5
FORMATS = (".npy", ".fvecs", ".bvecs", ".parquet")


# -- row ranges -------------------------------------------------------------------------------------


class Ranges:
    """A set of rows as sorted, merged, half-open [start, stop) intervals."""

    def __init__(self, ranges: Sequence[Sequence[int]] = ()) -> None:
        self.spans: list[list[int]] = []
        for a, b in ranges:
            self.add(int(a), int(b))

    def add(self, start: int, stop: int) -> None:
        if stop <= start:
            return
        out: list[list[int]] = []
        placed = False
        for a, b in self.spans:
            if b < start:
                out.append([a, b])
            elif stop < a:
                if not placed:
                    out.append([start, stop])
                    placed = True
                out.append([a, b])
            else:  # overlapping or touching: absorb
                start, stop = min(a, start), max(b, stop)
        if not placed:
            out.append([start, stop])
        self.spans = out

    def count(self, start: int = 0, stop: int | None = None) -> int:
        """Rows of [start, stop) in the set."""
        end = sys.maxsize if stop is None else stop
        return sum(max(0, min(b, end) - max(a, start)) for a, b in self.spans)

    def missing(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of [start, stop) not in the set, in order."""
        out: list[tuple[int, int]] = []
        at = start
        for a, b in self.spans:
            if b <= at:
                continue
            if a >= stop:
                break
            if a > at:
                out.append((at, min(a, stop)))
            at = max(at, b)
        if at < stop:
            out.append((at, stop))
        return out


# -- sources ----------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Rows [start, stop) of the file, ready to send."""

    start: int
    stop: int
    ids: np.ndarray
    vectors: np.ndarray
    payloads: list[dict[str, Any]] | None


class Source(ABC):
    """A vector file: its row count, dimension, and chunks of any row ranges."""

    rows: int
    dim: int

    def __init__(self, path: Path) -> None:
        self.path = path

    @abstractmethod
    def id_scheme(self) -> dict[str, Any]:
        """How ids are made (recorded in the state file: a resume must make the same ids)."""

    @abstractmethod
    def chunks(self, pending: list[tuple[int, int]], batch: int) -> Iterator[Chunk]:
        """The rows of `pending` (sorted, disjoint ranges) in chunks of at most `batch` rows."""

    def close(self) -> None:  # noqa: B027 - optional
        pass


class ArraySource(Source):
    """A memory-mapped (rows, dim) array (.npy, or the vector field of a .fvecs/.bvecs record);
    ids are row numbers + start_id."""

    def __init__(self, path: Path, matrix: np.ndarray, start_id: int) -> None:
        super().__init__(path)
        self.matrix = matrix
        self.rows, self.dim = int(matrix.shape[0]), int(matrix.shape[1])
        self.start_id = start_id

    def id_scheme(self) -> dict[str, Any]:
        return {"start_id": self.start_id}

    def chunks(self, pending: list[tuple[int, int]], batch: int) -> Iterator[Chunk]:
        for a, b in pending:
            for start in range(a, b, batch):
                stop = min(b, start + batch)
                vectors = np.ascontiguousarray(self.matrix[start:stop], dtype=np.float32)
                ids = np.arange(start + self.start_id, stop + self.start_id, dtype=np.int64)
                yield Chunk(start, stop, ids, vectors, None)


def open_npy(path: Path, start_id: int) -> ArraySource:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise click.ClickException(f"{path}: not a readable .npy file ({err})") from None
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise click.ClickException(f"{path}: expected a 2-D array (rows, dim), got shape {getattr(x, 'shape', '?')}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise click.ClickException(f"{path}: expected a float or int array, got dtype {x.dtype}")
    return ArraySource(path, x, start_id)


def open_texmex(path: Path, start_id: int) -> ArraySource:
    """.fvecs (int32 dim, then dim float32) or .bvecs (int32 dim, then dim uint8) per row; every
    row's dim field must equal the first's."""
    value = np.dtype("<f4") if path.suffix == ".fvecs" else np.dtype("u1")
    size = path.stat().st_size
    if size < 4:
        raise click.ClickException(f"{path}: empty or truncated {path.suffix} file")
    dim = int(np.fromfile(path, dtype="<i4", count=1)[0])
    if dim <= 0:
        raise click.ClickException(f"{path}: the first row's dimension field is {dim}: not a {path.suffix} file")
    record = np.dtype([("dim", "<i4"), ("vec", value, (dim,))])
    if size % record.itemsize:
        raise click.ClickException(
            f"{path}: ragged {path.suffix}: {size} bytes is not a whole number of {dim}-d rows "
            f"({record.itemsize} bytes each)"
        )
    rows = np.memmap(path, dtype=record, mode="r")
    dims = rows["dim"]
    step = 1 << 20
    for start in range(0, len(rows), step):
        bad = np.flatnonzero(dims[start : start + step] != dim)
        if bad.size:
            row = start + int(bad[0])
            raise click.ClickException(
                f"{path}: ragged {path.suffix}: row {row} has dimension {int(dims[row])}, the first row {dim}"
            )
    return ArraySource(path, rows["vec"], start_id)


_JSON_TYPES = "ints, floats, strings, bools, nulls, lists and structs"


def _json_able(t: Any) -> bool:
    """Whether a pyarrow type's values map (to_pylist) to payload values."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _json_able(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _json_able(t.value_type)
    if pa.types.is_struct(t):
        return all(_json_able(t.field(i).type) for i in range(t.num_fields))
    return bool(
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    )


class ParquetSource(Source):
    """A Parquet file read in record batches: vectors from a list / fixed_size_list column, ids
    from an integer column (or row numbers + start_id), the other columns as payloads."""

    def __init__(self, path: Path, vector_column: str, id_column: str, id_column_given: bool, start_id: int) -> None:
        super().__init__(path)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise click.ClickException("Parquet needs pyarrow: pip install 'vecshard[import]'") from None
        try:
            self.file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:
            raise click.ClickException(f"{path}: not a readable Parquet file ({err})") from None
        schema = self.file.schema_arrow
        names = schema.names
        if vector_column not in names:
            raise click.ClickException(
                f"{path}: no vector column {vector_column!r} (columns: {', '.join(names)}): pass --vector-column"
            )
        vtype = schema.field(vector_column).type
        if not (pa.types.is_list(vtype) or pa.types.is_large_list(vtype) or pa.types.is_fixed_size_list(vtype)) or not (
            pa.types.is_floating(vtype.value_type) or pa.types.is_integer(vtype.value_type)
        ):
            raise click.ClickException(
                f"{path}: column {vector_column!r} is {vtype}, not a list of numbers (list<float> or fixed_size_list)"
            )
        self.vector_column = vector_column
        self.id_column: str | None = id_column if id_column in names else None
        if self.id_column is None and id_column_given:
            raise click.ClickException(f"{path}: no id column {id_column!r} (columns: {', '.join(names)})")
        if self.id_column is not None and not pa.types.is_integer(schema.field(self.id_column).type):
            raise click.ClickException(
                f"{path}: id column {self.id_column!r} is {schema.field(self.id_column).type}, not an integer type"
            )
        self.payload_columns = [n for n in names if n not in (vector_column, self.id_column)]
        for n in self.payload_columns:
            if not _json_able(schema.field(n).type):
                raise click.ClickException(
                    f"{path}: column {n!r} is {schema.field(n).type}; payloads hold {_JSON_TYPES}: "
                    "cast or drop the column"
                )
        self.start_id = start_id
        self.rows = self.file.metadata.num_rows
        if pa.types.is_fixed_size_list(vtype):
            self.dim = vtype.list_size
        else:
            self.dim = 0
            for batch in self.file.iter_batches(batch_size=1, columns=[vector_column]):
                col = batch.column(0)
                self.dim = len(col[0]) if batch.num_rows and col[0].is_valid else 0
                break
        if self.rows and self.dim <= 0:
            raise click.ClickException(f"{path}: the first row's vector ({vector_column!r}) is empty or null")

    def id_scheme(self) -> dict[str, Any]:
        if self.id_column is not None:
            return {"id_column": self.id_column, "vector_column": self.vector_column}
        return {"start_id": self.start_id, "vector_column": self.vector_column}

    def chunks(self, pending: list[tuple[int, int]], batch: int) -> Iterator[Chunk]:
        meta = self.file.metadata
        columns = [self.vector_column, *([self.id_column] if self.id_column else []), *self.payload_columns]
        todo = Ranges(pending)
        group_start = 0
        for g in range(meta.num_row_groups):
            group_stop = group_start + meta.row_group(g).num_rows
            if todo.count(group_start, group_stop):  # skip row groups already imported, unread
                offset = group_start
                for rb in self.file.iter_batches(batch_size=batch, row_groups=[g], columns=columns):
                    for a, b in _overlap(todo, offset, offset + rb.num_rows):
                        yield self._chunk(rb.slice(a - offset, b - a), a)
                    offset += rb.num_rows
            group_start = group_stop

    def _chunk(self, rb: Any, start: int) -> Chunk:
        import pyarrow.compute as pc

        stop = start + rb.num_rows
        col = rb.column(self.vector_column)
        if col.null_count:
            raise click.ClickException(f"{self.path}: row {start + _first_null(col)} has a null vector")
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lengths != self.dim)
        if bad.size:
            row = int(bad[0])
            raise click.ClickException(
                f"{self.path}: row {start + row} has a {int(lengths[row])}-d vector, the first row {self.dim}-d"
            )
        flat = col.flatten()
        if flat.null_count:
            raise click.ClickException(f"{self.path}: rows {start}-{stop - 1} hold null vector components")
        vectors = np.ascontiguousarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, self.dim)
        if self.id_column is not None:
            id_col = rb.column(self.id_column)
            if id_col.null_count:
                raise click.ClickException(f"{self.path}: row {start + _first_null(id_col)} has a null id")
            ids = np.asarray(id_col.to_numpy(zero_copy_only=False), dtype=np.int64)
        else:
            ids = np.arange(start + self.start_id, stop + self.start_id, dtype=np.int64)
        payloads = rb.select(self.payload_columns).to_pylist() if self.payload_columns else None
        return Chunk(start, stop, ids, vectors, payloads)

    def close(self) -> None:
        self.file.close()


def _overlap(ranges: Ranges, start: int, stop: int) -> list[tuple[int, int]]:
    """The parts of [start, stop) that are in `ranges`."""
    return [(max(a, start), min(b, stop)) for a, b in ranges.spans if a < stop and b > start]


def _first_null(col: Any) -> int:
    return int(np.flatnonzero(~np.asarray(col.is_valid().to_numpy(zero_copy_only=False)))[0])


def open_source(path: Path, start_id: int, vector_column: str, id_column: str, id_column_given: bool) -> Source:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return open_npy(path, start_id)
    if suffix in (".fvecs", ".bvecs"):
        return open_texmex(path, start_id)
    if suffix == ".parquet":
        return ParquetSource(path, vector_column, id_column, id_column_given, start_id)
    raise click.UsageError(f"{path}: unknown format {path.suffix or '(no extension)'!r}: use {', '.join(FORMATS)}")


# -- state file -------------------------------------------------------------------------------------


class ImportState:
    """The state file: what is being imported where, and the rows the server acknowledged."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.acked = Ranges(data.get("acknowledged", []))
        self.resumed = False  # loaded from an earlier run's file
        # Rows at or past this were never sent by any run (each run raises it, and saves, before
        # sending past it): a resume replaces only the unacknowledged rows below it.
        self.sent_below = int(data.get("sent_below", 0))
        self.saved_at = 0.0
        self.unsaved = 0

    @staticmethod
    def identity(file: Path) -> dict[str, Any]:
        st = file.stat()
        return {"path": str(file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    @classmethod
    def load_or_new(
        cls, path: Path, collection: str, file: Path, rows: int, ids: dict[str, Any], restart: bool
    ) -> ImportState:
        fresh: dict[str, Any] = {
            "version": STATE_VERSION,
            "collection": collection,
            "file": cls.identity(file),
            "ids": ids,
            "rows": rows,
            "acknowledged": [],
            "done": False,
        }
        if restart or not path.exists():
            return cls(path, fresh)
        try:
            data = json.loads(path.read_text())
            assert isinstance(data, dict) and data.get("version") == STATE_VERSION
            Ranges(data["acknowledged"])
        except Exception:
            raise click.ClickException(
                f"{path} is not a vecshard import state file: remove it, pass another --state, or --restart"
            ) from None
        again = "pass --restart to discard it and import the whole file again"
        if data.get("collection") != collection:
            raise click.ClickException(
                f"{path} records an import into collection {data.get('collection')!r}, not {collection!r}: {again} "
                "(or pass another --state)"
            )
        old, new = data.get("file", {}), fresh["file"]
        if old.get("path") != new["path"]:
            raise click.ClickException(f"{path} records an import of {old.get('path')}, not {new['path']}: {again}")
        if old.get("size") != new["size"] or old.get("mtime_ns") != new["mtime_ns"]:
            raise click.ClickException(
                f"{file} changed since the import recorded in {path} (size or modification time differ): {again}"
            )
        if data.get("ids") != ids:
            raise click.ClickException(
                f"{path} records ids made by {_scheme_text(data.get('ids'))}, this run makes them by "
                f"{_scheme_text(ids)}: re-run with the same options, or {again}"
            )
        state = cls(path, data)
        state.resumed = True
        return state

    def reserve(self, stop: int, ahead: int) -> None:
        """Before sending rows up to `stop`: record (and save) that rows below stop + ahead may be sent."""
        if stop > self.sent_below:
            self.sent_below = min(stop + ahead, int(self.data["rows"]))
            self.save()

    def ack(self, start: int, stop: int) -> None:
        self.acked.add(start, stop)
        self.unsaved += 1
        if self.unsaved >= SAVE_EVERY_BATCHES or time.monotonic() - self.saved_at >= SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        self.data["acknowledged"] = self.acked.spans
        self.data["sent_below"] = self.sent_below
        self.data["done"] = self.acked.count(0, self.data["rows"]) == self.data["rows"]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.data) + "\n")
            os.replace(tmp, self.path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise click.ClickException(f"cannot write the state file {self.path}: {err}: pass --state PATH") from None
        self.saved_at = time.monotonic()
        self.unsaved = 0


def _scheme_text(ids: Any) -> str:
    if not isinstance(ids, dict):
        return repr(ids)
    return ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(ids.items()))


# -- the import -------------------------------------------------------------------------------------


def default_batch(dim: int) -> int:
    return max(1, min(MAX_BATCH_ROWS, BATCH_BYTES // (4 * max(dim, 1))))


def run_import(
    client: Client,
    collection: str,
    file: Path,
    *,
    state_path: Path | None = None,
    restart: bool = False,
    batch_size: int | None = None,
    parallel: int = DEFAULT_PARALLEL,
    upsert: bool = False,
    start_id: int = 0,
    limit: int | None = None,
    vector_column: str = "vector",
    id_column: str = "id",
    id_column_given: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Import `file` into `collection`; returns {"imported", "skipped", "seconds", "rows_per_s"}.
    Everything that can be refused (format, dimension, state) is checked before anything is sent."""
    source = open_source(file, start_id, vector_column, id_column, id_column_given)
    try:
        state_path = state_path or file.with_name(file.name + STATE_SUFFIX)
        state = ImportState.load_or_new(state_path, collection, file, source.rows, source.id_scheme(), restart)
        if source.rows == 0:
            raise click.ClickException(f"{file}: no rows to import")
        target = source.rows if limit is None else min(limit, source.rows)
        skipped = state.acked.count(0, target)
        pending = state.acked.missing(0, target)
        todo = sum(b - a for a, b in pending)
        if not todo:
            click.echo(
                f"everything is already imported: rows 0-{target - 1} of {file} are in {collection} "
                f"(recorded in {state_path}; --restart imports again)"
            )
            return {"imported": 0, "skipped": skipped, "seconds": 0.0, "rows_per_s": 0.0}
        info = client.describe(collection)
        if info.dim != source.dim:
            raise click.ClickException(
                f"{file} holds {source.dim}-d vectors but collection {collection!r} has dim {info.dim}"
            )
        batch = batch_size or default_batch(source.dim)
        # Rows an earlier run sent but saw no acknowledgement of may have been applied: replace them.
        sender = _Sender(client, collection, upsert, replace_below=state.sent_below if state.resumed else 0)
        state.save()  # fail now, not after the first batch, when the state file cannot be written
        started = time.perf_counter()
        label = f"importing into {collection}" + (f" (resuming: {skipped} rows done)" if skipped else "")
        bar: Any = (
            click.progressbar(length=todo, label=label, file=sys.stderr, show_pos=True) if not quiet else _NoBar()
        )
        with bar:
            _pump(source.chunks(pending, batch), sender, state, bar, max(1, parallel))
        seconds = time.perf_counter() - started
    finally:
        source.close()
    rate = todo / seconds if seconds > 0 else 0.0
    return {"imported": todo, "skipped": skipped, "seconds": seconds, "rows_per_s": rate}


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int) -> None:
        pass


class _Sender:
    """Sends one chunk as one Add, retrying what may succeed later: Unavailable / DeadlineExceeded
    (then with upsert: the failed attempt may have been applied) and RESOURCE_EXHAUSTED with a
    retry-after hint (a busy server)."""

    BACKOFF = Backoff(retries=RETRIES, initial_s=0.25, max_s=5.0, jitter=0.5, busy=True)

    def __init__(self, client: Client, collection: str, upsert: bool, replace_below: int) -> None:
        self.client, self.collection, self.upsert, self.replace_below = client, collection, upsert, replace_below

    def __call__(self, chunk: Chunk) -> Chunk:
        upsert = self.upsert or chunk.start < self.replace_below

        def send(failed: VecshardError | None) -> Chunk:
            nonlocal upsert
            upsert = upsert or isinstance(failed, RETRYABLE)  # the failed attempt may have been applied
            self.client.add(self.collection, chunk.ids, chunk.vectors, payloads=chunk.payloads, upsert=upsert)
            return chunk

        return self.BACKOFF.call(send)


def _pump(chunks: Iterator[Chunk], send: _Sender, state: ImportState, bar: Any, parallel: int) -> None:
    """Send chunks with `parallel` in flight; record each acknowledged one. On an error or Ctrl-C,
    stop sending, let the batches in flight finish, save the state and report."""
    in_flight: dict[Future[Chunk], Chunk] = {}
    error: BaseException | None = None
    failed: Chunk | None = None

    def settle(done: set[Future[Chunk]]) -> None:
        nonlocal error, failed
        for f in done:
            chunk = in_flight.pop(f)
            exc = f.exception()
            if exc is None:
                state.ack(chunk.start, chunk.stop)
                bar.update(chunk.stop - chunk.start)
            elif error is None:
                error, failed = exc, chunk

    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="vecshard-import")
    try:
        try:
            for chunk in chunks:
                while len(in_flight) >= parallel:
                    settle(wait(in_flight, return_when=FIRST_COMPLETED)[0])
                if error is not None:
                    break
                state.reserve(chunk.stop, 4 * parallel * (chunk.stop - chunk.start))
                in_flight[pool.submit(send, chunk)] = chunk
            while in_flight and error is None:
                settle(wait(in_flight, return_when=FIRST_COMPLETED)[0])
        except BaseException as exc:  # a refused row (click), Ctrl-C: stop, keep what was acknowledged
            error = error or exc
        for f in list(in_flight):
            f.cancel()
        settle(wait(in_flight)[0] if in_flight else set())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        state.save()
    if error is None:
        return
    where = f"; {state.acked.count()} acknowledged rows are recorded in {state.path}: re-run to resume"
    if isinstance(error, KeyboardInterrupt):
        click.echo(f"\ninterrupted{where}", err=True)
        raise SystemExit(130)
    if isinstance(error, VecshardError):
        hint = " (--upsert replaces stored ids)" if error.code.name == "ALREADY_EXISTS" else ""
        rows = f" (in the batch of file rows {failed.start}-{failed.stop - 1})" if failed is not None else ""
        raise click.ClickException(f"{error.code.name}: {error.details}{hint}{rows}{where}") from None
    if isinstance(error, click.UsageError):
        raise error
    if isinstance(error, click.ClickException):
        raise click.ClickException(error.message + where) from None
    raise error
