"""Routes about the server rather than the collection's records: heartbeat, version,
pre-flight checks, identity, tenant and database lookups, probes, metrics, and the
writers' delta notifications to readers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from chromasnap.api.asgi import Receive, Scope, read_body
from chromasnap.api.parsing import load_json
from chromasnap.api.responses import (
    DEFAULT_DATABASE,
    DEFAULT_TENANT,
    Response,
    database_json,
    json_response,
    paginate,
    text_response,
)
from chromasnap.api.service import MAX_PUSH_BYTES, ServiceContext
from chromasnap.engine.errors import InvalidArgument, NotFound, Unimplemented

#: Largest lease request body (a URL in a JSON object).
MAX_LEASE_BYTES = 4096

DeltaHandler = Callable[[str, bytes], Awaitable[bool]]


class Leases(Protocol):
    """A writer's freshness leases (``writer/fanout.py``)."""

    def grant(self, reader_id: str, url: str) -> dict[str, Any] | None:
        """Grant or renew a reader's lease: the grant, or None when refused."""

    def release(self, reader_id: str) -> None:
        """The reader gave its lease back."""


class SystemRoutes:
    """Handlers for the server-level routes of one ``ServiceContext``."""

    def __init__(self, ctx: ServiceContext, on_delta: DeltaHandler | None = None,
                 leases: Leases | None = None) -> None:
        self.ctx = ctx
        self.on_delta = on_delta
        self.leases = leases

    async def root(self, scope: Scope, receive: Receive) -> Response:
        """``GET /api/v2``: a heartbeat, as Chroma answers it."""
        return await self.heartbeat(scope, receive)

    async def heartbeat(self, scope: Scope, receive: Receive) -> Response:
        """Chroma's liveness answer: the server clock in nanoseconds."""
        return json_response(200, {"nanosecond heartbeat": time.time_ns()})

    async def version(self, scope: Scope, receive: Receive) -> Response:
        """The Chroma server version clients check compatibility against."""
        return json_response(200, self.ctx.server_version)

    async def pre_flight_checks(self, scope: Scope, receive: Receive) -> Response:
        """Batch limit and base64 support, which the client reads before writing."""
        return json_response(200, {"max_batch_size": self.ctx.max_batch_size,
                                   "supports_base64_encoding": True})

    async def healthcheck(self, scope: Scope, receive: Receive) -> Response:
        """Chroma's readiness route (503 until ready)."""
        ok = self.ctx.is_ready()
        return json_response(200 if ok else 503,
                             {"is_executor_ready": ok, "is_log_client_ready": ok})

    async def identity(self, scope: Scope, receive: Receive) -> Response:
        """Who the client is: the collection's tenant and database."""
        model = self.ctx.safe_model()
        return json_response(200, {
            "user_id": "",
            "tenant": model.get("tenant", DEFAULT_TENANT),
            "databases": [model.get("database", DEFAULT_DATABASE)],
        })

    async def get_tenant(self, scope: Scope, receive: Receive, tenant: str) -> Response:
        """The collection's tenant; ``NotFound`` for any other."""
        if tenant != self.ctx.safe_model().get("tenant", DEFAULT_TENANT):
            raise NotFound(f"Tenant [{tenant}] not found")
        return json_response(200, {"name": tenant, "resource_name": None})

    async def get_database(self, scope: Scope, receive: Receive, tenant: str,
                           database: str) -> Response:
        """The collection's database; ``NotFound`` for any other."""
        model = self.ctx.safe_model()
        if tenant != model.get("tenant", DEFAULT_TENANT):
            raise NotFound(f"Tenant [{tenant}] not found")
        if database != model.get("database", DEFAULT_DATABASE):
            raise NotFound(f"Database [{database}] not found. Are you sure it exists?")
        return json_response(200, database_json(model))

    async def list_databases(self, scope: Scope, receive: Receive, tenant: str) -> Response:
        """The one database of the collection's tenant."""
        model = self.ctx.safe_model()
        if tenant != model.get("tenant", DEFAULT_TENANT):
            raise NotFound(f"Tenant [{tenant}] not found")
        return json_response(200, paginate(scope, [database_json(model)]))

    async def unimplemented(self, scope: Scope, receive: Receive, what: str) -> Response:
        """Chroma routes chromasnap deliberately does not serve."""
        raise Unimplemented(f"{what} is not supported by chromasnap")

    async def notify_delta(self, scope: Scope, receive: Receive, name: str) -> Response:
        """A writer pushes a new delta (reader only): verified, then added to the tail."""
        assert self.on_delta is not None
        body = await read_body(scope, receive, MAX_PUSH_BYTES)
        try:
            accepted = await self.on_delta(name, body)
        except ValueError as e:  # CorruptDelta and bad names are ValueError/Exception kin
            raise InvalidArgument(f"delta {name!r} rejected: {e}") from e
        return json_response(200, {"accepted": accepted})

    async def grant_lease(self, scope: Scope, receive: Receive, reader_id: str) -> Response:
        """A reader asks this writer for a freshness lease (writer only): 409 when refused."""
        assert self.leases is not None
        body = load_json(await read_body(scope, receive, MAX_LEASE_BYTES))
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgument("a lease request needs {\"url\": \"http://<reader>:<port>\"}")
        grant = self.leases.grant(reader_id, url)
        if grant is None:
            return json_response(409, {"error": "LeaseRefused", "message": (
                "a delta pushed to this reader was not confirmed; its lease ends first")})
        return json_response(200, grant)

    async def release_lease(self, scope: Scope, receive: Receive, reader_id: str) -> Response:
        """A reader gives its lease back (writer only) before it stops."""
        assert self.leases is not None
        self.leases.release(reader_id)
        return json_response(200, {"released": reader_id})

    async def healthz(self, scope: Scope, receive: Receive) -> Response:
        """Liveness probe: the process answers."""
        return text_response(200, b"ok\n")

    async def readyz(self, scope: Scope, receive: Receive) -> Response:
        """Readiness probe: 503 until the readiness callback says yes."""
        if self.ctx.is_ready():
            note = self.ctx.ready_note() if self.ctx.ready_note else None
            return text_response(200, f"ready; {note}\n".encode() if note else b"ready\n")
        return text_response(503, b"not ready\n")

    async def metrics(self, scope: Scope, receive: Receive) -> Response:
        """Prometheus exposition of the server's registry."""
        return Response(200, generate_latest(self.ctx.metrics_registry),
                        content_type=CONTENT_TYPE_LATEST.encode())
