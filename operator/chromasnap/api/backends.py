"""The interfaces the API serves from: where reads are answered, where writes go, and,
for a pool, which collections exist.

The reader implements ``ReadBackend`` (snapshot plus delta tail), the writer
``WriteBackend`` (validation and group commit), a pool ``Catalog`` (its
collections, each with its own read and write backend); the API itself never
holds data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chromasnap.api.createbody import CreateRequest
from chromasnap.api.models import GetRequest, QueryRequest, WriteAck, WriteRequest
from chromasnap.engine.ops import OpKind


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


@dataclass(frozen=True)
class Target:
    """The collection a record route names, and where its reads and writes go."""

    model: Mapping[str, Any]
    read: ReadBackend | None
    write: WriteBackend | None


class Catalog(Protocol):
    """A pool's tenants, databases and collections (``pool/``), for the routes about them.

    Every method raises Chroma's errors (``NotFound``, ``AlreadyExists``,
    ``InvalidArgument``) as a single-node Chroma server answers them; collections
    come back as Chroma's JSON (``collection_model_json``'s shape).
    """

    async def target(self, tenant: str, database: str, cid: str) -> Target:
        """The collection with id ``cid`` and its backends (loaded on first use)."""
        ...

    async def create_collection(self, tenant: str, database: str,
                                req: CreateRequest) -> Mapping[str, Any]:
        """Create (or, with ``get_or_create``, return) a collection."""
        ...

    async def get_collection(self, tenant: str, database: str, name: str) -> Mapping[str, Any]:
        """A collection by name or id."""
        ...

    async def list_collections(self, tenant: str, database: str, limit: int | None,
                               offset: int) -> list[Mapping[str, Any]]:
        """A page of collections, in Chroma's order."""
        ...

    async def count_collections(self, tenant: str, database: str) -> int:
        """How many collections the database holds."""
        ...

    async def delete_collection(self, tenant: str, database: str, name: str) -> None:
        """Delete a collection by name; the name is free at once."""
        ...

    async def modify_collection(self, tenant: str, database: str, cid: str, *,
                                name: str | None, metadata: Mapping[str, Any] | None,
                                configuration: Mapping[str, Any] | None) -> None:
        """Rename, replace metadata, or change the configuration Chroma allows changing."""
        ...

    async def create_tenant(self, tenant: str) -> None:
        """Create a tenant."""
        ...

    async def get_tenant(self, tenant: str) -> None:
        """``NotFound`` unless the tenant exists."""
        ...

    async def create_database(self, tenant: str, database: str) -> None:
        """Create a database."""
        ...

    async def get_database(self, tenant: str, database: str) -> Mapping[str, Any]:
        """A database as Chroma describes it (``id``, ``name``, ``tenant``)."""
        ...

    async def list_databases(self, tenant: str, limit: int | None,
                             offset: int) -> list[Mapping[str, Any]]:
        """A page of the tenant's databases."""
        ...

    async def delete_database(self, tenant: str, database: str) -> None:
        """Delete a database and its collections."""
        ...
