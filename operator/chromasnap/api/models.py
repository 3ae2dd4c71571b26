"""The requests the API decodes for its backends, and what a write backend may answer.

Plain frozen dataclasses: ``parsing`` builds them from request bodies, the
reader and writer backends consume them, and nothing here touches HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chromasnap.engine.distances import Float32Array

INCLUDE_VALUES = ("distances", "documents", "embeddings", "metadatas", "uris")
GET_DEFAULT_INCLUDE = ("documents", "metadatas")
QUERY_DEFAULT_INCLUDE = ("documents", "metadatas", "distances")


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One add/upsert/update/delete request, decoded but not yet validated against the data.

    ``embeddings`` is a float32 array of shape ``(len(ids), dim)`` or ``None``;
    the other columns are lists with one entry per id, or ``None`` when not sent.
    ``where``/``where_document``/``limit`` come only with delete-by-filter.
    ``read_after`` is the token of the client's previous write (from its
    cookie or header), so a backend may fold it into the token it returns.
    """

    ids: list[str] | None  # None only in a filtered delete: every id the filter matches
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
