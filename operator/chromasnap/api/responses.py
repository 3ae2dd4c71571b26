"""Responses in the shapes Chroma's Rust frontend produces: the response type, JSON
encoding (float32 kept at float32 precision), and the collection, database and record
bodies."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from chromasnap.api.asgi import Headers, Scope, query_param
from chromasnap.engine.errors import InvalidArgument

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
_JSON = orjson.OPT_SERIALIZE_NUMPY
_TEXT = b"text/plain; charset=utf-8"


@dataclass
class Response:
    """What a route answers; the app adds content-type and content-length."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=list)
    content_type: bytes = b"application/json"


def json_response(status: int, obj: Any, headers: Headers | None = None) -> Response:
    """``obj`` as JSON (numpy arrays and scalars, UUIDs and sets included)."""
    return Response(status, orjson.dumps(obj, option=_JSON, default=_json_default), headers or [])


def text_response(status: int, text: bytes) -> Response:
    """A plain-text answer (probes)."""
    return Response(status, text, content_type=_TEXT)


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


def database_json(model: Mapping[str, Any]) -> dict[str, Any]:
    """The collection's database, as Chroma describes one."""
    return {
        "id": "00000000-0000-0000-0000-000000000000",
        "name": model.get("database", DEFAULT_DATABASE),
        "tenant": model.get("tenant", DEFAULT_TENANT),
    }


def page_params(scope: Scope) -> tuple[int | None, int]:
    """The ``limit`` (``None``: all) and ``offset`` query parameters."""
    def num(name: str) -> int | None:
        v = query_param(scope, name)
        if v is None:
            return None
        if not v.isdigit():
            raise InvalidArgument(f"{name} must be a non-negative integer, got {v!r}")
        return int(v)

    return num("limit"), num("offset") or 0


def paginate(scope: Scope, items: list[Any]) -> list[Any]:
    """``items`` cut by the ``offset`` and ``limit`` query parameters."""
    limit, offset = page_params(scope)
    return items[offset:] if limit is None else items[offset:offset + limit]


_GET_COLUMNS = ("embeddings", "documents", "uris", "metadatas")


def _result_json(result: Mapping[str, Any], include: tuple[str, ...],
                 columns: tuple[str, ...]) -> dict[str, Any]:
    # Chroma sends every column, null unless included, in this order.
    return {"ids": result["ids"],
            **{c: result.get(c) if c in include else None for c in columns},
            "include": include}


def get_result_json(result: Mapping[str, Any], include: tuple[str, ...]) -> dict[str, Any]:
    """A get's body: every column, ``null`` unless included."""
    return _result_json(result, include, _GET_COLUMNS)


def query_result_json(result: Mapping[str, Any], include: tuple[str, ...]) -> dict[str, Any]:
    """A query's body: every column (one list per query), ``null`` unless included."""
    return _result_json(result, include, (*_GET_COLUMNS, "distances"))


def empty_query_json(include: tuple[str, ...]) -> dict[str, Any]:
    """A query with no query vectors: empty lists for the included columns."""
    empty: dict[str, Any] = {"ids": []}
    for k in ("embeddings", "documents", "uris", "metadatas", "distances"):
        empty[k] = [] if k in include else None
    empty["include"] = include
    return empty
