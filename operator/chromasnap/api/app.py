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

Read-your-writes: a write's response carries its token in the
``X-Chromasnap-Token`` header and in a ``chromasnap_read_after`` cookie; a
read carrying the token (``X-Chromasnap-Read-After`` header, or the cookie,
which ``chromadb.HttpClient``'s session sends back by itself) is answered
only once that write is visible. Tokens are opaque to this module.

Raw ASGI rather than a framework: the reader's query latency target is within
10% of ``chroma run``, so the per-request work here is kept to a path split,
one ``orjson`` parse and one ``orjson`` dump (about 0.1 ms of a 10k x 384
query that spends ~2.5 ms inside chromadb).
"""

from __future__ import annotations

import binascii
import hmac
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from chromasnap.engine.distances import Float32Array
from chromasnap.engine.errors import (
    AlreadyExists,
    ChromasnapError,
    Forbidden,
    Internal,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ReadTimeout,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from chromasnap.engine.filters import compile_where, compile_where_document
from chromasnap.engine.ops import OpKind

log = logging.getLogger("chromasnap.httpapi")

API_PREFIX = "/api/v2"
TOKEN_HEADER = "X-Chromasnap-Token"  # noqa: S105 - a header name, not a secret
READ_AFTER_HEADER = "X-Chromasnap-Read-After"
TOKEN_COOKIE = "chromasnap_read_after"  # noqa: S105 - a cookie name
FORWARDED_HEADER = "X-Chromasnap-Forwarded"
DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
# What ``chroma run`` 1.5.9 reports from /api/v2/version.
CHROMA_SERVER_VERSION = "1.0.0"
# Chroma's own default (derived from SQLite's variable limit); the writer raises it.
DEFAULT_MAX_BATCH_SIZE = 5461
DEFAULT_MAX_BODY_BYTES = 64 << 20
INCLUDE_VALUES = ("distances", "documents", "embeddings", "metadatas", "uris")
GET_DEFAULT_INCLUDE = ("documents", "metadatas")
QUERY_DEFAULT_INCLUDE = ("documents", "metadatas", "distances")
READ_LEVELS = ("index_and_wal", "index_only", "index_and_bounded_wal")
# RFC 6265 cookie-octet: what may go into a cookie value unquoted.
_COOKIE_SAFE = re.compile(r"^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,3000}$")
_JSON = orjson.OPT_SERIALIZE_NUMPY
_AUTH_EXEMPT = frozenset(("heartbeat", "version", "pre_flight_checks", "healthcheck", "root",
                          "healthz", "readyz", "metrics"))


# --- requests and backends --------------------------------------------------------------


DELTA_NOTIFY_PREFIX = "/internal/v1/deltas/"


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One add/upsert/update/delete request, decoded but not yet validated against the data.

    ``embeddings`` is a float32 array of shape ``(len(ids), dim)`` or ``None``;
    the other columns are lists with one entry per id, or ``None`` when not sent.
    ``where``/``where_document``/``limit`` come only with delete-by-filter.
    ``read_after`` is the token of the client's previous write (from its
    cookie or header), so a backend may fold it into the token it returns.
    """

    ids: list[str]
    embeddings: Float32Array | None = None
    documents: list[str | None] | None = None
    metadatas: list[dict[str, Any] | None] | None = None
    uris: list[str | None] | None = None
    where: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    limit: int | None = None
    read_after: str | None = None


@dataclass(frozen=True, slots=True)
class GetRequest:
    """A get (or peek: a get with ``limit``); filters already validated."""

    ids: list[str] | None = None
    where: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    limit: int | None = None
    offset: int = 0
    include: tuple[str, ...] = GET_DEFAULT_INCLUDE
    read_after: str | None = None


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """A nearest-neighbour query; ``query_embeddings`` is float32 ``(n_queries, dim)``, finite."""

    query_embeddings: Float32Array
    n_results: int = 10
    where: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    include: tuple[str, ...] = QUERY_DEFAULT_INCLUDE
    ids: list[str] | None = None
    read_after: str | None = None


@dataclass(frozen=True, slots=True)
class WriteAck:
    """A write backend's answer when it knows more than the token (delete's count)."""

    token: str
    deleted: int | None = None


class ReadBackend(Protocol):
    """Where reads are answered (the reader: snapshot plus delta tail).

    ``get`` returns ``{"ids": [...], "embeddings": ..., "documents": ...,
    "metadatas": ..., "uris": ...}`` (columns not in ``include`` may be left
    out); ``query`` the same with one list per query and ``"distances"``.
    Values may be numpy arrays (float32 is serialised with float32 precision,
    as Chroma does). Raise ``ReadTimeout`` when ``read_after`` does not become
    visible in time, ``Unavailable`` when nothing can be served yet.
    """

    def collection_model(self) -> Mapping[str, Any]:
        """The collection as Chroma's API returns it (see ``collection_model_json``)."""
        ...

    async def query(self, req: QueryRequest) -> Mapping[str, Any]:
        """Answer a query."""
        ...

    async def get(self, req: GetRequest) -> Mapping[str, Any]:
        """Answer a get or peek."""
        ...

    async def count(self, read_after: str | None) -> int:
        """The number of records."""
        ...


class WriteBackend(Protocol):
    """Where writes are applied (the writer: validation and group commit).

    Returns the read-your-writes token (or a ``WriteAck``) once the write is
    durable; raises ``InvalidWrite`` when nothing was written because the
    input is bad, ``Unavailable`` when it could not be made durable.
    """

    async def write(self, kind: OpKind, req: WriteRequest) -> str | WriteAck:
        """Apply one request."""
        ...


def collection_model_json(model: Any) -> dict[str, Any]:
    """Chroma's JSON for a collection, from a ``chromadb`` collection or its model.

    Accepts a ``chromadb.Collection`` (uses its model) or ``chromadb.types.Collection``.
    """
    m = getattr(model, "_model", model)
    return {
        "id": str(m.id),
        "name": m.name,
        "configuration_json": m.configuration_json,
        "schema": m.serialized_schema,
        "metadata": m.metadata,
        "dimension": m.dimension,
        "tenant": m.tenant,
        "database": m.database,
        "log_position": m.log_position,
        "version": m.version,
    }


def load_auth_tokens(path: str | os.PathLike[str] | None = None,
                     env: str | None = "CHROMASNAP_AUTH_TOKEN") -> list[str]:
    """Accepted bearer tokens: one per line from ``path`` (a mounted Secret), else ``$env``.

    Blank lines and ``#`` comments are ignored; the env variable may hold several
    tokens separated by commas (for rotation). An empty result means auth is off.
    """
    raw: list[str] = []
    if path:
        raw = Path(path).read_text().splitlines()
    elif env and os.environ.get(env):
        raw = os.environ[env].split(",")
    tokens = [t.strip() for t in raw if t.strip() and not t.strip().startswith("#")]
    for t in tokens:
        # Chroma's token auth refuses tokens outside this set too.
        if not all(33 <= ord(ch) < 127 for ch in t):
            raise ValueError("auth tokens must be printable ASCII without spaces")
    return tokens


# --- request decoding -------------------------------------------------------------------


def decode_embeddings(value: Any, name: str = "embeddings") -> Float32Array | None:
    """Embeddings as the client sends them — lists of numbers, or base64 of little-endian
    float32 (chromadb >= 1.0 when the server advertises it) — as a float32 ``(n, dim)`` array.

    Raises ``InvalidArgument`` for ragged, non-numeric, undecodable or non-finite input.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidArgument(f"{name} must be a list of embeddings, got {type(value).__name__}")
    if not value:
        return np.zeros((0, 0), dtype=np.float32)
    first = value[0]
    if isinstance(first, str):
        rows: list[bytes] = []
        for i, s in enumerate(value):
            if not isinstance(s, str):
                raise InvalidArgument(f"{name}[{i}] must be a base64 string like the others")
            try:
                rows.append(binascii.a2b_base64(s, strict_mode=True))
            except (binascii.Error, ValueError) as e:
                raise InvalidArgument(f"Invalid base64 string in {name}[{i}]: {e}") from e
        width = len(rows[0])
        if width % 4 or any(len(r) != width for r in rows):
            raise InvalidArgument("Inconsistent dimensions in provided embeddings")
        arr = np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(rows), width // 4)
        arr = arr.astype(np.float32, copy=False)
    else:
        for i, row in enumerate(value):
            if not isinstance(row, list):
                raise InvalidArgument(
                    f"{name}[{i}] must be a list of numbers (or every row a base64 string), "
                    f"got {type(row).__name__}"
                )
        try:
            arr = np.array(value, dtype=np.float32)
        except (TypeError, ValueError) as e:
            if len({len(r) for r in value}) > 1:
                raise InvalidArgument("Inconsistent dimensions in provided embeddings") from e
            raise InvalidArgument(f"{name} must contain only numbers: {e}") from e
        if arr.ndim != 2:
            raise InvalidArgument(f"{name} must be a list of lists of numbers")
    if not np.isfinite(arr).all():
        bad = int(np.argmin(np.isfinite(arr).all(axis=1)))
        raise InvalidArgument(f"{name}[{bad}] contains NaN or infinity; send finite numbers")
    return arr


def _body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgument(
            f"request body must be a JSON object, got {type(body).__name__}"
        )
    return body


def _str_list(body: Mapping[str, Any], name: str, *, required: bool = False) -> list[str] | None:
    v = body.get(name)
    if v is None:
        if required:
            raise InvalidArgument(f"missing field `{name}`: send a list of strings")
        return None
    if not isinstance(v, list) or any(type(x) is not str for x in v):
        raise InvalidArgument(f"{name} must be a list of strings")
    return v


def _optional_str_column(body: Mapping[str, Any], name: str) -> list[str | None] | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, list) or any(x is not None and type(x) is not str for x in v):
        raise InvalidArgument(f"{name} must be a list of strings or nulls")
    return v


def _metadatas(body: Mapping[str, Any]) -> list[dict[str, Any] | None] | None:
    v = body.get("metadatas")
    if v is None:
        return None
    if not isinstance(v, list) or any(x is not None and not isinstance(x, dict) for x in v):
        raise InvalidArgument("metadatas must be a list of objects or nulls")
    return v


def _non_negative_int(body: Mapping[str, Any], name: str) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if type(v) is not int or v < 0:
        raise InvalidArgument(f"{name} must be a non-negative integer, got {v!r}")
    return v


def _filters(body: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    # Old clients send {} for "no filter"; chromadb treats a falsy filter as none.
    where = body.get("where") or None
    where_document = body.get("where_document") or None
    if where is not None:
        compile_where(where)
    if where_document is not None:
        compile_where_document(where_document)
    return where, where_document


def _include(body: Mapping[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    v = body.get("include")
    if v is None:
        return default
    if not isinstance(v, list):
        raise InvalidArgument("include must be a list")
    for i, x in enumerate(v):
        if x not in INCLUDE_VALUES:
            raise InvalidArgument(
                f"include[{i}]: unknown value {x!r}, expected one of {', '.join(INCLUDE_VALUES)}"
            )
    return tuple(v)


def parse_write(kind: OpKind, body: Any, read_after: str | None = None) -> WriteRequest:
    """Decode an add/upsert/update/delete body (shapes only: the backend validates content)."""
    b = _body_object(body)
    if kind == OpKind.DELETE:
        ids = _str_list(b, "ids")
        where, where_document = _filters(b)
        if ids is None and where is None and where_document is None:
            raise InvalidArgument("Either ids, where or where_document must be specified")
        if ids is not None and not ids and where is None and where_document is None:
            raise InvalidArgument("Either ids or where must be specified")
        return WriteRequest(
            ids=ids or [], where=where, where_document=where_document,
            limit=_non_negative_int(b, "limit"), read_after=read_after,
        )
    ids = _str_list(b, "ids", required=True)
    assert ids is not None
    if kind in (OpKind.ADD, OpKind.UPSERT) and b.get("embeddings") is None and ids:
        raise InvalidArgument(
            "missing field `embeddings`: chromasnap stores vectors, it does not compute them; "
            "pass embeddings= or give the client an embedding function"
        )
    raw = b.get("embeddings")
    if isinstance(raw, list) and any(r is None for r in raw):
        raise InvalidArgument(
            "embeddings must have a vector for every record (or be omitted in update)"
        )
    emb = decode_embeddings(raw)
    req = WriteRequest(
        ids=ids,
        embeddings=emb,
        documents=_optional_str_column(b, "documents"),
        metadatas=_metadatas(b),
        uris=_optional_str_column(b, "uris"),
        read_after=read_after,
    )
    n = len(ids)
    for col in (emb, req.documents, req.metadatas, req.uris):
        if col is not None and len(col) != n:
            raise InvalidArgument(
                "Inconsistent number of IDs, embeddings, documents, URIs and metadatas"
            )
    return req


def parse_get(body: Any, read_after: str | None = None) -> GetRequest:
    """Decode and validate a get body."""
    b = _body_object(body)
    where, where_document = _filters(b)
    return GetRequest(
        ids=_str_list(b, "ids"),
        where=where,
        where_document=where_document,
        limit=_non_negative_int(b, "limit"),
        offset=_non_negative_int(b, "offset") or 0,
        include=_include(b, GET_DEFAULT_INCLUDE),
        read_after=read_after,
    )


def parse_query(body: Any, read_after: str | None = None) -> QueryRequest:
    """Decode and validate a query body."""
    b = _body_object(body)
    if b.get("query_embeddings") is None:
        raise InvalidArgument("missing field `query_embeddings`")
    q = decode_embeddings(b["query_embeddings"], "query_embeddings")
    assert q is not None
    n_results = b.get("n_results")
    if n_results is None:
        n_results = 10
    elif type(n_results) is not int or n_results <= 0:
        raise InvalidArgument(
            f"Number of requested results {n_results!r}, cannot be negative, or zero."
        )
    where, where_document = _filters(b)
    return QueryRequest(
        query_embeddings=q,
        n_results=n_results,
        where=where,
        where_document=where_document,
        include=_include(b, QUERY_DEFAULT_INCLUDE),
        ids=_str_list(b, "ids"),
        read_after=read_after,
    )


# --- metrics ----------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "chromasnap_http_requests_total", "HTTP requests answered, by route and status",
    ["role", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "chromasnap_http_request_duration_seconds", "Time to answer an HTTP request, by route",
    ["role", "route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_ERRORS = Counter(
    "chromasnap_http_errors_total", "HTTP requests answered with an error, by Chroma error name",
    ["role", "route", "error"],
)
HTTP_FORWARDED = Counter(
    "chromasnap_http_forwarded_total", "Requests forwarded to another chromasnap service",
    ["role", "target", "status"],
)


# --- the app ----------------------------------------------------------------------------

Headers = list[tuple[bytes, bytes]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _Response:
    status: int
    body: bytes
    headers: Headers = field(default_factory=list)
    content_type: bytes = b"application/json"


_Handler = Callable[..., Awaitable[_Response]]


def _json(status: int, obj: Any, headers: Headers | None = None) -> _Response:
    return _Response(status, orjson.dumps(obj, option=_JSON, default=_json_default), headers or [])


def _json_default(obj: Any) -> Any:
    # orjson serialises C-contiguous numpy arrays natively; everything else lands here.
    if isinstance(obj, np.ndarray):
        return np.ascontiguousarray(obj).tolist() if obj.dtype != np.float32 else (
            np.ascontiguousarray(obj)
        )
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return bytes(v)
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if raw is None:
        return None
    prefix = name + "="
    for raw_part in raw.decode("latin-1").split(";"):
        part = raw_part.strip()
        if part.startswith(prefix):
            return part[len(prefix):] or None
    return None


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
        role: str = "server",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        server_version: str = CHROMA_SERVER_VERSION,
        session_cookie: bool = True,
        metrics_registry: CollectorRegistry = REGISTRY,
        on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
        on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
        on_delta: Callable[[str, bytes], Awaitable[bool]] | None = None,
    ) -> None:
        if collection_model is None:
            if read is None:
                raise ValueError("ChromaAPI needs a read backend or a collection_model callable")
            collection_model = read.collection_model
        if write is not None and forward_writes_to:
            raise ValueError("give either a write backend or forward_writes_to, not both")
        if read is not None and forward_reads_to:
            raise ValueError("give either a read backend or forward_reads_to, not both")
        self.read = read
        self.write = write
        self.collection_model = collection_model
        self.forward_writes_to = forward_writes_to.rstrip("/") if forward_writes_to else None
        self.forward_reads_to = forward_reads_to.rstrip("/") if forward_reads_to else None
        self.forward_timeout = forward_timeout
        self.auth_tokens = [t.encode() for t in auth_tokens]
        self.ready = ready
        self.role = role
        self.max_body_bytes = max_body_bytes
        self.max_batch_size = max_batch_size
        self.server_version = server_version
        self.session_cookie = session_cookie
        self.metrics_registry = metrics_registry
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)
        self.on_delta = on_delta
        self._forward_client: Any = None
        self._metric_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    # -- ASGI entry points --

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: HTTP requests and lifespan events."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

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

    async def aclose(self) -> None:
        """Close the forwarding HTTP client (idempotent)."""
        client, self._forward_client = self._forward_client, None
        if client is not None:
            await client.aclose()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        method: str = scope["method"]
        route = "unknown"
        try:
            route, handler, args = self._route(method, scope["path"])
            if self.auth_tokens and route not in _AUTH_EXEMPT:
                self._authenticate(scope)
            resp = await handler(scope, receive, *args)
        except ChromasnapError as e:
            resp = self._error(route, e)
        except Exception as e:
            log.exception("unexpected error answering %s %s", method, scope["path"])
            resp = self._error(route, Internal(f"{type(e).__name__}: {e}"))
        headers: Headers = [
            (b"content-type", resp.content_type),
            (b"content-length", str(len(resp.body)).encode()),
        ]
        if resp.headers:
            headers.extend(resp.headers)
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

    def _error(self, route: str, e: ChromasnapError) -> _Response:
        HTTP_ERRORS.labels(self.role, route, e.chroma_name).inc()
        if e.status >= 500:
            log.warning("%s on %s: %s", e.chroma_name, route, e.message)
        else:
            log.debug("%s on %s: %s", e.chroma_name, route, e.message)
        headers: Headers = []
        if e.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="chromasnap"'))
        return _json(e.status, e.body(), headers)

    # -- routing --

    def _route(self, method: str, path: str) -> tuple[str, _Handler, tuple[Any, ...]]:
        """Map a request to (route name for metrics, handler, path arguments)."""
        if not path.startswith(API_PREFIX):
            if path == "/healthz":
                return self._only(method, "GET", "healthz", self._healthz, ())
            if path == "/readyz":
                return self._only(method, "GET", "readyz", self._readyz, ())
            if path == "/metrics":
                return self._only(method, "GET", "metrics", self._metrics, ())
            if path.startswith(DELTA_NOTIFY_PREFIX) and self.on_delta is not None:
                return self._only(method, "POST", "notify_delta", self._notify_delta,
                                  (path[len(DELTA_NOTIFY_PREFIX):],))
            raise NotFound(f"no route for {method} {path}")
        parts = path[len(API_PREFIX):].strip("/").split("/")
        n = len(parts)
        if n >= 6 and parts[0] == "tenants" and parts[2] == "databases" and (
            parts[4] == "collections"
        ):
            tenant, database = parts[1], parts[3]
            if n == 6:
                name = parts[5]
                if method == "GET":
                    return "get_collection", self._get_collection, (tenant, database, name)
                if method == "DELETE":
                    return "delete_collection", self._delete_collection, (tenant, database, name)
                if method == "PUT":
                    return "modify_collection", self._unimplemented, ("modifying a collection",)
                raise _method_not_allowed(method, "a collection")
            if n == 7 and parts[5] == "by-id":
                return self._only(method, "GET", "get_collection_by_id",
                                  self._get_collection_by_id, (tenant, database, parts[6]))
            cid, op = parts[5], parts[6]
            if n == 7:
                record = _RECORD_ROUTES.get(op)
                if record is not None:
                    want, name, kind = record
                    if kind is not None:
                        return self._only(method, want, name, self._write_route,
                                          (tenant, database, cid, kind))
                    return self._only(method, want, name, getattr(self, f"_{name}"),
                                      (tenant, database, cid))
                if op in ("search", "fork", "fork_count", "indexing_status"):
                    return op, self._unimplemented, (f"the {op} route",)
            if op in ("functions", "attached_functions"):
                return "functions", self._unimplemented, ("attached functions",)
            raise NotFound(f"no route for {method} {path}")
        if n == 5 and parts[0] == "tenants" and parts[2] == "databases":
            tenant, database = parts[1], parts[3]
            if parts[4] == "collections":
                if method == "GET":
                    return "list_collections", self._list_collections, (tenant, database)
                if method == "POST":
                    return "create_collection", self._create_collection, (tenant, database)
                raise _method_not_allowed(method, path)
            if parts[4] == "collections_count":
                return self._only(method, "GET", "count_collections", self._count_collections,
                                  (tenant, database))
        if n == 4 and parts[0] == "tenants" and parts[2] == "databases":
            if method == "GET":
                return "get_database", self._get_database, (parts[1], parts[3])
            if method == "DELETE":
                return "delete_database", self._unimplemented, ("deleting a database",)
            raise _method_not_allowed(method, path)
        if n == 3 and parts[0] == "tenants" and parts[2] == "databases":
            if method == "GET":
                return "list_databases", self._list_databases, (parts[1],)
            if method == "POST":
                return "create_database", self._unimplemented, ("creating a database",)
            raise _method_not_allowed(method, path)
        if n == 2 and parts[0] == "tenants":
            if method == "GET":
                return "get_tenant", self._get_tenant, (parts[1],)
            if method == "PATCH":
                return "update_tenant", self._unimplemented, ("updating a tenant",)
            raise _method_not_allowed(method, path)
        if n == 2 and parts[0] == "auth" and parts[1] == "identity":
            return self._only(method, "GET", "identity", self._identity, ())
        if n == 1:
            simple = _SIMPLE_ROUTES.get(parts[0])
            if simple is not None:
                want, name = simple
                return self._only(method, want, name, getattr(self, f"_{name}"), ())
            if parts[0] == "tenants":
                return self._only(method, "POST", "create_tenant", self._unimplemented,
                                  ("creating a tenant",))
            if parts[0] == "reset":
                return self._only(method, "POST", "reset", self._unimplemented,
                                  ("resetting the database",))
        raise NotFound(f"no route for {method} {path}")

    @staticmethod
    def _only(method: str, want: str, name: str, handler: _Handler,
              args: tuple[Any, ...]) -> tuple[str, _Handler, tuple[Any, ...]]:
        if method != want:
            raise _method_not_allowed(method, name)
        return name, handler, args

    # -- auth --

    def _authenticate(self, scope: Scope) -> None:
        token: bytes | None = None
        auth = _header(scope, b"authorization")
        if auth is not None:
            if not auth.startswith(b"Bearer "):
                raise Forbidden("Bearer not found in Authorization header")
            token = auth[7:].strip()
        else:
            token = _header(scope, b"x-chroma-token")
            if token is not None:
                token = token.strip()
        if token is None:
            raise Unauthenticated(
                "missing credentials: send 'Authorization: Bearer <token>' or 'X-Chroma-Token' "
                "(chromadb: chroma_client_auth_provider='chromadb.auth.token_authn."
                "TokenAuthClientProvider', chroma_client_auth_credentials=<token>)"
            )
        # Compare against every token so the time taken does not reveal which matched.
        ok = False
        for t in self.auth_tokens:
            ok |= hmac.compare_digest(t, token)
        if not ok:
            raise Forbidden("Forbidden")

    # -- body and tokens --

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise InvalidArgument("client disconnected while sending the request body")
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _too_large(size, limit)
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _read_json(self, scope: Scope, receive: Receive) -> Any:
        raw = await self._read_body(scope, receive)
        if not raw.strip():
            raise InvalidArgument("request body is empty: send a JSON object")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InvalidArgument(f"Failed to parse the request body as JSON: {e}") from e

    @staticmethod
    def _read_after(scope: Scope) -> str | None:
        v = _header(scope, b"x-chromasnap-read-after")
        if v is not None:
            return v.decode("latin-1").strip() or None
        return _cookie(scope, TOKEN_COOKIE)

    def _token_headers(self, token: str) -> Headers:
        if "\r" in token or "\n" in token:
            raise Internal("write backend returned a token with a line break")
        headers: Headers = [(TOKEN_HEADER.lower().encode(), token.encode("latin-1"))]
        if self.session_cookie and _COOKIE_SAFE.match(token):
            headers.append((
                b"set-cookie",
                f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax".encode("latin-1"),
            ))
        return headers

    # -- collection identity --

    def _model(self) -> Mapping[str, Any]:
        return self.collection_model()

    def _check_scope(self, tenant: str, database: str, what: str) -> Mapping[str, Any]:
        model = self._model()
        if tenant != model.get("tenant", DEFAULT_TENANT) or database != model.get(
            "database", DEFAULT_DATABASE
        ):
            raise NotFound(f"Collection [{what}] does not exist")
        return model

    def _check_collection_id(self, tenant: str, database: str, cid: str) -> Mapping[str, Any]:
        model = self._check_scope(tenant, database, cid)
        if cid != model["id"]:
            try:
                uuid.UUID(cid)
            except ValueError:
                raise InvalidArgument("Collection ID is not a valid UUIDv4") from None
            raise NotFound(f"Collection [{cid}] does not exist.")
        return model

    # -- simple routes --

    async def _root(self, scope: Scope, receive: Receive) -> _Response:
        return await self._heartbeat(scope, receive)

    async def _heartbeat(self, scope: Scope, receive: Receive) -> _Response:
        return _json(200, {"nanosecond heartbeat": time.time_ns()})

    async def _version(self, scope: Scope, receive: Receive) -> _Response:
        return _json(200, self.server_version)

    async def _pre_flight_checks(self, scope: Scope, receive: Receive) -> _Response:
        return _json(200, {"max_batch_size": self.max_batch_size,
                           "supports_base64_encoding": True})

    async def _healthcheck(self, scope: Scope, receive: Receive) -> _Response:
        ok = self._is_ready()
        return _json(200 if ok else 503,
                     {"is_executor_ready": ok, "is_log_client_ready": ok})

    async def _identity(self, scope: Scope, receive: Receive) -> _Response:
        model = self._safe_model()
        return _json(200, {
            "user_id": "",
            "tenant": model.get("tenant", DEFAULT_TENANT),
            "databases": [model.get("database", DEFAULT_DATABASE)],
        })

    def _safe_model(self) -> Mapping[str, Any]:
        # Identity and tenant lookups happen when a client is constructed; answer them
        # with the defaults even before a snapshot is loaded, so clients can connect.
        try:
            return self._model()
        except ChromasnapError:
            return {"tenant": DEFAULT_TENANT, "database": DEFAULT_DATABASE}

    async def _get_tenant(self, scope: Scope, receive: Receive, tenant: str) -> _Response:
        if tenant != self._safe_model().get("tenant", DEFAULT_TENANT):
            raise NotFound(f"Tenant [{tenant}] not found")
        return _json(200, {"name": tenant, "resource_name": None})

    def _database_json(self, model: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": "00000000-0000-0000-0000-000000000000",
            "name": model.get("database", DEFAULT_DATABASE),
            "tenant": model.get("tenant", DEFAULT_TENANT),
        }

    async def _get_database(self, scope: Scope, receive: Receive, tenant: str,
                            database: str) -> _Response:
        model = self._safe_model()
        if tenant != model.get("tenant", DEFAULT_TENANT):
            raise NotFound(f"Tenant [{tenant}] not found")
        if database != model.get("database", DEFAULT_DATABASE):
            raise NotFound(f"Database [{database}] not found. Are you sure it exists?")
        return _json(200, self._database_json(model))

    async def _list_databases(self, scope: Scope, receive: Receive, tenant: str) -> _Response:
        model = self._safe_model()
        if tenant != model.get("tenant", DEFAULT_TENANT):
            raise NotFound(f"Tenant [{tenant}] not found")
        return _json(200, _paginate(scope, [self._database_json(model)]))

    async def _list_collections(self, scope: Scope, receive: Receive, tenant: str,
                                database: str) -> _Response:
        model = self._safe_model()
        if tenant != model.get("tenant", DEFAULT_TENANT) or database != model.get(
            "database", DEFAULT_DATABASE
        ):
            return _json(200, [])
        return _json(200, _paginate(scope, [self._model()]))

    async def _count_collections(self, scope: Scope, receive: Receive, tenant: str,
                                 database: str) -> _Response:
        model = self._safe_model()
        same = tenant == model.get("tenant", DEFAULT_TENANT) and database == model.get(
            "database", DEFAULT_DATABASE
        )
        return _json(200, 1 if same else 0)

    async def _get_collection(self, scope: Scope, receive: Receive, tenant: str,
                              database: str, name: str) -> _Response:
        model = self._check_scope(tenant, database, name)
        if name != model["name"] and name != model["id"]:
            raise NotFound(f"Collection [{name}] does not exist")
        return _json(200, model)

    async def _get_collection_by_id(self, scope: Scope, receive: Receive, tenant: str,
                                    database: str, cid: str) -> _Response:
        model = self._check_scope(tenant, database, cid)
        if cid != model["id"]:
            raise NotFound(f"Collection [{cid}] does not exist")
        return _json(200, model)

    async def _create_collection(self, scope: Scope, receive: Receive, tenant: str,
                                 database: str) -> _Response:
        body = _body_object(await self._read_json(scope, receive))
        name = body.get("name")
        if not isinstance(name, str):
            raise InvalidArgument("missing field `name`")
        model = self._check_scope(tenant, database, name)
        if name == model["name"]:
            if body.get("get_or_create"):
                return _json(200, model)
            raise AlreadyExists(f"Collection [{name}] already exists")
        raise Unimplemented(
            f"this chromasnap service serves the collection {model['name']!r} only and cannot "
            f"create {name!r}: declare each collection as a ChromaCollection resource"
        )

    async def _delete_collection(self, scope: Scope, receive: Receive, tenant: str,
                                 database: str, name: str) -> _Response:
        model = self._check_scope(tenant, database, name)
        if name != model["name"]:
            raise NotFound(f"Collection [{name}] does not exist")
        raise Unimplemented(
            f"chromasnap does not delete collections over the Chroma API: delete the "
            f"ChromaCollection resource for {name!r} instead"
        )

    async def _unimplemented(self, scope: Scope, receive: Receive, what: str) -> _Response:
        raise Unimplemented(f"{what} is not supported by chromasnap")

    # -- operational routes --

    def _is_ready(self) -> bool:
        if self.ready is None:
            return True
        try:
            return bool(self.ready())
        except Exception:
            log.exception("readiness check failed")
            return False

    async def _notify_delta(self, scope: Scope, receive: Receive, name: str) -> _Response:
        """A writer pushes a new delta (reader only): verified, then added to the tail."""
        assert self.on_delta is not None
        body = await self._read_body(scope, receive)
        try:
            accepted = await self.on_delta(name, body)
        except ValueError as e:  # CorruptDelta and bad names are ValueError/Exception kin
            raise InvalidArgument(f"delta {name!r} rejected: {e}") from e
        return _json(200, {"accepted": accepted})

    async def _healthz(self, scope: Scope, receive: Receive) -> _Response:
        return _Response(200, b"ok\n", content_type=b"text/plain; charset=utf-8")

    async def _readyz(self, scope: Scope, receive: Receive) -> _Response:
        if self._is_ready():
            return _Response(200, b"ready\n", content_type=b"text/plain; charset=utf-8")
        return _Response(503, b"not ready\n", content_type=b"text/plain; charset=utf-8")

    async def _metrics(self, scope: Scope, receive: Receive) -> _Response:
        return _Response(200, generate_latest(self.metrics_registry),
                         content_type=CONTENT_TYPE_LATEST.encode())

    # -- record routes --

    async def _write_route(
        self, scope: Scope, receive: Receive, tenant: str, database: str, cid: str, kind: OpKind
    ) -> _Response:
        if self.write is None:
            if self.forward_writes_to:
                return await self._forward(self.forward_writes_to, scope, receive)
            raise Unimplemented(
                "this chromasnap reader does not accept writes and has no writer service "
                "configured; send writes to the writer service"
            )
        self._check_collection_id(tenant, database, cid)
        body = await self._read_json(scope, receive)
        req = parse_write(kind, body, self._read_after(scope))
        result = await self.write.write(kind, req)
        if isinstance(result, WriteAck):
            token, deleted = result.token, result.deleted
        else:
            token, deleted = result, None
        headers = self._token_headers(token)
        if kind == OpKind.DELETE:
            return _json(200, {} if deleted is None else {"deleted": deleted}, headers)
        return _Response(201 if kind == OpKind.ADD else 200, b"{}", headers)

    async def _count(self, scope: Scope, receive: Receive, tenant: str, database: str,
                     cid: str) -> _Response:
        if self.read is None:
            return await self._forward_read(scope, receive)
        self._check_collection_id(tenant, database, cid)
        level = _query_param(scope, "read_level")
        if level is not None and level not in READ_LEVELS:
            raise InvalidArgument(
                f"read_level: unknown variant `{level}`, expected one of "
                f"{', '.join(READ_LEVELS)}"
            )
        return _json(200, await self.read.count(self._read_after(scope)))

    async def _get(self, scope: Scope, receive: Receive, tenant: str, database: str,
                   cid: str) -> _Response:
        if self.read is None:
            return await self._forward_read(scope, receive)
        self._check_collection_id(tenant, database, cid)
        req = parse_get(await self._read_json(scope, receive), self._read_after(scope))
        result = await self.read.get(req)
        inc = req.include
        return _json(200, {
            "ids": result["ids"],
            "embeddings": result.get("embeddings") if "embeddings" in inc else None,
            "documents": result.get("documents") if "documents" in inc else None,
            "uris": result.get("uris") if "uris" in inc else None,
            "metadatas": result.get("metadatas") if "metadatas" in inc else None,
            "include": inc,
        })

    async def _query(self, scope: Scope, receive: Receive, tenant: str, database: str,
                     cid: str) -> _Response:
        if self.read is None:
            return await self._forward_read(scope, receive)
        model = self._check_collection_id(tenant, database, cid)
        req = parse_query(await self._read_json(scope, receive), self._read_after(scope))
        inc = req.include
        q = req.query_embeddings
        if q.shape[0] == 0:
            empty: dict[str, Any] = {"ids": []}
            for k in ("embeddings", "documents", "uris", "metadatas", "distances"):
                empty[k] = [] if k in inc else None
            empty["include"] = inc
            return _json(200, empty)
        dim = model.get("dimension")
        if dim is not None and q.shape[1] != dim:
            raise InvalidArgument(
                f"Collection expecting embedding with dimension of {dim}, got {q.shape[1]}"
            )
        result = await self.read.query(req)
        return _json(200, {
            "ids": result["ids"],
            "embeddings": result.get("embeddings") if "embeddings" in inc else None,
            "documents": result.get("documents") if "documents" in inc else None,
            "uris": result.get("uris") if "uris" in inc else None,
            "metadatas": result.get("metadatas") if "metadatas" in inc else None,
            "distances": result.get("distances") if "distances" in inc else None,
            "include": inc,
        })

    # -- forwarding --

    async def _forward_read(self, scope: Scope, receive: Receive) -> _Response:
        if self.forward_reads_to:
            return await self._forward(self.forward_reads_to, scope, receive)
        raise Unimplemented(
            "this chromasnap writer does not answer reads and has no reader service "
            "configured; send reads to the reader service"
        )

    async def _forward(self, base: str, scope: Scope, receive: Receive) -> _Response:
        if _header(scope, FORWARDED_HEADER.lower().encode()) is not None:
            raise Unavailable(
                f"forwarding loop: a request forwarded to this service would be forwarded "
                f"again to {base}; check the writer/reader service URLs"
            )
        body = await self._read_body(scope, receive)
        client = self._client()
        qs = scope.get("query_string", b"")
        url = base + scope["path"] + (f"?{qs.decode('latin-1')}" if qs else "")
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in _FORWARD_REQUEST_HEADERS
        }
        headers[FORWARDED_HEADER] = self.role
        try:
            upstream = await client.request(scope["method"], url, content=body, headers=headers)
        except Exception as e:
            import httpx

            HTTP_FORWARDED.labels(self.role, base, "error").inc()
            if isinstance(e, httpx.TimeoutException):
                raise ReadTimeout(
                    f"{base} did not answer within {self.forward_timeout:g}s; the write may or "
                    "may not have been applied: retry it (add and upsert are idempotent)"
                ) from e
            if isinstance(e, httpx.HTTPError):
                raise Unavailable(f"cannot reach {base}: {type(e).__name__}: {e}") from e
            raise
        HTTP_FORWARDED.labels(self.role, base, str(upstream.status_code)).inc()
        relay: Headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in upstream.headers.multi_items()
            if k.lower() in _RELAY_RESPONSE_HEADERS
        ]
        ctype = upstream.headers.get("content-type", "application/json").encode("latin-1")
        return _Response(upstream.status_code, upstream.content, relay, ctype)

    def _client(self) -> Any:
        if self._forward_client is None:
            import httpx

            self._forward_client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.forward_timeout, connect=10.0),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64,
                                    keepalive_expiry=30.0),
            )
        return self._forward_client


_FORWARD_REQUEST_HEADERS = frozenset((
    b"content-type", b"authorization", b"x-chroma-token", b"cookie", b"user-agent",
    b"x-chromasnap-read-after",
))
_RELAY_RESPONSE_HEADERS = frozenset((
    "x-chromasnap-token", "set-cookie", "chroma-trace-id", "www-authenticate",
))

_SIMPLE_ROUTES: dict[str, tuple[str, str]] = {
    "": ("GET", "root"),
    "heartbeat": ("GET", "heartbeat"),
    "version": ("GET", "version"),
    "pre-flight-checks": ("GET", "pre_flight_checks"),
    "healthcheck": ("GET", "healthcheck"),
}

# op -> (method, route name, write kind or None for reads)
_RECORD_ROUTES: dict[str, tuple[str, str, OpKind | None]] = {
    "add": ("POST", "add", OpKind.ADD),
    "upsert": ("POST", "upsert", OpKind.UPSERT),
    "update": ("POST", "update", OpKind.UPDATE),
    "delete": ("POST", "delete", OpKind.DELETE),
    "get": ("POST", "get", None),
    "query": ("POST", "query", None),
    "count": ("GET", "count", None),
}


def _method_not_allowed(method: str, what: str) -> ChromasnapError:
    err = InvalidArgument(f"method {method} is not allowed on {what}")
    err.status = 405
    return err


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body of {size} bytes is over this server's limit of {limit} bytes: send "
        "fewer records per request"
    )


def _query_param(scope: Scope, name: str) -> str | None:
    qs: bytes = scope.get("query_string", b"")
    if not qs:
        return None
    from urllib.parse import parse_qsl

    for k, v in parse_qsl(qs.decode("latin-1")):
        if k == name:
            return v
    return None


def _paginate(scope: Scope, items: list[Any]) -> list[Any]:
    def num(name: str) -> int | None:
        v = _query_param(scope, name)
        if v is None:
            return None
        if not v.isdigit():
            raise InvalidArgument(f"{name} must be a non-negative integer, got {v!r}")
        return int(v)

    offset = num("offset") or 0
    limit = num("limit")
    return items[offset:] if limit is None else items[offset:offset + limit]


# --- serving ----------------------------------------------------------------------------


def uvicorn_config(app: ChromaAPI, host: str, port: int, *, log_level: str = "warning") -> Any:
    """A ``uvicorn.Config`` tuned for this app: uvloop + httptools when installed (uvicorn's
    "auto"), no access log, and a keep-alive longer than chromadb's client pool keeps idle
    connections (40 s), so the server never closes a connection the client is about to reuse.
    """
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, loop="auto", http="auto", lifespan="on",
        access_log=False, log_level=log_level, timeout_keep_alive=75, log_config=None,
    )


class BackgroundServer:
    """Run the app under uvicorn in a thread (tests, ``chromasnap dev``); ``port=0`` picks one.

    Use as a context manager; ``url`` is ready once ``__enter__`` returns.
    """

    def __init__(self, app: ChromaAPI, host: str = "127.0.0.1", port: int = 0,
                 start_timeout: float = 30.0) -> None:
        import uvicorn

        self.app = app
        self.host = host
        self.server = uvicorn.Server(uvicorn_config(app, host, port))
        self.start_timeout = start_timeout
        self.thread = threading.Thread(target=self._run, name="chromasnap-http", daemon=True)
        self.port = port
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as e:  # reported by __enter__
            self._error = e

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if self._error is not None or not self.thread.is_alive():
                raise RuntimeError(f"HTTP server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"HTTP server not started within {self.start_timeout}s")
            self.thread.join(0.01)
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        self.port = sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(self.start_timeout)

