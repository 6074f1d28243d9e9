"""`vecshard bench --filter`: filtered search through a local cluster, against exact filtered ground
truth, at several pass rates, with filters uncorrelated, correlated and anti-correlated with each
query's cluster, beside the unfiltered baseline; optionally Chroma's server with its `where` filter
on the same data in the same run.

Each point carries {"kw": one of 1,000 keywords, "year": int, "price": float, "u": uniform int in
[0, 10000), "cl": its cluster}. Uncorrelated filters cut on `u`; correlated ones take the clusters
nearest the query (anti-correlated: farthest) whole, then part of the next one (by `u`), until the
pass rate is reached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vecshard import Client
from vecshard_server.bench.measure import recall_at_k
from vecshard_server.cluster.local import LocalCluster

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U_RANGE = 10_000
RATES = (0.0001, 0.001, 0.01, 0.1, 0.5)
CHROMA_QUERIES = 30  # Chroma is measured on the first 30 queries (its filtered ones take up to ~1 s)
KINDS = ("uncorrelated", "correlated", "anti-correlated")


def make_data(n: int, d: int, clusters: int, nq: int, seed: int = 0) -> dict[str, Any]:
    """Clustered vectors (as bench.datasets.clustered), their payload columns and queries."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(clusters, d)).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    x = (centers[labels] + rng.normal(0, 1, size=(n, d))).astype(np.float32)
    q_labels = rng.integers(0, clusters, size=nq)
    queries = (centers[q_labels] + rng.normal(0, 1, size=(nq, d))).astype(np.float32)
    cols = {
        "u": rng.integers(0, U_RANGE, size=n),
        "cl": labels,
        "kw": rng.integers(0, 1000, size=n),
        "year": 1990 + rng.integers(0, 35, size=n),
        "price": np.round(rng.random(n) * 100, 2),
    }
    return {"x": x, "queries": queries, "centers": centers, "cols": cols}


def payloads(cols: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"kw": f"k{kw}", "year": int(y), "price": float(p), "u": int(u), "cl": int(c)}
        for kw, y, p, u, c in zip(
            cols["kw"].tolist(),
            cols["year"].tolist(),
            cols["price"].tolist(),
            cols["u"].tolist(),
            cols["cl"].tolist(),
            strict=True,
        )
    ]


def make_filter(kind: str, rate: float, query: F32, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vecshard filter dict, Chroma `where`) passing about `rate` of the points."""
    cols, n = data["cols"], data["x"].shape[0]
    if kind == "uncorrelated":
        cut = max(1, round(rate * U_RANGE))
        return {"must": [{"key": "u", "range": {"lt": cut}}]}, {"u": {"$lt": cut}}
    sizes = np.bincount(cols["cl"], minlength=data["centers"].shape[0])
    order = np.argsort(((data["centers"] - query) ** 2).sum(axis=1))
    if kind == "anti-correlated":
        order = order[::-1]
    want, taken, cum = rate * n, [], 0
    for c in order.tolist():
        if cum + sizes[c] > want:
            break
        taken.append(c)
        cum += int(sizes[c])
    should: list[dict[str, Any]] = []
    where: list[dict[str, Any]] = []
    if taken:
        should.append({"key": "cl", "match_any": taken})
        where.append({"cl": {"$in": taken}})
    rest = want - cum
    if rest >= 1 and len(taken) < len(order):
        nxt = int(order[len(taken)])
        cut = max(1, math.ceil(rest / max(1, sizes[nxt]) * U_RANGE))
        should.append({"must": [{"key": "cl", "match": nxt}, {"key": "u", "range": {"lt": cut}}]})
        where.append({"$and": [{"cl": nxt}, {"u": {"$lt": cut}}]})
    if not should:  # a rate below one point: nothing passes
        return {"must": [{"key": "u", "range": {"lt": 0}}]}, {"u": {"$lt": 0}}
    return {"should": should}, (where[0] if len(where) == 1 else {"$or": where})


def matches_of(f: dict[str, Any], cols: dict[str, Any]) -> npt.NDArray[np.bool_]:
    """The points passing a filter made by make_filter, from the columns (the bench's own reference)."""

    def cond(c: dict[str, Any]) -> npt.NDArray[np.bool_]:
        if "must" in c:
            out = np.ones(cols["u"].size, dtype=bool)
            for x in c["must"]:
                out &= cond(x)
            return out
        col = cols[c["key"]]
        if "range" in c:
            return np.asarray(col < c["range"]["lt"])
        if "match_any" in c:
            return np.isin(col, c["match_any"])
        return np.asarray(col == c["match"])

    if "must" in f:
        return cond(f)
    out = np.zeros(cols["u"].size, dtype=bool)
    for c in f["should"]:
        out |= cond(c)
    return out


def exact_topk(x: F32, mask: npt.NDArray[np.bool_], q: F32, k: int) -> I64:
    ids = np.flatnonzero(mask).astype(np.int64)
    if not ids.size:
        return np.full(k, -1, dtype=np.int64)
    _, I = faiss.knn(q.reshape(1, -1), np.ascontiguousarray(x[ids]), min(k, ids.size))
    out = np.full(k, -1, dtype=np.int64)
    out[: I.shape[1]] = ids[I[0]]
    return out


def _loop(search: Callable[[int], I64], nq: int, k: int, gt: list[I64], counts: list[int]) -> dict[str, float]:
    """Every query once (warm-up), then again timed: QPS, p50/p99 ms, recall@k, and the share of
    queries given min(k, matches) hits."""
    found = [search(i) for i in range(nq)]
    lat = []
    start = time.perf_counter()
    for i in range(nq):
        t0 = time.perf_counter()
        search(i)
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    full = np.mean([(f >= 0).sum() == min(k, c) for f, c in zip(found, counts, strict=True)])
    rec = [
        recall_at_k(f[None, :], g[None, :], min(k, max(1, c))) if c else 1.0
        for f, g, c in zip(found, gt, counts, strict=True)
    ]
    p50, p99 = (float(v) * 1e3 for v in np.percentile(lat, [50, 99]))
    return {"qps": nq / elapsed, "p50_ms": p50, "p99_ms": p99, "recall": float(np.mean(rec)), "full": float(full)}


# (kind, rate, vecshard filter per query, Chroma `where` per query, matches per query, exact top-k per query)
FilterConfig = tuple[str, float, list[dict[str, Any]], list[dict[str, Any]], list[int], list[I64]]
PAYLOAD_INDEXES = (("u", "integer"), ("cl", "integer"), ("kw", "keyword"), ("year", "integer"), ("price", "float"))


def run_filter_bench(
    n: int,
    dim: int,
    nlist: int,
    nprobe: int,
    k: int,
    nq: int,
    shards: int,
    peers: Sequence[str],
    rates: Sequence[float] = RATES,
    clusters: int = 1000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = make_data(n, dim, clusters, nq)
    x, queries = data["x"], data["queries"]
    points = payloads(data["cols"])
    configs = filter_configs(data, rates, k)
    _, gt_all = faiss.knn(queries, x, k)
    log(f"data, filters and exact ground truth in {time.perf_counter() - t0:.0f}s")
    result: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "nlist": nlist,
        "nprobe": nprobe,
        "k": k,
        "nq": nq,
        "shards": shards,
        "clusters": clusters,
        "rows": [],
    }
    with LocalCluster(shards=shards, log_level="WARNING") as cluster, Client(cluster.address, timeout=3600) as c:
        name = "bench_filter"
        result["load_s"], result["train_s"] = load_collection(c, name, x, points, nlist, nprobe)
        log(
            f"vecshard loaded {n:,} points with payloads in {result['load_s']:.0f}s, trained in "
            f"{result['train_s']:.0f}s"
        )
        all_counts = [n] * nq
        gt_rows = [gt_all[i] for i in range(nq)]
        base = _loop(lambda i: c.search(name, queries[i], k).ids[0], nq, k, gt_rows, all_counts)
        with_pl = _loop(lambda i: c.search(name, queries[i], k, with_payload=True).ids[0], nq, k, gt_rows, all_counts)
        result["unfiltered"] = base
        result["with_payload"] = with_pl
        log(f"unfiltered: {base}")
        for config in configs:
            row = filtered_row(c, name, queries, config, k, n, nq)
            result["rows"].append(row)
            log(f"vecshard {row['kind']} {row['rate']:.2%}: {row}")
    if "chroma" in peers:
        result["chroma"] = chroma_filtered(x, points, queries, configs, gt_rows, k, log)
    return result


def filter_configs(data: dict[str, Any], rates: Sequence[float], k: int) -> list[FilterConfig]:
    """For each kind of filter and pass rate: every query's filter (both forms), its number of matches and
    its exact filtered top-k."""
    x, queries = data["x"], data["queries"]
    configs: list[FilterConfig] = []
    for kind in KINDS:
        for rate in rates:
            fs, wheres, counts, gts = [], [], [], []
            for q in queries:
                f, where = make_filter(kind, rate, q, data)
                mask = matches_of(f, data["cols"])
                fs.append(f)
                wheres.append(where)
                counts.append(int(mask.sum()))
                gts.append(exact_topk(x, mask, q, k))
            configs.append((kind, rate, fs, wheres, counts, gts))
    return configs


def load_collection(
    c: Client, name: str, x: F32, points: list[dict[str, Any]], nlist: int, nprobe: int
) -> tuple[float, float]:
    """Create the IVF_FLAT collection, upload x with its payloads, train it and index the payload fields:
    (seconds of the upload, of training)."""
    n, dim = x.shape
    c.create_collection(name, dim, "l2", "ivf_flat", nlist=nlist, nprobe=nprobe, train_threshold=n + 1)
    t1 = time.perf_counter()
    c.upload(name, np.arange(n), x, payloads=points, batch_size=5000, parallel=2)
    load_s = time.perf_counter() - t1
    t1 = time.perf_counter()
    c.train(name)
    train_s = time.perf_counter() - t1
    for field, kind in PAYLOAD_INDEXES:
        c.create_payload_index(name, field, kind)
    return load_s, train_s


def filtered_row(c: Client, name: str, queries: F32, config: FilterConfig, k: int, n: int, nq: int) -> dict[str, Any]:
    """One kind and pass rate through vecshard: _loop's measures, the pass rate and the plans the shards chose."""
    kind, rate, fs, _, counts, gts = config
    plans: dict[str, int] = {}

    def search(i: int) -> I64:
        res = c.search(name, queries[i], k, filter=fs[i])
        for p in res.plans:
            plans[p.plan] = plans.get(p.plan, 0) + 1
        ids: I64 = res.ids[0]
        return ids

    row = {"kind": kind, "rate": rate, "pass": float(np.mean(counts)) / n, **_loop(search, nq, k, gts, counts)}
    row["plans"] = plans
    return row


def chroma_filtered(
    x: F32,
    points: list[dict[str, Any]],
    queries: F32,
    configs: list[Any],
    gt_all: list[I64],
    k: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The same data, queries and filters (as `where`) on Chroma's server (HNSW, its defaults)."""
    from vecshard_server.bench.peers import chroma_server

    with chroma_server() as client:
        if isinstance(client, str):
            return {"skipped": client}
        col = client.create_collection("bench_filter", metadata={"hnsw:space": "l2"})
        t0 = time.perf_counter()
        ids = [str(i) for i in range(x.shape[0])]
        step = 5000
        for s in range(0, x.shape[0], step):
            col.add(ids=ids[s : s + step], embeddings=x[s : s + step], metadatas=points[s : s + step])
        out: dict[str, Any] = {"load_s": time.perf_counter() - t0, "rows": []}
        log(f"chroma loaded in {out['load_s']:.0f}s")
        nq = min(queries.shape[0], CHROMA_QUERIES)  # its filtered queries take up to a second each

        def found(res: dict[str, Any]) -> I64:
            got = [int(i) for i in res["ids"][0]]
            return np.array(got + [-1] * (k - len(got)), dtype=np.int64)

        def plain(i: int) -> I64:
            return found(col.query(query_embeddings=queries[i : i + 1], n_results=k, include=[]))

        out["unfiltered"] = _loop(plain, nq, k, gt_all[:nq], [x.shape[0]] * nq)
        for kind, rate, _, wheres, counts, gts in configs:

            def search(i: int, wheres: list[dict[str, Any]] = wheres) -> I64:
                return found(col.query(query_embeddings=queries[i : i + 1], n_results=k, where=wheres[i], include=[]))

            row = {"kind": kind, "rate": rate, **_loop(search, nq, k, gts[:nq], counts[:nq])}
            out["rows"].append(row)
            log(f"chroma {kind} {rate:.2%}: {row}")
    return out


def format_markdown(result: dict[str, Any]) -> str:
    base = result["unfiltered"]
    chroma = result.get("chroma") or {}
    by_key = {(r["kind"], r["rate"]): r for r in chroma.get("rows", [])}
    lines = [
        f"# Filtered search: {result['n']:,} x {result['dim']} clustered ({result['clusters']} clusters), IVF_FLAT "
        f"nlist {result['nlist']} nprobe {result['nprobe']}, k {result['k']}, {result['nq']} queries one by one, "
        f"{result['shards']} shards",
        "",
        f"Load with payloads {result['load_s']:.0f}s, train {result['train_s']:.0f}s. Unfiltered: recall "
        f"{base['recall']:.3f}, {base['qps']:,.0f} QPS, p50 {base['p50_ms']:.2f} ms, p99 {base['p99_ms']:.2f} ms; "
        f"with_payload p99 {result['with_payload']['p99_ms']:.2f} ms "
        f"(+{result['with_payload']['p99_ms'] - base['p99_ms']:.2f} ms).",
        "",
        "| filter | pass rate | recall@10 | min(k, matches) hits | QPS | p50 ms | p99 ms | p99 / unfiltered "
        "| plans | Chroma recall | Chroma QPS | Chroma p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        ch = by_key.get((r["kind"], r["rate"]))
        chroma_cols = f"{ch['recall']:.3f} | {ch['qps']:,.0f} | {ch['p99_ms']:.2f}" if ch else "– | – | –"
        plans = ", ".join(f"{p} {v}" for p, v in sorted(r["plans"].items()))
        lines.append(
            f"| {r['kind']} | {r['pass']:.4%} | {r['recall']:.3f} | {r['full']:.0%} | {r['qps']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p99_ms'] / base['p99_ms']:.2f} | {plans} | {chroma_cols} |"
        )
    if chroma.get("skipped"):
        lines += ["", f"Chroma: {chroma['skipped']}"]
    elif chroma:
        cu = chroma["unfiltered"]
        lines += [
            "",
            f"Chroma (the first {CHROMA_QUERIES} queries) unfiltered: recall {cu['recall']:.3f}, "
            f"{cu['qps']:,.0f} QPS, p99 {cu['p99_ms']:.2f} ms; load {chroma['load_s']:.0f}s.",
        ]
    return "\n".join(lines) + "\n"
