"""The dashboard's JSON API: each handler is one or two calls of the coordinator's public gRPC API,
made with the API key the browser presents, so every permission check is the gRPC API's own (a
read key that asks to drop a collection gets the API's PERMISSION_DENIED, whatever the page shows).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web

from vecshard import build
from vecshard.errors import InvalidArgument, VecshardError
from vecshard.v1 import types_pb2, vector_search_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.ui import convert
from vecshard_server.ui.metrics import Sampler

KEY_COOKIE = "vecshard_key"
API_KEY_HEADER = "x-api-key"
CALL_TIMEOUT_S = 120.0  # (a first text search may load the embedding model)
MAX_K = 100
MAX_PAGE = 200

STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

_STUB: Any = vector_search_pb2_grpc.VectorSearchStub  # (untyped generated code)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, code: str = "") -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


def key_of(request: web.Request) -> str:
    return request.cookies.get(KEY_COOKIE, "")


class Api:
    """The routes under /api/ but login and logout (server.py)."""

    def __init__(self, channel: Callable[[], grpc.aio.Channel], sampler: Sampler) -> None:
        self._channel = channel
        self.sampler = sampler

    def stub(self) -> Any:
        return _STUB(self._channel())

    async def call(self, request: web.Request, method: str, message: Any) -> Any:
        """Call the public API as the browser's key: a refusal raises a VecshardError with the
        API's status and message."""
        return await self.stub_call(method, message, key_of(request))

    async def stub_call(self, method: str, message: Any, key: str) -> Any:
        metadata = [(API_KEY_HEADER, key)] if key else []
        try:
            return await getattr(self.stub(), method)(message, metadata=metadata, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise VecshardError(err.details() or err.code().name, err.code()) from None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/cluster", self._guard(self.cluster)),
            web.get("/api/collections", self._guard(self.collections)),
            web.get("/api/collections/{name}", self._guard(self.collection)),
            web.get("/api/collections/{name}/points", self._guard(self.points)),
            web.post("/api/collections/{name}/search", self._guard(self.search)),
            web.post("/api/collections/{name}/drop", self._guard(self.drop)),
            web.get("/api/metrics", self._guard(self.metrics)),
        ]

    @staticmethod
    def _guard(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except VecshardError as err:
                return error(STATUS.get(err.code, 502), err.details, err.code.name)

        return guarded

    async def cluster(self, request: web.Request) -> web.Response:
        info = await self.call(request, "DescribeCluster", pb.DescribeClusterRequest())
        return web.json_response(convert.cluster(info))

    async def collections(self, request: web.Request) -> web.Response:
        resp = await self.call(request, "ListCollections", pb.ListCollectionsRequest())
        return web.json_response({"collections": [convert.collection(c) for c in resp.collections]})

    async def collection(self, request: web.Request) -> web.Response:
        info = await self.call(request, "DescribeCollection", pb.DescribeCollectionRequest(name=_name(request)))
        return web.json_response(convert.collection(info))

    async def points(self, request: web.Request) -> web.Response:
        """A page of points (ids ascending) matching the filter box's text, and how many match."""
        q = request.query
        text = q.get("filter", "").strip()
        with_vectors = q.get("vectors") == "1"
        limit = _int(q.get("limit", "20"), "limit", 1, MAX_PAGE)
        req = build.scroll(_name(request), text or None, True, with_vectors, 0, limit)
        try:
            req.cursor = bytes.fromhex(q.get("cursor", ""))
        except ValueError:
            raise InvalidArgument("cursor: not a page cursor") from None
        page = convert.points(await self.call(request, "Scroll", req), with_vectors)
        count = await self.call(request, "Count", build.count(_name(request), text or None))
        return web.json_response({**page, "matching": count.count})

    async def search(self, request: web.Request) -> web.Response:
        """{"mode": "text" | "keyword" | "like", "query": ..., "filter": text, "k": n}"""
        body = await _json(request)
        mode, query = body.get("mode"), body.get("query")
        text = str(body.get("filter") or "").strip() or None
        k = _int(str(body.get("k", 10)), "k", 1, MAX_K)
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgument("type a query")
        name = _name(request)
        common: dict[str, Any] = {"f": text, "with_payload": True}
        if mode == "text":
            req = build.search(name, None, k, [query], None, None, False, "", **common)
        elif mode == "keyword":
            req = build.search(name, None, k, None, None, None, False, "", **common, keywords=build.Keywords(query))
        elif mode == "like":
            info = await self.call(request, "DescribeCollection", pb.DescribeCollectionRequest(name=name))
            string_ids = info.config.id_type == types_pb2.ID_TYPE_STRING
            ids: list[Any] = [query.strip()] if string_ids else [_int(query, "point id", 0, 2**63 - 1)]
            req = build.search(name, None, k, None, None, None, False, "", **common, by_ids=ids)
        else:
            raise InvalidArgument("mode must be text, keyword or like")
        return web.json_response(convert.hits(await self.call(request, "Search", req)))

    async def drop(self, request: web.Request) -> web.Response:
        """Drop a collection: the page asks for confirmation (the name typed again) and sends it."""
        body = await _json(request)
        name = _name(request)
        if body.get("confirm") != name:
            raise InvalidArgument("confirm by typing the collection's name")
        await self.call(request, "DropCollection", pb.DropCollectionRequest(name=name))
        return web.json_response({"dropped": name})

    async def metrics(self, request: web.Request) -> web.Response:
        # Only a caller with a valid key sees the metrics (the public API is the judge).
        await self.call(request, "ListModels", types_pb2.ListModelsRequest())
        minutes = float(_int(request.query.get("minutes", "15"), "minutes", 1, 60))
        return web.json_response(self.sampler.series(minutes))


def _name(request: web.Request) -> str:
    return request.match_info["name"]


def _int(text: str, what: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\s*-?\d{1,19}\s*", text):
        raise InvalidArgument(f"{what} must be a whole number, got {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise InvalidArgument(f"{what} must be between {low} and {high}, got {value}")
    return value


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidArgument("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return body
