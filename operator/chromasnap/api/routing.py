"""Which handler answers a request: the route table of Chroma's v2 API for one collection
or a pool, plus the probes, metrics and the internal delta-notification route.

Matching is a split of the path and a few comparisons rather than a regex table: it
runs for every request, and the reader's latency target leaves little room.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chromasnap.api.catalog_routes import CatalogRoutes
from chromasnap.api.collection_routes import CollectionRoutes
from chromasnap.api.error_responses import method_not_allowed
from chromasnap.api.read_routes import ReadRoutes
from chromasnap.api.responses import Response
from chromasnap.api.system_routes import SystemRoutes
from chromasnap.api.write_routes import WriteRoutes
from chromasnap.engine.errors import NotFound
from chromasnap.engine.ops import OpKind

API_PREFIX = "/api/v2"
DELTA_NOTIFY_PREFIX = "/internal/v1/deltas/"
LEASE_PREFIX = "/internal/v1/leases/"

Handler = Callable[..., Awaitable[Response]]
Route = tuple[str, Handler, tuple[Any, ...]]
"""(route name for metrics and auth, handler, path arguments after ``scope, receive``)."""

# Record operations under a collection: op -> (method, route name, write kind or None).
_RECORD_ROUTES: dict[str, tuple[str, str, OpKind | None]] = {
    "add": ("POST", "add", OpKind.ADD),
    "upsert": ("POST", "upsert", OpKind.UPSERT),
    "update": ("POST", "update", OpKind.UPDATE),
    "delete": ("POST", "delete", OpKind.DELETE),
    "get": ("POST", "get", None),
    "query": ("POST", "query", None),
    "count": ("GET", "count", None),
}
# Chroma routes that exist but that chromasnap does not serve.
_UNSERVED_COLLECTION_OPS = ("search", "fork", "fork_count", "indexing_status")


def _only(method: str, want: str, name: str, handler: Handler, args: tuple[Any, ...]) -> Route:
    if method != want:
        raise method_not_allowed(method, name)
    return name, handler, args


class Router:
    """Resolves ``(method, path)`` to a ``Route`` over the four groups of handlers."""

    def __init__(self, system: SystemRoutes, collections: CollectionRoutes, reads: ReadRoutes,
                 writes: WriteRoutes, *, notify_delta: bool, grant_lease: bool = False,
                 pool: CatalogRoutes | None = None) -> None:
        self.system = system
        #: A pool answers the collection and tenancy routes from its catalog.
        self.collections: CollectionRoutes | CatalogRoutes = pool or collections
        self.pool = pool
        self.writes = writes
        self.notify_delta = notify_delta
        self.grant_lease = grant_lease
        self._simple: dict[str, tuple[str, str, Handler]] = {
            "": ("GET", "root", system.root),
            "heartbeat": ("GET", "heartbeat", system.heartbeat),
            "version": ("GET", "version", system.version),
            "pre-flight-checks": ("GET", "pre_flight_checks", system.pre_flight_checks),
            "healthcheck": ("GET", "healthcheck", system.healthcheck),
        }
        self._reads: dict[str, Handler] = {
            "get": reads.get, "query": reads.query, "count": reads.count,
        }

    def resolve(self, method: str, path: str) -> Route:
        """The route for a request; ``NotFound`` or 405 when there is none."""
        if not path.startswith(API_PREFIX):
            return self._resolve_internal(method, path)
        parts = path[len(API_PREFIX):].strip("/").split("/")
        n = len(parts)
        unimplemented = self.system.unimplemented
        if n >= 6 and parts[0] == "tenants" and parts[2] == "databases" and (
            parts[4] == "collections"
        ):
            return self._resolve_collection(method, path, parts)
        if n == 5 and parts[0] == "tenants" and parts[2] == "databases":
            tenant, database = parts[1], parts[3]
            if parts[4] == "collections":
                if method == "GET":
                    return ("list_collections", self.collections.list_collections,
                            (tenant, database))
                if method == "POST":
                    return ("create_collection", self.collections.create_collection,
                            (tenant, database))
                raise method_not_allowed(method, path)
            if parts[4] == "collections_count":
                return _only(method, "GET", "count_collections",
                             self.collections.count_collections, (tenant, database))
        tenancy = self.pool or self.system
        pool = self.pool
        if n == 4 and parts[0] == "tenants" and parts[2] == "databases":
            if method == "GET":
                return "get_database", tenancy.get_database, (parts[1], parts[3])
            if method == "DELETE":
                if pool is not None:
                    return "delete_database", pool.delete_database, (parts[1], parts[3])
                return "delete_database", unimplemented, ("deleting a database",)
            raise method_not_allowed(method, path)
        if n == 3 and parts[0] == "tenants" and parts[2] == "databases":
            if method == "GET":
                return "list_databases", tenancy.list_databases, (parts[1],)
            if method == "POST":
                if pool is not None:
                    return "create_database", pool.create_database, (parts[1],)
                return "create_database", unimplemented, ("creating a database",)
            raise method_not_allowed(method, path)
        if n == 2 and parts[0] == "tenants":
            if method == "GET":
                return "get_tenant", tenancy.get_tenant, (parts[1],)
            if method == "PATCH":
                return "update_tenant", unimplemented, ("updating a tenant",)
            raise method_not_allowed(method, path)
        if n == 2 and parts[0] == "auth" and parts[1] == "identity":
            return _only(method, "GET", "identity", tenancy.identity, ())
        if n == 1:
            simple = self._simple.get(parts[0])
            if simple is not None:
                want, name, handler = simple
                return _only(method, want, name, handler, ())
            if parts[0] == "tenants":
                if pool is not None:
                    return _only(method, "POST", "create_tenant", pool.create_tenant, ())
                return _only(method, "POST", "create_tenant", unimplemented,
                             ("creating a tenant",))
            if parts[0] == "reset":
                return _only(method, "POST", "reset", unimplemented, ("resetting the database",))
        raise NotFound(f"no route for {method} {path}")

    def _resolve_internal(self, method: str, path: str) -> Route:
        # Outside Chroma's API: probes, metrics, and writers pushing deltas to readers.
        if path == "/healthz":
            return _only(method, "GET", "healthz", self.system.healthz, ())
        if path == "/readyz":
            return _only(method, "GET", "readyz", self.system.readyz, ())
        if path == "/metrics":
            return _only(method, "GET", "metrics", self.system.metrics, ())
        if path.startswith(DELTA_NOTIFY_PREFIX) and self.notify_delta:
            return _only(method, "POST", "notify_delta", self.system.notify_delta,
                         (path[len(DELTA_NOTIFY_PREFIX):],))
        if path.startswith(LEASE_PREFIX) and self.grant_lease:
            if method == "DELETE":
                return "release_lease", self.system.release_lease, (path[len(LEASE_PREFIX):],)
            return _only(method, "POST", "grant_lease", self.system.grant_lease,
                         (path[len(LEASE_PREFIX):],))
        raise NotFound(f"no route for {method} {path}")

    def _resolve_collection(self, method: str, path: str, parts: list[str]) -> Route:
        # /tenants/{t}/databases/{d}/collections/{name or id}[/...]
        n = len(parts)
        tenant, database = parts[1], parts[3]
        if n == 6:
            name = parts[5]
            if method == "GET":
                return ("get_collection", self.collections.get_collection,
                        (tenant, database, name))
            if method == "DELETE":
                return ("delete_collection", self.collections.delete_collection,
                        (tenant, database, name))
            if method == "PUT":
                if self.pool is not None:
                    return ("modify_collection", self.pool.modify_collection,
                            (tenant, database, name))
                return ("modify_collection", self.system.unimplemented,
                        ("modifying a collection",))
            raise method_not_allowed(method, "a collection")
        if n == 7 and parts[5] == "by-id":
            return _only(method, "GET", "get_collection_by_id",
                         self.collections.get_collection_by_id, (tenant, database, parts[6]))
        cid, op = parts[5], parts[6]
        if n == 7:
            record = _RECORD_ROUTES.get(op)
            if record is not None:
                want, name, kind = record
                if kind is not None:
                    return _only(method, want, name, self.writes.write,
                                 (tenant, database, cid, kind))
                return _only(method, want, name, self._reads[name], (tenant, database, cid))
            if op in _UNSERVED_COLLECTION_OPS:
                return op, self.system.unimplemented, (f"the {op} route",)
        if op in ("functions", "attached_functions"):
            return "functions", self.system.unimplemented, ("attached functions",)
        raise NotFound(f"no route for {method} {path}")
