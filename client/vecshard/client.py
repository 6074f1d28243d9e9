"""The synchronous Python SDK: `with Client("localhost:50051") as c: ...`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import InvalidArgument, from_rpc_error
from vecshard.types import AddResult, CollectionInfo, Embeddings, IndexType, Metric, ModelInfo, SearchResult
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "localhost:50051"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_HEADROOM = 64 * 1024  # bytes kept free in each message for the non-vector fields
TEXT_BATCH = 256  # texts per Add request (the server embeds each request in one go)

ImageInput = bytes | str | os.PathLike[str] | Any  # encoded bytes, a file path, or a PIL image


def image_bytes(image: ImageInput) -> bytes:
    """Encoded image bytes from bytes, a file path, or a PIL image (saved as PNG)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as fh:
            return fh.read()
    if hasattr(image, "save"):
        import io

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise InvalidArgument(f"an image must be bytes, a file path or a PIL image, got {type(image).__name__}")


T = TypeVar("T")


class Client:
    """A connection to a vecshard coordinator.

    Example:
        >>> import numpy as np
        >>> from vecshard import Client
        >>> with Client("localhost:50051") as c:
        ...     c.create_collection("docs", dim=64, metric="l2")
        ...     c.add("docs", ids=np.arange(1000), vectors=np.random.rand(1000, 64))
        ...     D, I = c.search("docs", np.random.rand(5, 64), k=5)

    Every method raises a subclass of `vecshard.errors.VecshardError` on failure, keeping the gRPC
    status code (`err.code`) and the server's message (`err.details`).
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = 60.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel: grpc.Channel | None = None,
    ) -> None:
        """Open a channel to the coordinator at `address` ("host:port").

        Args:
            timeout: default deadline in seconds of each call (None: no deadline).
            max_message_bytes: the largest message sent or received; `add` splits batches below it.
                Keep it equal to the server's limit.
            channel: use this channel instead of opening one (its options are then yours).
        """
        self.address = address
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._owns_channel = channel is None
        self._channel = channel or grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self._stub = pb_grpc.VectorSearchStub(self._channel)
        self._closed = False

    @property
    def stub(self) -> pb_grpc.VectorSearchStub:
        """The raw generated stub, for calls the SDK does not wrap."""
        return self._stub

    def close(self) -> None:
        """Close the channel (idempotent).

        Example:
            >>> c = Client(); c.close(); c.close()
        """
        if not self._closed:
            self._closed = True
            if self._owns_channel:
                self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric | None = Metric.L2,
        index: str | IndexType = IndexType.FLAT,
        *,
        nlist: int = 0,
        nprobe: int = 0,
        train_threshold: int = 0,
        model: str | None = None,
        timeout: float | None = None,
    ) -> CollectionInfo:
        """Create a collection on every shard.

        Args:
            metric: "l2" (squared L2), "inner_product", "cosine" or "l1".
            index: "flat" (exact) or "ivf_flat" (needs nlist; exact until trained).
            nlist: IVF lists; nprobe: default lists probed per search (0: server default).
            train_threshold: IVF trains itself at this many vectors (0: 39 * nlist).
            model: bind the collection to a server embedding model (see `list_models`): add and
                search then take `texts=`/`images=`. With a model, pass dim=0 to use the model's
                dimension and metric=None for cosine.

        Example:
            >>> c.create_collection("img", dim=128, metric="l2", index="ivf_flat", nlist=100, nprobe=10)
            >>> c.create_collection("docs", dim=0, metric=None, model="minilm")
        """
        config = types_pb2.CollectionConfig(
            name=name,
            dim=dim,
            metric=Metric.parse(metric).to_proto() if metric is not None else types_pb2.METRIC_UNSPECIFIED,
            index_type=IndexType.parse(index).to_proto(),
            nlist=nlist,
            nprobe=nprobe,
            train_threshold=train_threshold,
            embedding_model=model or "",
        )
        info = self._call(self._stub.CreateCollection, pb.CreateCollectionRequest(config=config), timeout)
        return CollectionInfo.from_proto(info)

    def drop_collection(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a collection and all its vectors.

        Example:
            >>> c.drop_collection("img")
        """
        self._call(self._stub.DropCollection, pb.DropCollectionRequest(name=name), timeout)

    def list_collections(self, *, timeout: float | None = None) -> list[CollectionInfo]:
        """Every collection with its counts.

        Example:
            >>> [info.name for info in c.list_collections()]
        """
        resp = self._call(self._stub.ListCollections, pb.ListCollectionsRequest(), timeout)
        return [CollectionInfo.from_proto(info) for info in resp.collections]

    def describe(self, name: str, *, include_centroids: bool = False, timeout: float | None = None) -> CollectionInfo:
        """A collection's config, per-shard counts, training state and optionally its centroids.

        Example:
            >>> info = c.describe("img", include_centroids=True)
            >>> info.count, info.trained, info.centroids.shape
        """
        req = pb.DescribeCollectionRequest(name=name, include_centroids=include_centroids)
        return CollectionInfo.from_proto(self._call(self._stub.DescribeCollection, req, timeout))

    def add(
        self,
        collection: str,
        ids: Any,
        vectors: Any = None,
        *,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        upsert: bool = False,
        batch_size: int | None = None,
        model_fingerprint: str = "",
        timeout: float | None = None,
    ) -> AddResult:
        """Add vectors (or, to a model-bound collection, texts or images) under your own int64 ids.

        Ids must be >= 0 and unique. The batch is checked locally first, then sent in chunks that
        fit the message limit (or of `batch_size` rows; 256 texts or 32 images by default). Each
        chunk is atomic; a failure in a later chunk leaves the earlier ones stored, so retry with
        `upsert=True`, which replaces instead of failing with AlreadyExists.

        Args:
            model_fingerprint: with vectors made by `embed`, its fingerprint: the server refuses
                vectors of another model (FailedPrecondition).

        Example:
            >>> c.add("img", ids=np.arange(1000), vectors=np.random.rand(1000, 128).astype("float32"))
            AddResult(added=1000, replaced=0, count=1000)
            >>> c.add("docs", ids=[1, 2], texts=["a cat sat", "stock prices fell"])
        """
        id_arr = wire.as_ids(ids)
        wire.check_ids(id_arr)
        given = [n for n, v in (("vectors", vectors), ("texts", texts), ("images", images)) if v is not None]
        if len(given) != 1:
            raise InvalidArgument(f"pass exactly one of vectors, texts or images (got {', '.join(given) or 'none'})")
        if vectors is not None:
            x = wire.as_matrix(vectors)
            n = x.shape[0]
            wire.check_vectors(x, x.shape[1])
            rows = batch_size or max(1, (self.max_message_bytes - _HEADROOM) // (x.shape[1] * 4 + 8))
        else:
            items: list[Any] = list(texts) if texts is not None else [image_bytes(i) for i in images or ()]
            n = len(items)
            rows = batch_size or (TEXT_BATCH if texts is not None else 32)
        if n != id_arr.size:
            raise InvalidArgument(f"got {id_arr.size} ids for {n} {given[0]}: send one id per input")
        added = replaced = count = 0
        for start in range(0, n, rows):
            req = pb.AddRequest(
                collection=collection,
                ids=wire.pack_ids(id_arr[start : start + rows]),
                upsert=upsert,
                model_fingerprint=model_fingerprint,
            )
            if vectors is not None:
                req.vectors.CopyFrom(wire.pack_matrix(x[start : start + rows]))
            elif texts is not None:
                req.texts.extend(items[start : start + rows])
            else:
                req.images.extend(items[start : start + rows])
            resp = self._call(self._stub.Add, req, timeout)
            added += resp.added
            replaced += resp.replaced
            count = resp.count
        return AddResult(added=added, replaced=replaced, count=count)

    def remove(self, collection: str, ids: Any, *, timeout: float | None = None) -> int:
        """Remove vectors by id; returns how many were stored. Removed ids never come back.

        Example:
            >>> c.remove("img", [3, 4, 5])
            3
        """
        req = pb.RemoveRequest(collection=collection, ids=wire.pack_ids(wire.as_ids(ids)))
        return int(self._call(self._stub.Remove, req, timeout).removed)

    def get(
        self, collection: str, ids: Any, *, allow_missing: bool = False, timeout: float | None = None
    ) -> np.ndarray:
        """The stored vectors of `ids`, as an (n, dim) float32 array in the order asked.

        Raises NotFound when an id is not stored, unless `allow_missing`, in which case the rows
        of missing ids are NaN.

        Example:
            >>> c.get("img", [1, 2]).shape
            (2, 128)
        """
        req = pb.GetRequest(collection=collection, ids=wire.pack_ids(wire.as_ids(ids)), allow_missing=allow_missing)
        resp = self._call(self._stub.Get, req, timeout)
        out = wire.unpack_matrix(resp.vectors).copy()
        if allow_missing:
            found = np.frombuffer(resp.found, dtype=np.uint8).astype(bool)
            out[~found] = np.nan
        return out

    def search(
        self,
        collection: str,
        queries: Any = None,
        k: int = 10,
        *,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        nprobe: int | None = None,
        allow_partial: bool = False,
        model_fingerprint: str = "",
        timeout: float | None = None,
    ) -> SearchResult:
        """The k nearest stored vectors of each query, over all shards.

        Returns a SearchResult that unpacks like faiss: `D, I = c.search(...)`, both (nq, k), best
        first, ties broken by the smaller id, padded with id -1. L2 distances are squared.

        Args:
            nprobe: IVF lists to probe (None: the collection's default).
            allow_partial: answer from the shards that respond instead of raising Unavailable;
                see `result.failed_shards`.
            texts, images: instead of query vectors, for a model-bound collection (a CLIP
                collection takes either, whatever it stores).

        Example:
            >>> D, I = c.search("img", np.random.rand(3, 128), k=5, nprobe=10)
            >>> I.shape
            (3, 5)
            >>> D, I = c.search("docs", texts=["feline on a mat"], k=3)
        """
        given = [n for n, v in (("queries", queries), ("texts", texts), ("images", images)) if v is not None]
        if len(given) != 1:
            raise InvalidArgument(f"pass exactly one of queries, texts or images (got {', '.join(given) or 'none'})")
        req = pb.SearchRequest(
            collection=collection,
            k=k,
            nprobe=nprobe or 0,
            allow_partial=allow_partial,
            model_fingerprint=model_fingerprint,
        )
        if queries is not None:
            req.queries.CopyFrom(wire.pack_matrix(wire.as_matrix(queries, "queries")))
        elif texts is not None:
            req.texts.extend(texts)
        else:
            req.images.extend(image_bytes(i) for i in images or ())
        resp = self._call(self._stub.Search, req, timeout)
        shape = (resp.nq, resp.k)
        return SearchResult(
            distances=np.frombuffer(resp.distances, dtype=wire.F32).reshape(shape),
            ids=np.frombuffer(resp.ids, dtype=wire.I64).reshape(shape),
            shards_total=resp.shards_total,
            shards_ok=resp.shards_ok,
            failed_shards=tuple(resp.failed_shards),
        )

    def train(
        self, collection: str, *, max_training_points: int = 0, seed: int = 0, timeout: float | None = None
    ) -> CollectionInfo:
        """Train (or retrain) an IVF collection's shared quantizer now; returns when installed.

        Collections also train themselves once they hold `train_threshold` vectors.

        Example:
            >>> c.train("img").trained
            True
        """
        req = pb.TrainRequest(collection=collection, max_training_points=max_training_points, seed=seed)
        return CollectionInfo.from_proto(self._call(self._stub.Train, req, timeout))

    def embed(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        *,
        model: str = "",
        role: str = "",
        timeout: float | None = None,
    ) -> Embeddings:
        """Embed texts or images with a server-side model (default: the server's, minilm).

        Args:
            role: "query" or "passage" for models with E5-style prefixes ("" = no prefix).

        Returns:
            Embeddings: `.vectors` (n, dim) float32 and `.model` (name, dim, fingerprint...).

        Example:
            >>> e = c.embed(texts=["hello world"])
            >>> e.vectors.shape, e.model.name
            ((1, 384), 'minilm')
        """
        roles = {
            "": types_pb2.INPUT_ROLE_UNSPECIFIED,
            "query": types_pb2.INPUT_ROLE_QUERY,
            "passage": types_pb2.INPUT_ROLE_PASSAGE,
        }
        if role not in roles:
            raise InvalidArgument(f"role must be 'query', 'passage' or '', got {role!r}")
        if (texts is None) == (images is None):
            raise InvalidArgument("pass texts or images (one of them)")
        req = types_pb2.EmbedRequest(model=model, role=roles[role])
        if texts is not None:
            req.texts.extend([texts] if isinstance(texts, str) else texts)
        else:
            req.images.extend(image_bytes(i) for i in _as_list(images))
        resp = self._call(self._stub.Embed, req, timeout)
        return Embeddings(wire.unpack_matrix(resp.vectors).copy(), ModelInfo.from_proto(resp.model))

    def list_models(self, *, load: Iterable[str] = (), timeout: float | None = None) -> list[ModelInfo]:
        """The server's embedding models (the default first); `load` names models to load first so
        their dim and fingerprint are filled in.

        Example:
            >>> [m.name for m in c.list_models()]
            ['minilm']
        """
        resp = self._call(self._stub.ListModels, types_pb2.ListModelsRequest(load=list(load)), timeout)
        models = [ModelInfo.from_proto(m) for m in resp.models]
        return sorted(models, key=lambda m: m.name != resp.default_model)


def _as_list(items: Any) -> list[Any]:
    return [items] if isinstance(items, bytes | str | os.PathLike) or hasattr(items, "save") else list(items)
