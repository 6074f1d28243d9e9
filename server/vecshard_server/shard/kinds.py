"""The faiss index kinds of a partition: their construction, training and assignment.

- FLAT collections (and IVF_FLAT ones until trained): `IndexIDMap2(IndexFlat)`, exact;
- IVF_FLAT, trained: `IndexIVFFlat` over the centroids the coordinator trained once for all shards,
  with a hashtable direct map so vectors can be read back and removed by id;
- IVF_SQ8 / IVF_SQFP16 / IVF_PQ, and IVF_FLAT over an HNSW coarse quantizer: built from the codec
  the coordinator trained (an empty serialized faiss index of the kind, see `train_state`); the
  compressed kinds have no direct map (their exact floats live in a `VectorStore`).
COSINE collections hold unit vectors in an inner-product index (the coordinator normalises).

Functions only: no partition state lives here. The partition (`engine.ShardIndex`) and the coordinator
(which trains, and assigns vectors to lists for reshards) call them.
"""

from __future__ import annotations

import logging
from typing import Any

import faiss  # its bundled type stubs are incomplete (no DirectMap, no SearchParameters kwargs)
import numpy as np
import numpy.typing as npt

from vecshard.errors import InvalidArgument
from vecshard.types import IndexType, Metric
from vecshard_server.common.spec import CollectionSpec

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

HNSW_M = 32  # neighbours per node of an HNSW coarse quantizer (faiss's IVF65536_HNSW32)

_FAISS_METRIC = {
    Metric.L2: faiss.METRIC_L2,
    Metric.INNER_PRODUCT: faiss.METRIC_INNER_PRODUCT,
    Metric.COSINE: faiss.METRIC_INNER_PRODUCT,
    Metric.L1: faiss.METRIC_L1,
}


def faiss_metric(metric: Metric) -> int:
    return int(_FAISS_METRIC[metric])


def new_flat(spec: CollectionSpec) -> Any:
    """An empty exact index of the collection's dim and metric, keyed by id."""
    return faiss.IndexIDMap2(faiss.IndexFlat(spec.dim, faiss_metric(spec.metric)))


def new_ivf(spec: CollectionSpec, centroids: F32, codec: bytes = b"") -> Any:
    """An empty IVF index of the collection's kind whose coarse quantizer holds exactly `centroids`
    (already trained); compressed kinds are built from `codec` (see `train_state`). InvalidArgument
    when the codec is not such an index."""
    if spec.trained_codec:
        ivf = _from_codec(spec, centroids, codec)
        if not spec.quantized:  # IVF_FLAT over an HNSW quantizer: read back and removed by id, as below
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        return ivf
    m = faiss_metric(spec.metric)
    quantizer = faiss.IndexFlat(spec.dim, m)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    ivf = faiss.IndexIVFFlat(quantizer, spec.dim, spec.nlist, m)
    assert ivf.is_trained
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    return ivf


def _untrained_ivf(spec: CollectionSpec) -> Any:
    """An untrained IVF index of the collection's kind and coarse quantizer."""
    m = faiss_metric(spec.metric)
    quantizer = faiss.IndexHNSWFlat(spec.dim, HNSW_M, m) if spec.hnsw_quantizer else faiss.IndexFlat(spec.dim, m)
    kind = spec.index_type
    ivf: Any
    if kind is IndexType.IVF_PQ:
        ivf = faiss.IndexIVFPQ(quantizer, spec.dim, spec.nlist, spec.pq_m, spec.pq_nbits, m)
    elif kind is IndexType.IVF_SQ8 or kind is IndexType.IVF_SQFP16:
        qtype = faiss.ScalarQuantizer.QT_8bit if kind is IndexType.IVF_SQ8 else faiss.ScalarQuantizer.QT_fp16
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, spec.dim, spec.nlist, qtype, m)
    else:
        ivf = faiss.IndexIVFFlat(quantizer, spec.dim, spec.nlist, m)
    return ivf


def _faiss_class(kind: IndexType) -> Any:
    if kind is IndexType.IVF_PQ:
        return faiss.IndexIVFPQ
    if kind is IndexType.IVF_SQ8 or kind is IndexType.IVF_SQFP16:
        return faiss.IndexIVFScalarQuantizer
    return faiss.IndexIVFFlat


def _from_codec(spec: CollectionSpec, centroids: F32, codec: bytes) -> Any:
    name = spec.index_type.name
    try:
        if not codec:
            raise ValueError("it is empty")
        ivf: Any = faiss.deserialize_index(np.frombuffer(codec, dtype=np.uint8))
    except (RuntimeError, ValueError) as err:
        raise InvalidArgument(
            f"the codec of a {name} collection must be a serialized empty trained faiss "
            f"index: {str(err).splitlines()[0][:200]}"
        ) from None
    want = _faiss_class(spec.index_type)
    sq = {IndexType.IVF_SQ8: faiss.ScalarQuantizer.QT_8bit, IndexType.IVF_SQFP16: faiss.ScalarQuantizer.QT_fp16}
    if (
        type(ivf) is not want
        or ivf.d != spec.dim
        or ivf.nlist != spec.nlist
        or ivf.ntotal != 0
        or not ivf.is_trained
        or ivf.metric_type != faiss_metric(spec.metric)
        or (spec.index_type is IndexType.IVF_PQ and (ivf.pq.M, ivf.pq.nbits) != (spec.pq_m, spec.pq_nbits))
        or (spec.index_type in sq and ivf.sq.qtype != sq[spec.index_type])
    ):
        raise InvalidArgument(
            f"the codec is a {type(ivf).__name__} (d={ivf.d}, nlist={getattr(ivf, 'nlist', '?')}, ntotal={ivf.ntotal}) "
            f"but collection {spec.name!r} needs an empty trained {want.__name__} of its dim, nlist and metric"
        )
    hnsw = isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSWFlat)
    if hnsw != spec.hnsw_quantizer:
        raise InvalidArgument(
            f"the codec's coarse quantizer is {'HNSW' if hnsw else 'flat'}, the collection's is "
            f"{'HNSW' if spec.hnsw_quantizer else 'flat'}"
        )
    held = np.asarray(ivf.quantizer.reconstruct_n(0, spec.nlist), dtype=np.float32)
    if not np.array_equal(held, np.asarray(centroids, dtype=np.float32)):
        raise InvalidArgument("the codec's coarse quantizer does not hold the centroids sent with it")
    return ivf


def train_state(x: F32, spec: CollectionSpec, seed: int) -> tuple[F32, bytes]:
    """Train the index exactly as faiss's `IndexIVF*.train` does: (centroids, codec). The codec is
    the trained empty index serialized by faiss (b"" for IVF_FLAT over a flat quantizer, whose state
    is the centroids). k-means assigns with a flat index (on the GPU when faiss sees one), also for
    an HNSW quantizer, which gets its graph over the final centroids."""
    ivf = _untrained_ivf(spec)
    ivf.clustering_index = _clustering_index(spec)
    ivf.cp.seed = int(seed) & 0x7FFFFFFF
    # The caller already sampled; keep faiss from sub-sampling again.
    ivf.cp.max_points_per_centroid = max(256, -(-x.shape[0] // spec.nlist))
    if spec.index_type is IndexType.IVF_PQ:
        ivf.pq.cp.seed = int(seed) & 0x7FFFFFFF
    ivf.train(np.ascontiguousarray(x, dtype=np.float32))
    centroids = np.asarray(ivf.quantizer.reconstruct_n(0, spec.nlist), dtype=np.float32)
    return centroids, faiss.serialize_index(ivf).tobytes() if spec.trained_codec else b""


def _clustering_index(spec: CollectionSpec) -> Any:
    flat = faiss.IndexFlat(spec.dim, faiss_metric(spec.metric))
    try:
        if faiss.get_num_gpus() > 0:
            return faiss.index_cpu_to_all_gpus(flat)
    except (AttributeError, RuntimeError) as err:  # a CPU build, or no usable device
        log.info("k-means on the CPU: %s", err)
    return flat


def train_centroids(x: F32, spec: CollectionSpec, seed: int) -> F32:
    """Train the coarse quantizer exactly as `IndexIVFFlat.train` does and return its centroids."""
    return train_state(x, spec, seed)[0]


def assign_lists(spec: CollectionSpec, centroids: F32, x: F32) -> npt.NDArray[np.int32]:
    """The IVF list of each vector: its nearest centroid under the collection's metric."""
    quantizer = faiss.IndexFlat(spec.dim, faiss_metric(spec.metric))
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, lists = quantizer.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    out: npt.NDArray[np.int32] = lists[:, 0].astype(np.int32)
    return out


# -- operations on a built index ------------------------------------------------------------------


def is_ivf(index: Any) -> bool:
    return isinstance(index, faiss.IndexIVF)


def centroids_of(ivf: Any) -> F32:
    """The centroids an IVF index's coarse quantizer holds."""
    return np.asarray(ivf.quantizer.reconstruct_n(0, ivf.nlist), dtype=np.float32)


def list_ids(ivf: Any) -> list[tuple[int, I64]]:
    """(list, the ids it holds) of each non-empty list of an IVF index."""
    invlists: Any = ivf.invlists
    out = []
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            out.append((lst, faiss.rev_swig_ptr(invlists.get_ids(lst), size).astype(np.int64)))
    return out


def stored_ids(index: Any) -> I64:
    """The ids an index (IVF, or IDMap over a flat one) holds."""
    if not is_ivf(index):
        ids: I64 = faiss.vector_to_array(index.id_map).astype(np.int64)
        return ids
    parts = [ids for _, ids in list_ids(index)]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def assign(ivf: Any, x: F32) -> I64:
    """The list of each vector in an IVF index (-1 for a vector with no list, NaN say)."""
    return np.ascontiguousarray(ivf.quantizer.assign(x, 1)[:, 0], dtype=np.int64)


def add_to_lists(ivf: Any, ids: I64, x: F32, lists: I64) -> None:
    """Add vectors to the given lists of an IVF index (as `add_with_ids` does after assigning)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    ivf.add_core(ids.size, faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))


def remove_from(index: Any, ids: I64) -> None:
    """Remove ids from an index."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if isinstance(index, faiss.IndexIVF) and index.direct_map.type == faiss.DirectMap.Hashtable:  # type: ignore[attr-defined]
        # The hashtable direct map only accepts an IDSelectorArray.
        index.remove_ids(faiss.IDSelectorArray(ids.size, faiss.swig_ptr(ids)))
    else:
        index.remove_ids(ids)  # IDSelectorBatch: hashed lookups over the id map
