"""The `vecshard` commands that talk to a running server: collections, add, search, scroll, facet,
embed.

They need only the client install (no faiss, no torch). Errors print one line and exit 1.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from vecshard import Client, CollectionInfo
from vecshard.filter_text import FilterSyntaxError, parse_filter
from vecshard_server.cli.backup import COMMANDS as BACKUP_COMMANDS
from vecshard_server.cli.options import ADDRESS, AS_JSON, TIMEOUT, connect


def _info_dict(info: CollectionInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "dim": info.dim,
        "metric": info.metric.value,
        "index": info.index_type.value,
        "nlist": info.nlist,
        "nprobe": info.nprobe,
        "count": info.count,
        "training": info.training_state,
        "model": info.embedding_model,
        "id_type": info.id_type,
        "shards": {s.name: s.count for s in info.shards},
        "payload_indexes": info.payload_indexes,
        "text_indexes": {f: dataclasses.asdict(t) for f, t in info.text_indexes.items()},
    }


@click.group()
def collections() -> None:
    """Create, list, describe and drop collections."""


@collections.command("create")
@click.argument("name")
@click.option("--dim", default=0, show_default=True, help="vector dimension (0 with --model: the model's)")
@click.option(
    "--metric", type=click.Choice(["l2", "inner_product", "cosine", "l1"]), help="default: l2, or cosine with --model"
)
@click.option(
    "--index",
    type=click.Choice(["flat", "ivf_flat", "ivf_sq8", "ivf_sqfp16", "ivf_pq"]),
    help="index kind  [default: flat, or the sizing guide's pick with --expected-size]",
)
@click.option("--nlist", default=0, help="IVF lists")
@click.option("--nprobe", default=0, help="IVF lists probed by default (0: server default)")
@click.option("--pq-m", default=0, help="IVF_PQ: sub-quantizers (bytes a vector at 8 bits; 0: dim / 8 or below)")
@click.option("--pq-nbits", default=0, help="IVF_PQ: bits per code (0: 8)")
@click.option("--refine-factor", default=0, help="compressed kinds: re-rank k * this many candidates exactly")
@click.option("--coarse-quantizer", type=click.Choice(["flat", "hnsw"]), help="IVF: how vectors find their lists")
@click.option("--expected-size", default=0, help="let the server size the index for this many vectors")
@click.option("--target-recall", default=0.0, help="with --expected-size: recall@10 to size for (0: 0.95)")
@click.option("--memory-budget", default=0, help="with --expected-size: bytes of index memory, all shards (0: any)")
@click.option("--model", help="bind to a server embedding model (add/search then take texts or images)")
@click.option(
    "--id-type",
    type=click.Choice(["int", "string"]),
    default="int",
    show_default=True,
    help="the points' ids: int64, or strings (UUIDs, document keys)",
)
@ADDRESS
@TIMEOUT
def create(
    name: str,
    dim: int,
    metric: str | None,
    index: str | None,
    nlist: int,
    nprobe: int,
    pq_m: int,
    pq_nbits: int,
    refine_factor: int,
    coarse_quantizer: str | None,
    expected_size: int,
    target_recall: float,
    memory_budget: int,
    model: str | None,
    id_type: str,
    address: str,
    timeout: float,
) -> None:
    """Create collection NAME."""
    with connect(address, timeout) as c:
        info = c.create_collection(
            name,
            dim,
            metric or (None if model else "l2"),
            index,
            nlist=nlist,
            nprobe=nprobe,
            model=model,
            pq_m=pq_m,
            pq_nbits=pq_nbits,
            refine_factor=refine_factor,
            coarse_quantizer=coarse_quantizer or "",
            expected_size=expected_size,
            target_recall=target_recall,
            memory_budget=memory_budget,
            id_type=id_type,
        )
    ivf = f", nlist {info.nlist}, nprobe {info.nprobe}, {info.coarse_quantizer} quantizer" if info.nlist else ""
    pq = f", pq_m {info.pq_m}" if info.pq_m else ""
    refine = f", refine_factor {info.refine_factor}" if info.refine_factor > 1 else ""
    click.echo(
        f"created {info.name}: dim {info.dim}, {info.metric.value}, {info.index_type.value}{ivf}{pq}{refine}"
        + (f", model {info.embedding_model}" if info.embedding_model else "")
        + (", string ids" if info.string_ids else "")
    )


@collections.command("list")
@ADDRESS
@TIMEOUT
@AS_JSON
def list_(address: str, timeout: float, as_json: bool) -> None:
    """List collections with their counts."""
    with connect(address, timeout) as c:
        infos = c.list_collections()
    if as_json:
        click.echo(json.dumps([_info_dict(i) for i in infos], indent=2))
        return
    rows = [
        (i.name, i.count, i.dim, i.metric.value, i.index_type.value, i.training_state, i.embedding_model or "-")
        for i in infos
    ]
    _table(["name", "count", "dim", "metric", "index", "training", "model"], rows)


@collections.command("describe")
@click.argument("name")
@ADDRESS
@TIMEOUT
def describe(name: str, address: str, timeout: float) -> None:
    """Show a collection's config, counts per shard and training state (JSON)."""
    with connect(address, timeout) as c:
        click.echo(json.dumps(_info_dict(c.describe(name)), indent=2))


@collections.command("index")
@click.argument("name")
@click.argument("field")
@click.argument("kind", type=click.Choice(["keyword", "integer", "float", "bool", "datetime", "text"]))
@click.option("--stemmer", help="text: a Snowball stemmer's language, e.g. english (default: none)")
@click.option("--stopwords", help="text: a stopword list's language, e.g. english (default: none)")
@click.option("--k1", type=click.FloatRange(0), help="text: BM25 term-frequency saturation (default 1.2)")
@click.option("--b", type=click.FloatRange(0, 1), help="text: BM25 length normalisation (default 0.75)")
@ADDRESS
@TIMEOUT
def index(
    name: str,
    field: str,
    kind: str,
    stemmer: str | None,
    stopwords: str | None,
    k1: float | None,
    b: float | None,
    address: str,
    timeout: float,
) -> None:
    """Index payload FIELD of collection NAME as KIND: filters on it read the index, and a text
    index makes the field searchable by keyword (vecshard search --keyword)."""
    if kind != "text" and any(v is not None for v in (stemmer, stopwords, k1, b)):
        raise click.UsageError("--stemmer, --stopwords, --k1 and --b apply to a text index")
    with connect(address, timeout) as c:
        info = c.create_payload_index(name, field, kind, stemmer=stemmer, stopwords=stopwords, k1=k1, b=b)
    text = info.text_indexes.get(field)
    detail = ""
    if text is not None:
        analyzer = f"stemmer {text.stemmer or 'none'}, stopwords {text.stopwords or 'none'}"
        detail = f" ({analyzer}, k1 {text.k1:g}, b {text.b:g}; {text.documents:,} documents)"
    click.echo(f"indexed {name}.{field} as {kind}{detail}")


@collections.command("drop")
@click.argument("name")
@click.confirmation_option(prompt="Drop the collection and all its vectors?")
@ADDRESS
@TIMEOUT
def drop(name: str, address: str, timeout: float) -> None:
    """Drop collection NAME and all its vectors."""
    with connect(address, timeout) as c:
        c.drop_collection(name)
    click.echo(f"dropped {name}")


def read_records(
    path: Path,
    id_field: str,
    text_field: str,
    payloads: list[dict[str, Any]] | None = None,
    string_ids: bool = False,
) -> tuple[Any, list[str]]:
    """(ids, texts) from JSONL (objects with text_field and, optionally, id_field) or plain text
    (one text per non-empty line; the id is the line number, from 0). With `payloads`, each JSONL
    object's other fields are appended to it (one payload per record). The ids are an int64 array,
    or with `string_ids` a list of str (a string-id collection's)."""
    ids: list[Any] = []
    texts: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if not line.strip():
                continue
            if path.suffix in (".jsonl", ".ndjson"):
                try:
                    obj = json.loads(line)
                    texts.append(str(obj[text_field]))
                except (ValueError, KeyError, TypeError):
                    msg = f"{path}:{n + 1}: expected a JSON object with a {text_field!r} field"
                    raise click.ClickException(msg) from None
                ids.append(_record_id(obj.get(id_field, n), string_ids, f"{path}:{n + 1}"))
                if payloads is not None:
                    payloads.append({k: v for k, v in obj.items() if k not in (id_field, text_field)})
            else:
                texts.append(line.rstrip("\n"))
                ids.append(str(n) if string_ids else n)
    return (ids if string_ids else np.asarray(ids, dtype=np.int64)), texts


def _record_id(value: Any, string_ids: bool, where: str) -> Any:
    """A record's id: its str for a string-id collection, else an int."""
    if string_ids:
        return str(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise click.ClickException(
            f"{where}: id {value!r} is not an integer (a collection created with --id-type string takes str ids)"
        ) from None


def read_vectors(path: Path) -> np.ndarray:
    """Vectors from .npy (memory-mapped) or TEXMEX .fvecs."""
    if path.suffix == ".npy":
        vectors: np.ndarray = np.load(path, mmap_mode="r")
        return vectors
    if path.suffix == ".fvecs":
        a = np.fromfile(path, dtype="<i4")
        return a.reshape(-1, int(a[0]) + 1)[:, 1:].view("<f4")
    raise click.ClickException(f"{path}: vectors must be .npy or .fvecs")


@click.command()
@click.argument("collection")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id-field", default="id", show_default=True, help="JSONL: field holding the int id")
@click.option("--text-field", default="text", show_default=True, help="JSONL: field holding the text")
@click.option("--start-id", default=0, show_default=True, help=".npy/.fvecs: id of the first vector")
@click.option("--upsert", is_flag=True, help="replace ids that exist (--on-conflict replace)")
@click.option(
    "--on-conflict",
    type=click.Choice(["fail", "skip", "replace"]),
    help="what to do with ids already stored  [default: fail]",
)
@click.option("--batch-size", default=256, show_default=True, help="inputs per request")
@click.option(
    "--payload/--no-payload",
    default=True,
    show_default=True,
    help="JSONL: store each object's other fields as the point's payload",
)
@ADDRESS
@TIMEOUT
def add(
    collection: str,
    file: Path,
    id_field: str,
    text_field: str,
    start_id: int,
    upsert: bool,
    on_conflict: str | None,
    batch_size: int,
    payload: bool,
    address: str,
    timeout: float,
) -> None:
    """Add FILE to COLLECTION: texts from .jsonl/.txt (embedded by the collection's model; a JSON
    line's other fields become the point's payload) or vectors from .npy/.fvecs. In a collection
    with string ids, the ids are the JSONL id field's strings (line numbers, or row numbers from
    --start-id, written out as strings, otherwise)."""
    payloads: list[dict[str, Any]] | None = [] if payload and file.suffix in (".jsonl", ".ndjson") else None
    with connect(address, timeout) as c:
        string_ids = c.describe(collection).string_ids
    if file.suffix in (".npy", ".fvecs"):
        vectors = read_vectors(file)
        ids: Any = np.arange(start_id, start_id + len(vectors), dtype=np.int64)
        if string_ids:
            ids = [str(i) for i in ids.tolist()]
        send: Callable[[Client, slice], Any] = lambda c, s: c.add(  # noqa: E731
            collection, ids[s], vectors[s], upsert=upsert, on_conflict=on_conflict
        )
    else:
        ids, texts = read_records(file, id_field, text_field, payloads, string_ids)
    total = len(ids)
    with (
        connect(address, timeout) as c,
        click.progressbar(length=total, label=f"adding to {collection}", file=sys.stderr) as bar,
    ):
        if file.suffix in (".npy", ".fvecs"):
            count = 0
            for start in range(0, total, batch_size):
                count = send(c, slice(start, start + batch_size)).count
                bar.update(min(batch_size, total - start))
        else:  # requests sized by the server's embedding speed; retried only when they replace
            count = c.upload(
                collection,
                ids,
                texts=texts,
                batch_size=batch_size,
                upsert=upsert,
                on_conflict=on_conflict,
                retries=3 if upsert or on_conflict in ("replace", "skip") else 0,
                progress=bar.update,
                payloads=payloads if payloads and any(payloads) else None,
            ).count
    click.echo(f"added {total} to {collection} ({count} stored)")


@click.command("import")
@click.argument("collection")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="state file recording the rows imported  [default: FILE.vecshard-import.json]",
)
@click.option("--restart", is_flag=True, help="discard the state file and import the whole file again")
@click.option("--batch-size", type=click.IntRange(1), help="rows per Add  [default: about 4 MiB of vectors]")
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 64), help="Adds in flight at once")
@click.option("--upsert", is_flag=True, help="replace ids that exist (a resumed import always replaces its own rows)")
@click.option(
    "--start-id",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="id of row 0 (ids are row numbers + this; Parquet: when there is no id column)",
)
@click.option("--limit", type=click.IntRange(1), help="import only the first N rows")
@click.option("--vector-column", default="vector", show_default=True, help="Parquet: list<float> column of vectors")
@click.option("--id-column", default="id", show_default=True, help="Parquet: integer id column (if present)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@ADDRESS
@TIMEOUT
@click.pass_context
def import_(
    ctx: click.Context,
    collection: str,
    file: Path,
    state_path: Path | None,
    restart: bool,
    batch_size: int | None,
    parallel: int,
    upsert: bool,
    start_id: int,
    limit: int | None,
    vector_column: str,
    id_column: str,
    quiet: bool,
    address: str,
    timeout: float,
) -> None:
    """Bulk-import FILE into the existing COLLECTION, resumably.

    FILE is .npy, .fvecs / .bvecs (TEXMEX) or .parquet (a vector column, an optional id column,
    every other column stored as the point's payload). Re-running the same command after a failure
    or Ctrl-C skips the rows the server acknowledged (recorded in the state file)."""
    from vecshard_server.cli.importer import run_import

    given = ctx.get_parameter_source("id_column") is not click.core.ParameterSource.DEFAULT
    with connect(address, timeout) as c:
        r = run_import(
            c,
            collection,
            file,
            state_path=state_path,
            restart=restart,
            batch_size=batch_size,
            parallel=parallel,
            upsert=upsert,
            start_id=start_id,
            limit=limit,
            vector_column=vector_column,
            id_column=id_column,
            id_column_given=given,
            quiet=quiet,
        )
    if r["imported"]:
        click.echo(
            f"imported {r['imported']} rows into {collection}, skipped {r['skipped']} already imported, "
            f"in {r['seconds']:.1f} s ({r['rows_per_s']:,.0f} rows/s)"
        )


@click.command()
@click.argument("collection")
@click.option("--text", "texts", multiple=True, help="query text (repeat for several)")
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="query image file (repeat)",
)
@click.option(
    "--vectors", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="query vectors (.npy/.fvecs)"
)
@click.option("--by-id", "by_ids", multiple=True, help="a stored point's id: its vector is the query (repeat)")
@click.option("-k", default=10, show_default=True)
@click.option("--nprobe", default=0, help="IVF lists to probe (0: the collection's default)")
@click.option(
    "--source",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the .jsonl/.txt file that was added: print each hit's text",
)
@click.option("--id-field", default="id", show_default=True)
@click.option("--text-field", default="text", show_default=True)
@click.option(
    "--filter", "filter_text", help="""only points whose payload matches, e.g. 'lang = "en" and year >= 2020'"""
)
@click.option("--payload", "with_payload", is_flag=True, help="print each hit's payload")
@click.option("--with-vectors", is_flag=True, help="print each hit's stored vector")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0), help="skip each query's best N hits")
@click.option(
    "--score-threshold",
    type=float,
    help="keep hits at distance <= T (l2, l1) or similarity >= T (inner_product, cosine)",
)
@click.option("--group-by", help="group the hits by this payload field: up to k groups per query")
@click.option(
    "--group-size", default=3, show_default=True, type=click.IntRange(1), help="with --group-by: hits a group"
)
@click.option(
    "--keyword",
    "keywords",
    multiple=True,
    help="keyword search (BM25 over the text index); with --text/--vectors: hybrid (repeat: one per query)",
)
@click.option("--keyword-field", help="the text index's field, when the collection has several")
@click.option("--fusion", type=click.Choice(["rrf", "linear"]), help="hybrid: how the legs fuse (default rrf)")
@click.option("--weights", help="hybrid, linear fusion: dense,keyword weights, e.g. 0.5,0.5 (default 1,1)")
@click.option("--rrf-k", default=60, show_default=True, type=click.IntRange(1), help="hybrid: RRF's rank constant")
@click.option("--candidates", type=click.IntRange(1), help="hybrid: hits per leg (default max(offset + k, 100))")
@ADDRESS
@TIMEOUT
@AS_JSON
def search(
    collection: str,
    texts: tuple[str, ...],
    images: tuple[Path, ...],
    vectors: Path | None,
    by_ids: tuple[str, ...],
    k: int,
    nprobe: int,
    source: Path | None,
    id_field: str,
    text_field: str,
    filter_text: str | None,
    with_payload: bool,
    with_vectors: bool,
    offset: int,
    score_threshold: float | None,
    group_by: str | None,
    group_size: int,
    keywords: tuple[str, ...],
    keyword_field: str | None,
    fusion: str | None,
    weights: str | None,
    rrf_k: int,
    candidates: int | None,
    address: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Search COLLECTION by text, image, vectors or stored points (--by-id), by keyword (--keyword:
    BM25 over the collection's text index), or both (hybrid: --keyword with one of the others);
    prints the k best per query (with --group-by, the k best groups).

    The filter language: key = value, !=, <, <=, >, >=, key in [...], key not in [...], key is null,
    key is empty, key exists, key ~ "words" (a text field holding the words), id in [...], combined
    with and / or / not and parentheses; dotted keys reach into nested objects. A syntax error shows
    where it is."""
    given = [n for n, v in (("--text", texts), ("--image", images), ("--vectors", vectors), ("--by-id", by_ids)) if v]
    if len(given) > 1 or not (given or keywords):
        raise click.UsageError("give exactly one of --text, --image, --vectors or --by-id, and/or --keyword")
    f = _parsed_filter(filter_text)
    hybrid = _hybrid_options(keywords, keyword_field, fusion, weights, rrf_k, candidates)
    with connect(address, timeout) as c:
        info = c.describe(collection)
        # L2/L1 give distances (smaller is better), IP/COSINE similarities (larger is better); keyword
        # and hybrid searches scores (BM25, fused).
        score = "score" if keywords else "similarity" if info.metric.larger_is_better else "distance"
        opts: dict[str, Any] = {
            **hybrid,
            "k": k,
            "nprobe": nprobe or None,
            "filter": f,
            "with_payload": with_payload,
            "with_vectors": with_vectors,
            "offset": offset,
            "score_threshold": score_threshold,
            "group_by": group_by,
            "group_size": group_size,
        }
        ids = [i if info.string_ids else _int_id(i) for i in by_ids]
        if given:
            labels, result = _search_by(c, collection, texts, images, vectors, ids, opts)
        else:
            labels, result = list(keywords), c.search(collection, **opts)
    lookup: dict[Any, str] = {}
    if source is not None:
        src_ids, src_texts = read_records(source, id_field, text_field, string_ids=info.string_ids)
        lookup = dict(zip(list(src_ids), src_texts, strict=True))
    _print_results(labels, result, _Shown(score, lookup, with_payload, with_vectors, bool(keywords and given)), as_json)


def _print_results(labels: list[str], result: Any, shown: _Shown, as_json: bool) -> None:
    """search's output: per query its hits (or groups), as JSON or tables."""
    out: list[dict[str, Any]]
    if result.groups is None:
        out = [{"query": q, "hits": shown.hits(h)} for q, h in zip(labels, result.hits(), strict=True)]
    else:
        out = [
            {"query": q, "groups": [{"value": g.value, "hits": shown.hits(g.hits)} for g in groups]}
            for q, groups in zip(labels, result.groups, strict=True)
        ]
    if as_json:
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for row in out:
        click.echo(f"query: {row['query']}")
        for group in row.get("groups", [row]):
            if "value" in group:
                click.echo(f"group: {json.dumps(group['value'], ensure_ascii=False)}")
            shown.table(group["hits"])


def _int_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an integer id (only a collection created with --id-type string has string ids)",
            param_hint="--by-id",
        ) from None


class _Shown:
    """How search prints hits: the score's name, the texts of a --source file, payloads, vectors."""

    def __init__(
        self, score: str, lookup: dict[Any, str], with_payload: bool, with_vectors: bool, legs: bool = False
    ) -> None:
        self.score, self.lookup, self.with_payload, self.with_vectors = score, lookup, with_payload, with_vectors
        self.legs = legs  # a hybrid search: each hit's score and rank in the dense and keyword legs

    def hits(self, hits: list[Any]) -> list[dict[str, Any]]:
        out = []
        for h in hits:
            hit: dict[str, Any] = {"id": h.id, self.score: h.distance}
            if self.legs:
                for leg in ("dense", "keyword"):
                    place = getattr(h, leg)
                    hit[leg] = None if place is None else {"score": place.score, "rank": place.rank}
            if self.lookup:
                hit["text"] = self.lookup.get(h.id, "")
            if self.with_payload:
                hit["payload"] = h.payload or {}
            if self.with_vectors:
                hit["vector"] = None if h.vector is None else [round(float(v), 6) for v in h.vector]
            out.append(hit)
        return out

    def table(self, hits: list[dict[str, Any]]) -> None:
        extra = [
            n for n, on in (("text", self.lookup), ("payload", self.with_payload), ("vector", self.with_vectors)) if on
        ]
        legs = ["dense", "keyword"] if self.legs else []
        rows = [
            (
                r + 1,
                h["id"],
                f"{h[self.score]:.4f}",
                *(_leg_cell(h[n]) for n in legs),
                *(_clip(h[n] if n == "text" else json.dumps(h[n], ensure_ascii=False)) for n in extra),
            )
            for r, h in enumerate(hits)
        ]
        _table(["rank", "id", self.score, *legs, *extra], rows)


def _leg_cell(place: dict[str, Any] | None) -> str:
    """A hit's place in a hybrid search's leg, as a table shows it: score (#rank), or - when absent."""
    return "-" if place is None else f"{place['score']:.4f} (#{place['rank']})"


def _hybrid_options(
    keywords: tuple[str, ...],
    field: str | None,
    fusion: str | None,
    weights: str | None,
    rrf_k: int,
    candidates: int | None,
) -> dict[str, Any]:
    """search's keyword and hybrid options from the command line (the SDK checks them further)."""
    if not keywords:
        if field or fusion or weights or candidates or rrf_k != 60:
            raise click.UsageError("--keyword-field, --fusion, --weights, --rrf-k and --candidates need --keyword")
        return {}
    pair = None
    if weights is not None:
        try:
            pair = tuple(float(w) for w in weights.split(","))
        except ValueError:
            pair = ()
        if len(pair) != 2:
            raise click.BadParameter("give two numbers: dense,keyword, e.g. 0.5,0.5", param_hint="--weights")
    return {
        "keyword": list(keywords) if len(keywords) > 1 else keywords[0],
        "keyword_field": field,
        "fusion": fusion,
        "weights": pair,
        "rrf_k": rrf_k,
        "candidates": candidates,
    }


def _parsed_filter(text: str | None) -> dict[str, Any] | None:
    """The --filter text as a filter dict; a syntax error is a usage error showing where it is."""
    if text is None:
        return None
    try:
        return parse_filter(text)
    except FilterSyntaxError as err:
        raise click.BadParameter(str(err), param_hint="--filter") from None


@click.command()
@click.argument("collection")
@click.option("--filter", "filter_text", help="""count only points whose payload matches, e.g. 'lang = "en"'""")
@ADDRESS
@TIMEOUT
def count(collection: str, filter_text: str | None, address: str, timeout: float) -> None:
    """Print how many points COLLECTION holds (matching --filter, if given)."""
    f = _parsed_filter(filter_text)
    with connect(address, timeout) as c:
        click.echo(c.count(collection, f))


@click.command()
@click.argument("collection")
@click.argument("field")
@click.option("--filter", "filter_text", help="""count only points whose payload matches, e.g. 'year >= 2020'""")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10_000), help="values to print")
@ADDRESS
@TIMEOUT
@AS_JSON
def facet(
    collection: str, field: str, filter_text: str | None, limit: int, address: str, timeout: float, as_json: bool
) -> None:
    """Count the points of COLLECTION per value of the payload FIELD (most common first)."""
    f = _parsed_filter(filter_text)
    with connect(address, timeout) as c:
        counts = c.facet(collection, field, f, limit)
    if as_json:
        click.echo(json.dumps([{"value": x.value, "count": x.count} for x in counts], ensure_ascii=False))
        return
    _table([field, "count"], [(json.dumps(x.value, ensure_ascii=False), x.count) for x in counts])


@click.command()
@click.argument("collection")
@click.option("--filter", "filter_text", help="""only points whose payload matches, e.g. 'lang = "en"'""")
@click.option("--order-by", help="a payload field: points in the order of its values (those without it are left out)")
@click.option("--desc", is_flag=True, help="with --order-by: largest values first")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1), help="points to print")
@click.option("--with-vectors", is_flag=True, help="print each point's vector")
@ADDRESS
@TIMEOUT
@AS_JSON
def scroll(
    collection: str,
    filter_text: str | None,
    order_by: str | None,
    desc: bool,
    limit: int,
    with_vectors: bool,
    address: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Print the points of COLLECTION (matching --filter) with their payloads: by id, or in the
    order of a payload field (--order-by, --desc)."""
    if desc and order_by is None:
        raise click.UsageError("--desc needs --order-by FIELD (points come by ascending id otherwise)")
    f = _parsed_filter(filter_text)
    with connect(address, timeout) as c:
        pages = c.scroll(
            collection,
            f,
            with_vectors=with_vectors,
            page_size=min(limit, 1000),
            order_by=order_by,
            order="desc" if desc else "asc",
        )
        points = list(itertools.islice(pages, limit))
    rows: list[dict[str, Any]] = []
    for p in points:
        row: dict[str, Any] = {"id": p.id, "payload": p.payload or {}}
        if with_vectors:
            row["vector"] = None if p.vector is None else [round(float(v), 6) for v in p.vector]
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    header = ["id", "payload", *(["vector"] if with_vectors else [])]
    _table(
        header,
        [tuple(_clip(json.dumps(r[h], ensure_ascii=False)) if h != "id" else r[h] for h in header) for r in rows],
    )


@click.command()
@click.option("--text", "texts", multiple=True, help="text to embed (repeat)")
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="image file to embed (repeat)",
)
@click.option("--model", default="", help="model name (default: the server's default)")
@click.option("--role", type=click.Choice(["", "query", "passage"]), default="", help="prefix role for E5-style models")
@ADDRESS
@TIMEOUT
def embed(
    texts: tuple[str, ...], images: tuple[Path, ...], model: str, role: str, address: str, timeout: float
) -> None:
    """Embed texts or images with a server model; prints JSON (model, fingerprint, vectors)."""
    if bool(texts) == bool(images):
        raise click.UsageError("give --text or --image (one kind)")
    with connect(address, timeout) as c:
        e = c.embed(
            texts=list(texts) if texts else None, images=list(images) if images else None, model=model, role=role
        )
    click.echo(
        json.dumps(
            {
                "model": e.model.name,
                "fingerprint": e.fingerprint,
                "dim": e.model.dim,
                "vectors": e.vectors.round(6).tolist(),
            }
        )
    )


def project_2d(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D coordinates of the rows of x: PCA (numpy SVD of the centred data) or t-SNE (scikit-learn)."""
    x = np.asarray(x, dtype=np.float64)
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise click.ClickException("t-SNE needs scikit-learn: pip install 'vecshard[plot]'") from None
        perplexity = float(min(30, max(2, len(x) // 4)))
        return np.asarray(TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x))
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (
        np.asarray(centred @ vt[:2].T) if vt.shape[0] >= 2 else np.hstack([centred @ vt[:1].T, np.zeros((len(x), 1))])
    )


@click.command()
@click.argument("collection")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="PNG to write (default COLLECTION.png)")
@click.option("--points", default=2000, show_default=True, help="how many vectors to sample")
@click.option("--method", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True)
@click.option(
    "--color",
    type=click.Choice(["shard", "list"]),
    default="shard",
    show_default=True,
    help="colour by shard group or by IVF list",
)
@click.option("--seed", default=0, show_default=True)
@ADDRESS
@TIMEOUT
def plot(
    collection: str, out: Path | None, points: int, method: str, color: str, seed: int, address: str, timeout: float
) -> None:
    """Draw a 2-D map of a sample of COLLECTION to a PNG, coloured by shard or by IVF list."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("plot needs matplotlib: pip install 'vecshard[plot]'") from None
    with connect(address, timeout) as c:
        sample = c.sample(collection, points, seed=seed)
    if len(sample.ids) < 2:
        raise click.ClickException(f"{collection} holds {len(sample.ids)} vectors: nothing to plot")
    labels = sample.shards if color == "shard" else sample.lists
    if color == "list" and (labels < 0).all():
        raise click.ClickException(f"{collection} is not trained (no IVF lists): use --color shard")
    xy = project_2d(sample.vectors, method, seed)
    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab20" if labels.max() < 20 else "viridis", s=6)
    ax.set_title(f"{collection}: {len(sample.ids)} vectors, {method.upper()}, coloured by {color}")
    ax.set_xticks([])
    ax.set_yticks([])
    if labels.max() < 20:
        ax.legend(*scatter.legend_elements(), title=color, loc="best", fontsize=7)
    out = out or Path(f"{collection}.png")
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    click.echo(f"wrote {out} ({len(sample.ids)} points from {len(np.unique(sample.shards))} shards)")


def _clip(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: list[str], rows: list[tuple[Any, ...]]) -> None:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


@click.command()
@click.option("--shards", default=0, type=click.IntRange(0, 1024), help="shard groups to place the collections on")
@click.option("--collection", "names", multiple=True, help="collection to move (repeat; default: every collection)")
@click.option("--abort", is_flag=True, help="return reshards in progress to their old placement")
@click.option("--status", "status_only", is_flag=True, help="show the reshards in progress; change nothing")
@click.option("--max-points-per-s", default=0, show_default=True, help="throttle the copy (0: no limit)")
@click.option("--page-size", default=0, help="points per copied page (0: the server's 2,000)")
@click.option("--detach", is_flag=True, help="start it and return (the coordinator runs it; --status follows it)")
@ADDRESS
@click.option("--timeout", default=60.0, show_default=True, help="seconds per call")
def reshard(
    shards: int,
    names: tuple[str, ...],
    abort: bool,
    status_only: bool,
    max_points_per_s: int,
    page_size: int,
    detach: bool,
    address: str,
    timeout: float,
) -> None:
    """Move collections to --shards shard groups, online: reads and writes go on throughout
    (docs/operations.md, Resharding). Run it again to resume an interrupted reshard."""
    if not (abort or status_only) and shards < 1:
        raise click.BadParameter("give the number of shard groups (--shards N), or --abort / --status")
    with connect(address, timeout) as c:
        progress = c.reshard(
            shards,
            collections=names,
            abort=abort,
            status_only=status_only,
            wait=False,
            max_points_per_s=max_points_per_s,
            page_size=page_size,
        )
        terminal = {"DONE", "ABORTED", "UNCHANGED", "IDLE", "FAILED"}
        while not (detach or status_only or abort) and any(p.phase not in terminal for p in progress):
            _progress_lines(progress, sys.stderr.isatty())
            time.sleep(1.0)
            progress = c.reshard(collections=[p.collection for p in progress], status_only=True)
        _progress_lines(progress, False)
        failed = [p for p in progress if p.phase == "FAILED"]
        if failed:
            raise click.ClickException(
                "; ".join(f"{p.collection}: {p.error}" for p in failed) + " (run the same command again to resume)"
            )


def _progress_lines(progress: list[Any], overwrite: bool) -> None:
    for p in progress:
        share = f" ({p.copied / p.total:.0%})" if p.total else ""
        line = (
            f"{p.collection}: {p.from_shards} -> {p.to_shards or p.from_shards} groups, {p.phase}, "
            f"{p.copied:,} points copied{share}, {p.moved:,} moved to another group"
        )
        click.echo(line + (" " * 8 + "\r" if overwrite else ""), nl=not overwrite, err=overwrite)


COMMANDS = [collections, add, import_, search, count, facet, scroll, embed, plot, reshard, *BACKUP_COMMANDS]


def _search_by(
    c: Any,
    collection: str,
    texts: tuple[str, ...],
    images: tuple[Path, ...],
    vectors: Path | None,
    by_ids: list[Any],
    opts: dict[str, Any],
) -> tuple[list[str], Any]:
    """The search by whichever of texts, images, a vectors file or stored points was given: (a label
    per query, result)."""
    if texts:
        return list(texts), c.search(collection, texts=list(texts), **opts)
    if images:
        return [str(p) for p in images], c.search(collection, images=list(images), **opts)
    if by_ids:
        return [f"id {i}" for i in by_ids], c.search(collection, by_ids=by_ids, **opts)
    assert vectors is not None
    q = np.asarray(read_vectors(vectors))
    return [f"#{i}" for i in range(len(q))], c.search(collection, q, **opts)
