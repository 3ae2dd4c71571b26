"""What every route knows about the server it runs in: the backends, the collection it
serves (and the checks that a request names it) or the pool's catalog, readiness,
limits and identity."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from chromasnap.api.backends import Catalog, ReadBackend, Target, WriteBackend
from chromasnap.api.responses import DEFAULT_DATABASE, DEFAULT_TENANT
from chromasnap.config import CHROMA_MAX_PAYLOAD_BYTES
from chromasnap.engine.errors import ChromasnapError, InvalidArgument, NotFound

log = logging.getLogger("chromasnap.httpapi")

# What ``chroma run`` 1.5.9 reports from /api/v2/version.
CHROMA_SERVER_VERSION = "1.0.0"
# What ``chroma run`` reports (derived from SQLite's variable limit). Only the client
# enforces it (before sending); Chroma's server takes more records in a body that fits.
DEFAULT_MAX_BATCH_SIZE = 5461
DEFAULT_MAX_BODY_BYTES = CHROMA_MAX_PAYLOAD_BYTES
# A delta a writer pushes to readers is no client request: bounded by the flush window
# (32 MiB of records by default), not by Chroma's limit.
MAX_PUSH_BYTES = 64 << 20


@dataclass
class ServiceContext:
    """One server's configuration, shared by its route handlers."""

    collection_model: Callable[[], Mapping[str, Any]]
    role: str = "server"
    read: ReadBackend | None = None
    write: WriteBackend | None = None
    ready: Callable[[], bool] | None = None
    #: Shutting down: readiness says no while requests are still answered.
    draining: bool = False
    #: A line /readyz adds when ready but not all is well (e.g. a stale snapshot).
    ready_note: Callable[[], str | None] | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    server_version: str = CHROMA_SERVER_VERSION
    session_cookie: bool = True
    metrics_registry: CollectorRegistry = REGISTRY
    #: A pool's catalog: record routes then serve whichever collection they name.
    catalog: Catalog | None = None

    async def target(self, tenant: str, database: str, cid: str) -> Target:
        """The collection a record route names, with its backends; ``NotFound`` or
        ``InvalidArgument`` exactly as Chroma answers an unknown or malformed id."""
        if self.catalog is not None:
            return await self.catalog.target(tenant, database, cid)
        return Target(self.check_collection_id(tenant, database, cid), self.read, self.write)

    def model(self) -> Mapping[str, Any]:
        """The collection's JSON; raises (``Unavailable``) when it is not known yet."""
        return self.collection_model()

    def safe_model(self) -> Mapping[str, Any]:
        """The collection's JSON, or just the default tenant and database before it is known.

        Identity and tenant lookups happen when a client is constructed; answering
        them with the defaults even before a snapshot is loaded lets clients connect.
        """
        try:
            return self.model()
        except ChromasnapError:
            return {"tenant": DEFAULT_TENANT, "database": DEFAULT_DATABASE}

    def known_model(self) -> Mapping[str, Any] | None:
        """The collection's JSON, or ``None`` while it is not known (checks then wait)."""
        try:
            return self.model()
        except ChromasnapError:
            return None

    def check_scope(self, tenant: str, database: str, what: str) -> Mapping[str, Any]:
        """The model, if ``tenant``/``database`` are the collection's; else ``NotFound``."""
        model = self.model()
        return _check_scope(model, tenant, database, what)

    def check_collection_id(self, tenant: str, database: str, cid: str) -> Mapping[str, Any]:
        """The model, if the path names this collection; else ``NotFound``/``InvalidArgument``
        exactly as Chroma answers an unknown or malformed collection id."""
        return check_collection_id(self.model(), tenant, database, cid)

    def check_forward_target(self, tenant: str, database: str, cid: str) -> None:
        """Before forwarding a record request, answer what this server can answer itself.

        A request that names another collection, or no valid collection id at all, gets
        the same 404/400 the receiving service would give, without a round trip (and
        without building a URL from a path that may not make one). While the model is
        not known yet, only the id's syntax is checked and the receiver decides the rest.
        """
        model = self.known_model()
        if model is None:
            check_uuid(cid)
        else:
            check_collection_id(model, tenant, database, cid)

    def is_ready(self) -> bool:
        """The readiness callback's answer (``True`` without one; ``False`` if it fails)."""
        if self.draining:
            return False
        if self.ready is None:
            return True
        try:
            return bool(self.ready())
        except Exception:
            log.exception("readiness check failed")
            return False


def _check_scope(model: Mapping[str, Any], tenant: str, database: str,
                 what: str) -> Mapping[str, Any]:
    if tenant != model.get("tenant", DEFAULT_TENANT) or database != model.get(
        "database", DEFAULT_DATABASE
    ):
        raise NotFound(f"Collection [{what}] does not exist")
    return model


def check_collection_id(model: Mapping[str, Any], tenant: str, database: str,
                        cid: str) -> Mapping[str, Any]:
    """``model`` if the path's tenant, database and collection id are its own."""
    _check_scope(model, tenant, database, cid)
    if cid != model["id"]:
        check_uuid(cid)
        raise NotFound(f"Collection [{cid}] does not exist.")
    return model


def check_uuid(cid: str) -> None:
    """``InvalidArgument`` unless ``cid`` parses as a UUID, as Chroma's frontend requires."""
    try:
        uuid.UUID(cid)
    except ValueError:
        raise InvalidArgument("Collection ID is not a valid UUIDv4") from None
