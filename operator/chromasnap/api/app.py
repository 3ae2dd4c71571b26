"""Chroma's HTTP API (v2) for one collection, as a raw ASGI app over pluggable backends.

Existing code written for a Chroma server keeps working unchanged::

    client = chromadb.HttpClient(host="chromasnap-reader", port=8000)
    col = client.get_collection("docs")
    col.upsert(ids=[...], embeddings=[...]); col.query(query_embeddings=[...])

The app serves the routes that ``chromadb.HttpClient`` (1.x) calls for one
collection — heartbeat, version, pre-flight checks, identity, tenant and
database lookups, the collection itself, and the record routes — with the
response and error bodies Chroma's Rust frontend produces, so the client's
own exceptions (``NotFoundError``, ``InvalidArgumentError`` …) surface.
Where the data comes from is not its business: reads go to a ``ReadBackend``
(the reader's snapshot plus delta tail), writes to a ``WriteBackend`` (the
writer's group commit) or, on a reader, to the writer service over HTTP.
Read-your-writes tokens travel as described in ``tokens``.

This module is the ASGI entry point: lifespan hooks, authentication, dispatch
through ``routing.Router`` to the handlers (``system_routes``,
``collection_routes``, ``read_routes``, ``write_routes``), error mapping
(``error_responses``) and per-route metrics.

Raw ASGI rather than a framework: the reader's query latency target is within
10% of ``chroma run``, so the per-request work here is kept to a path split,
one ``orjson`` parse and one ``orjson`` dump (about 0.1 ms of a 10k x 384
query that spends ~2.5 ms inside chromadb).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from chromasnap.api.asgi import Headers, Receive, Scope, Send
from chromasnap.api.auth import AUTH_EXEMPT, PROBE_ROUTES, authenticate, authenticate_push
from chromasnap.api.backends import Catalog, ReadBackend, WriteBackend
from chromasnap.api.catalog_routes import CatalogRoutes
from chromasnap.api.collection_routes import CollectionRoutes
from chromasnap.api.error_responses import as_chromasnap_error, error_response
from chromasnap.api.forwarding import Forwarder
from chromasnap.api.http_metrics import HTTP_LATENCY, HTTP_REQUESTS
from chromasnap.api.read_routes import ReadRoutes
from chromasnap.api.responses import Response
from chromasnap.api.routing import Router
from chromasnap.api.scopes import Scope as TokenScope
from chromasnap.api.scopes import check_scope
from chromasnap.api.service import (
    CHROMA_SERVER_VERSION,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    ServiceContext,
)
from chromasnap.api.system_routes import DeltaHandler, Leases, SystemRoutes
from chromasnap.api.write_routes import WriteRoutes
from chromasnap.engine.errors import ChromasnapError, NotFound

log = logging.getLogger("chromasnap.httpapi")


class ChromaAPI:
    """The ASGI app. Give it a ``read`` backend, a ``write`` backend, or both.

    Without a ``write`` backend, writes go to ``forward_writes_to`` (the writer
    Service URL) and the answer — status, body, token and cookie — is relayed;
    with neither, writes are refused with a clear error. Symmetrically,
    ``forward_reads_to`` lets a writer pass reads on to the reader Service.
    ``collection_model`` supplies the collection's JSON where there is no
    read backend (a writer); it must be the same everywhere.
    """

    def __init__(
        self,
        *,
        read: ReadBackend | None = None,
        write: WriteBackend | None = None,
        collection_model: Callable[[], Mapping[str, Any]] | None = None,
        forward_writes_to: str | None = None,
        forward_reads_to: str | None = None,
        forward_timeout: float = 120.0,
        auth_tokens: Iterable[str] = (),
        ready: Callable[[], bool] | None = None,
        ready_note: Callable[[], str | None] | None = None,
        role: str = "server",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        server_version: str = CHROMA_SERVER_VERSION,
        session_cookie: bool = True,
        metrics_registry: CollectorRegistry = REGISTRY,
        on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
        on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
        on_delta: DeltaHandler | None = None,
        leases: Leases | None = None,
        push_tokens: Iterable[str] = (),
        internal_port: int | None = None,
        catalog: Catalog | None = None,
        token_scopes: Mapping[str, TokenScope | None] | None = None,
    ) -> None:
        if catalog is not None:
            collection_model = _no_single_collection
        if collection_model is None:
            if read is None:
                raise ValueError("ChromaAPI needs a read backend or a collection_model callable")
            collection_model = read.collection_model
        if write is not None and forward_writes_to:
            raise ValueError("give either a write backend or forward_writes_to, not both")
        if read is not None and forward_reads_to:
            raise ValueError("give either a read backend or forward_reads_to, not both")
        self.context = ServiceContext(
            collection_model=collection_model, role=role, read=read, write=write, ready=ready,
            ready_note=ready_note,
            max_body_bytes=max_body_bytes, max_batch_size=max_batch_size,
            server_version=server_version, session_cookie=session_cookie,
            metrics_registry=metrics_registry, catalog=catalog,
        )
        self.role = role
        scopes: dict[str, TokenScope | None] = {**dict.fromkeys(auth_tokens),
                                                **(token_scopes or {})}
        self.auth_tokens = [t.encode() for t in scopes]
        #: Tokens a pool limits to one tenant (and database): ``api/scopes.py``.
        self.token_scopes = {t.encode(): sc for t, sc in scopes.items() if sc is not None}
        self.push_tokens = [t.encode() for t in push_tokens]
        #: Set on SIGTERM (see ``api.server.DrainingServer``): answer, but close every
        #: connection after its response, so clients reconnect to another pod.
        self.draining = False
        self.internal_port = internal_port
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)
        self.forwarder = Forwarder(role, forward_timeout, max_body_bytes)
        self.router = Router(
            SystemRoutes(self.context, on_delta, leases),
            CollectionRoutes(self.context),
            ReadRoutes(self.context, self.forwarder,
                       forward_reads_to.rstrip("/") if forward_reads_to else None),
            WriteRoutes(self.context, self.forwarder,
                        forward_writes_to.rstrip("/") if forward_writes_to else None),
            notify_delta=on_delta is not None,
            grant_lease=leases is not None,
            pool=CatalogRoutes(self.context, catalog) if catalog is not None else None,
        )
        self._metric_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def start_draining(self) -> None:
        """Stop looking ready and close each connection after its next response."""
        self.draining = True
        self.context.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: HTTP requests and lifespan events."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def aclose(self) -> None:
        """Release the forwarding HTTP client (idempotent)."""
        await self.forwarder.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    for hook in self.on_startup:
                        await hook()
                except Exception as e:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                try:
                    for hook in self.on_shutdown:
                        await hook()
                    await self.aclose()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    def _admit(self, scope: Scope, route: str) -> None:
        """Who may call ``route`` on the port the request came in on."""
        on_internal = self.internal_port is not None and _local_port(scope) == self.internal_port
        if route in ("notify_delta", "grant_lease", "release_lease"):
            if self.internal_port is not None and not on_internal:
                raise NotFound(f"{route} is accepted on port {self.internal_port} only")
            authenticate_push(scope, self.push_tokens, bool(self.auth_tokens))
        elif on_internal and route not in PROBE_ROUTES:
            raise NotFound("the internal port serves delta pushes and probes only")
        elif self.auth_tokens and route not in AUTH_EXEMPT:
            token = authenticate(scope, self.auth_tokens)
            limited = self.token_scopes.get(token)
            if limited is not None:
                check_scope(limited, scope["path"], route)
                scope["chromasnap.token_scope"] = limited

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        method: str = scope["method"]
        route = "unknown"
        resp: Response
        try:
            route, handler, args = self.router.resolve(method, scope["path"])
            self._admit(scope, route)
            resp = await handler(scope, receive, *args)
        except ChromasnapError as e:
            resp = error_response(self.role, route, e)
        except Exception as e:
            err = as_chromasnap_error(e)
            if err.status >= 500:
                log.exception("unexpected error answering %s %s", method, scope["path"])
            resp = error_response(self.role, route, err)
        headers: Headers = [
            (b"content-type", resp.content_type),
            (b"content-length", str(len(resp.body)).encode()),
        ]
        if resp.headers:
            headers.extend(resp.headers)
        if self.draining:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": resp.body})
        key = (route, method, resp.status)
        children = self._metric_children.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(self.role, route, method, str(resp.status)),
                HTTP_LATENCY.labels(self.role, route),
            )
            self._metric_children[key] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - start)


def _no_single_collection() -> Mapping[str, Any]:
    raise NotFound("a pool serves many collections: name one")


def _local_port(scope: Scope) -> int | None:
    server = scope.get("server")
    return int(server[1]) if server and server[1] is not None else None
