"""What Chroma stores for a new or modified collection, computed by chromadb itself.

A create request carries ``metadata``, ``configuration`` and ``schema`` as the
client serialised them; Chroma's server derives the stored
``configuration_json`` (defaults filled in, legacy ``hnsw:*`` metadata applied)
and the serialized schema from them, and refuses what it cannot accept. Rather
than re-implement those rules, a pool asks an in-memory ``chromadb`` (the same
Rust bindings Chroma's server runs) to create a scratch collection from the same
request, reads what it stored, and drops it (about 3 ms). Its errors are
Chroma's errors, with Chroma's messages.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from chromasnap.api.createbody import CreateRequest
from chromasnap.config import CollectionSettings, Space

_TENANT, _DATABASE = "default_tenant", "default_database"


class ChromaConfigurations:
    """A scratch in-memory chromadb that answers "what would Chroma store?"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bindings: Any = None

    def _scratch(self) -> Any:
        if self._bindings is None:
            import chromadb
            from chromadb.config import Settings

            client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
            self._bindings = client._server.bindings  # type: ignore[attr-defined]
        return self._bindings

    @contextmanager
    def _collection(self, configuration: Mapping[str, Any] | None,
                    schema: Mapping[str, Any] | None,
                    metadata: Mapping[str, Any] | None) -> Iterator[tuple[Any, Any]]:
        """``(bindings, collection)``: a scratch collection created as Chroma's server
        creates one from these, dropped afterwards (one at a time)."""
        name = f"scratch-{uuid.uuid4().hex}"
        with self._lock:
            b = self._scratch()
            col = b.create_collection(
                name, json.dumps(dict(configuration)) if configuration else None,
                json.dumps(dict(schema)) if schema else None,
                dict(metadata) if metadata else None, False, _TENANT, _DATABASE)
            try:
                yield b, col
            finally:
                b.delete_collection(name, _TENANT, _DATABASE)

    def created(self, req: CreateRequest) -> tuple[dict[str, Any], dict[str, Any] | None,
                                                   dict[str, Any] | None]:
        """``(configuration_json, schema, metadata)`` Chroma stores for ``req``; Chroma's
        error if it refuses the request."""
        with self._collection(req.configuration, req.schema, req.metadata) as (_, col):
            return dict(col.configuration), col.schema, col.metadata

    def modified(self, configuration_json: Mapping[str, Any], metadata: Mapping[str, Any] | None,
                 new_metadata: Mapping[str, Any] | None,
                 new_configuration: Mapping[str, Any] | None) -> dict[str, Any]:
        """The ``configuration_json`` after ``collection.modify``; Chroma's error if it
        refuses the change (a new space, a setting that cannot change)."""
        with self._collection(configuration_json, None, metadata) as (b, col):
            b.update_collection(str(col.id), None, dict(new_metadata) if new_metadata else None,
                                json.dumps(dict(new_configuration))
                                if new_configuration else None)
            return dict(b.get_collection(col.name, _TENANT, _DATABASE).configuration)


def settings_of(cid: str, configuration_json: Mapping[str, Any],
                dimension: int) -> CollectionSettings:
    """The settings a pool collection's roles run with: its id as the name (a rename
    changes only the catalog), the index settings Chroma stored, the fixed dimension."""
    hnsw = configuration_json.get("hnsw") or {}
    spann = configuration_json.get("spann") or {}
    space = hnsw.get("space") or spann.get("space") or "l2"
    return CollectionSettings(
        name=cid, dimension=dimension, space=Space(space),
        hnsw_m=hnsw.get("max_neighbors") or 16,
        hnsw_construction_ef=hnsw.get("ef_construction") or 100,
        hnsw_search_ef=hnsw.get("ef_search") or 100,
    )
