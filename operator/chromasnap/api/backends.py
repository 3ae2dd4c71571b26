"""The two interfaces the API serves from: where reads are answered and where writes go.

The reader implements ``ReadBackend`` (snapshot plus delta tail), the writer
``WriteBackend`` (validation and group commit); the API itself never holds data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

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
