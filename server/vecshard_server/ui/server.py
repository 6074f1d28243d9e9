"""The dashboard's HTTP server (aiohttp), run inside the coordinator's process on its event loop.

Security (docs/dashboard.md):
- Every read and change goes through the coordinator's public gRPC API with the browser's API key,
  so a key sees and does exactly what the gRPC API lets it (api.py).
- The key reaches the dashboard once, through the login form (POST /api/login, checked by the API),
  and is kept in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS): page scripts never read it
  and no page shows it. Without API keys configured there is no login.
- Requests that change something need the X-Vecshard-UI header (a cross-site form cannot send it)
  and, when the browser sends an Origin, this host's own.
- On loopback, requests must name a loopback host (a DNS-rebinding page cannot reach the
  dashboard through its own domain). Listening beyond loopback needs API keys and TLS (else --ui-insecure).
- Pages load only this server's files (Content-Security-Policy 'self'; nothing from the internet).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from aiohttp import web

from vecshard.errors import PermissionDenied, Unauthenticated, VecshardError
from vecshard.v1 import types_pb2
from vecshard_server.common.config import Settings
from vecshard_server.common.security import ApiKeys, is_loopback
from vecshard_server.ui.api import KEY_COOKIE, Api, Handler, error, key_of
from vecshard_server.ui.metrics import Sampler

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PAGES = ["/", "/cluster", "/collections", "/collections/{name}", "/metrics"]
UI_HEADER = "X-Vecshard-UI"
SAMPLE_ENV = "VECSHARD_UI_SAMPLE_S"  # seconds between two samples of the metrics (default 5)
COOKIE_MAX_AGE_S = 12 * 3600
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _hostname(host: str) -> str:
    """The name in a Host header, without its port ([::1]:80 -> ::1)."""
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class DashboardError(RuntimeError):
    pass


def check_ui_listener(host: str, settings: Settings, insecure: bool) -> None:
    """As common.security.check_internal_listener for the internal plane: a dashboard reachable
    beyond loopback must authenticate its users (API keys) over TLS (the keys cross the network),
    unless --ui-insecure accepts the risk."""
    if is_loopback(host):
        return
    missing = [
        *([] if settings.api_keys_file else ["API keys (VECSHARD_API_KEYS_FILE)"]),
        *([] if settings.tls_cert and settings.tls_key else ["TLS (VECSHARD_TLS_CERT and VECSHARD_TLS_KEY)"]),
    ]
    if not missing:
        return
    if not insecure:
        raise SystemExit(
            f"vecshard: refusing to serve the dashboard on {host} without {' and '.join(missing)}: anyone who "
            "reaches it could read and drop every collection, or read the keys typed into it. Set them, keep "
            "--ui-host 127.0.0.1 (and reach it through an SSH tunnel or kubectl port-forward), or pass "
            "--ui-insecure to accept the risk."
        )
    log.warning("INSECURE: the dashboard listens on %s without %s (--ui-insecure)", host, " and ".join(missing))


def grpc_target(host: str, port: int) -> str:
    """Where this process's own gRPC API is reached from inside it."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


class Dashboard:
    def __init__(
        self,
        settings: Settings,
        host: str,
        port: int,
        target: Callable[[], str | None],
        sample_every_s: float = 5.0,
    ) -> None:
        """target: the coordinator's gRPC address once it is known (None before)."""
        if settings.tls_client_ca is not None:
            raise DashboardError(
                "the dashboard cannot call a coordinator that requires client certificates "
                "(VECSHARD_TLS_CLIENT_CA): run it with --no-ui"
            )
        self.settings = settings
        self.host, self.port = host, port
        self._target = target
        self._channel: grpc.aio.Channel | None = None
        self.keys = ApiKeys.load(settings.api_keys_file) if settings.api_keys_file else None
        self.https = bool(settings.tls_cert and settings.tls_key)
        self.sampler = Sampler(float(os.environ.get(SAMPLE_ENV) or sample_every_s))
        self.api = Api(self.channel, self.sampler)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.https else 'http'}://{host}:{self.port}/"

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            target = self._target()
            if target is None:
                raise VecshardError("the coordinator is still starting: retry", grpc.StatusCode.UNAVAILABLE)
            options = self.settings.grpc_options()
            if self.settings.tls_cert:
                creds = grpc.ssl_channel_credentials(Path(self.settings.tls_cert).read_bytes())
                self._channel = grpc.aio.secure_channel(target, creds, options=options)
            else:
                self._channel = grpc.aio.insecure_channel(target, options=options)
        return self._channel

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers, self._checks], client_max_size=64 * 1024)
        index = self._index
        app.add_routes([web.get(p, index) for p in PAGES])
        app.add_routes(
            [
                web.get("/api/session", self.session),
                web.post("/api/login", self.login),
                web.post("/api/logout", self.logout),
                *self.api.routes(),
                web.static("/static", STATIC),
            ]
        )
        return app

    async def start(self) -> int:
        """Bind and serve; returns the bound port (a free one for port 0)."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        context = None
        if self.https:
            assert self.settings.tls_cert and self.settings.tls_key
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=context, reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            self._runner = None
            raise DashboardError(f"cannot serve the dashboard on {self.host}:{self.port}: {err.strerror}") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        self.sampler.start()
        log.info("dashboard on %s", self.url)
        return self.port

    async def close(self) -> None:
        await self.sampler.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._channel is not None:
            await self._channel.close()

    # -- pages, session ---------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    def role(self, key: str) -> str | None:
        """What the page offers (display only: the gRPC API enforces): admin, read, or None (no
        valid key). Without keys configured, everyone is admin, as on the gRPC API."""
        if self.keys is None:
            return "admin"
        try:
            self.keys.check("DropCollection", [("x-api-key", key)] if key else [])
        except PermissionDenied:
            return "read"
        except Unauthenticated:
            return None
        return "admin"

    async def session(self, request: web.Request) -> web.Response:
        return web.json_response({"auth": self.keys is not None, "role": self.role(key_of(request))})

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key or len(key) > 4096:
            return error(400, "type an API key")
        try:  # the public API is the judge of the key
            await self.api.stub_call("ListModels", types_pb2.ListModelsRequest(), key)
        except VecshardError as err:
            code = 401 if err.code == grpc.StatusCode.UNAUTHENTICATED else 502
            return error(code, "unknown API key" if code == 401 else err.details, err.code.name)
        response = web.json_response({"auth": True, "role": self.role(key)})
        response.set_cookie(
            KEY_COOKIE, key, httponly=True, samesite="Strict", secure=self.https, path="/", max_age=COOKIE_MAX_AGE_S
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.json_response({"auth": self.keys is not None, "role": None})
        response.del_cookie(KEY_COOKIE, path="/")
        return response

    # -- middlewares ------------------------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"
        if isinstance(response, web.HTTPException):
            raise response
        return response

    @web.middleware
    async def _checks(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_loopback(self.host) and not is_loopback(_hostname(request.host or "").lower()):
            return error(421, "this dashboard answers only requests to a loopback address (localhost, 127.0.0.1)")
        if request.method not in ("GET", "HEAD"):
            if request.headers.get(UI_HEADER) != "1":
                return error(403, f"requests that change something need the {UI_HEADER} header")
            origin = request.headers.get("Origin")
            if origin and urlsplit(origin).netloc != request.host:
                return error(403, "cross-origin request refused")
        return await handler(request)


async def start_dashboard(
    settings: Settings,
    host: str,
    port: int,
    target: Callable[[], str | None],
    insecure: bool = False,
    required: bool = True,
    **options: Any,
) -> Dashboard | None:
    """Check the listener rule, then serve. required=False (the default port, not asked for): a
    port in use is a warning and no dashboard, not a failure of the coordinator."""
    check_ui_listener(host, settings, insecure)
    try:
        dashboard = Dashboard(settings, host, port, target, **options)
        await dashboard.start()
    except DashboardError as err:
        if required:
            raise SystemExit(f"vecshard: {err} (--ui-port to choose another port, --no-ui for none)") from None
        log.warning("%s: no dashboard (--ui-port to choose another port, --no-ui for none)", err)
        return None
    await asyncio.sleep(0)
    return dashboard
