"""``chromasnap dev``: a pool in the foreground, as ``chroma run`` is a server.

One process serves Chroma's whole API over a local-directory bucket: clients
create, list and delete their own collections, each kept under its own prefix
and loaded on first use, and every collection written to is compacted every few
seconds. ``--collection`` (``docs``) is created up front with ``--space``, so
code that only calls ``get_collection`` works too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from chromasnap import logs
from chromasnap.api.createbody import CreateRequest
from chromasnap.api.responses import DEFAULT_DATABASE, DEFAULT_TENANT
from chromasnap.cli.runtime import build_pool_app, serve
from chromasnap.config import DEFAULT_SPACE, Space
from chromasnap.engine.errors import NotFound
from chromasnap.pool.compactproc import CompactionWorker
from chromasnap.pool.member import PoolOptions
from chromasnap.pool.members import Members
from chromasnap.pool.service import PoolService
from chromasnap.storage.cataloglog import CatalogLog
from chromasnap.storage.store import open_store

COMPACT_EVERY_S = 5.0
MAX_LOADED = 64
#: A deleted collection's bytes go this long after the delete (no flush outlives it here).
DELETE_GRACE_S = 30.0


class SpaceConflict(ValueError):
    """``--space`` asks for another space than the one the existing collection was built with."""


def resolve_space(requested: Space | None, recorded: Space | None) -> Space:
    """The space ``dev`` serves: an existing collection's own (an explicit ``--space``
    must agree with it), else ``--space``, else Chroma's default (``l2``)."""
    if recorded is not None:
        if requested is not None and requested != recorded:
            raise SpaceConflict(
                f"the collection in this bucket was created with space {recorded.value!r}, "
                f"not {requested.value!r}: a collection's space is fixed at creation; drop "
                "--space, or use another --dir for a new collection")
        return recorded
    return requested or DEFAULT_SPACE


def declare(service: PoolService, name: str, space: Space | None,
            dimension: int | None) -> Space:
    """Create the pool's ``--collection`` unless it exists; the space it has."""
    async def run() -> Space:
        await service.start()
        try:
            model = await service.get_collection(DEFAULT_TENANT, DEFAULT_DATABASE, name)
            recorded: Space | None = Space(model["configuration_json"]["hnsw"]["space"])
        except NotFound:
            recorded = None
        chosen = resolve_space(space, recorded)  # SpaceConflict: a user error
        if recorded is None:
            model = await service.create_collection(DEFAULT_TENANT, DEFAULT_DATABASE, CreateRequest(
                name, get_or_create=True, configuration={"hnsw": {"space": chosen.value}}))
        if dimension is not None and model["dimension"] is None:
            entry = service.catalog.view(lambda s: s.by_id(model["id"]))
            assert entry is not None
            await service.fix_dimension(entry, dimension)
        await service.members.close()
        return chosen

    return asyncio.run(run())


def run_dev(root: Path, port: int, dimension: int | None, collection: str,
            space: Space | None = None) -> int:
    """Serve a pool on ``port`` until Ctrl-C or SIGTERM; return the exit code."""
    logs.setup("INFO", "text")
    bucket = (root / "pool").resolve()
    bucket.mkdir(parents=True, exist_ok=True)
    url = bucket.as_uri()
    opts = PoolOptions(cache_dir=root / "cache", identity="dev", max_loaded=MAX_LOADED,
                       delta_grace_seconds=DELETE_GRACE_S)
    store = open_store(url)
    # Declaring compacts nothing: the worker is never started.
    service = PoolService(CatalogLog(store, identity="dev"),
                          Members(store, opts, CompactionWorker(url, None, opts)))
    space = declare(service, collection, space, dimension)
    app = build_pool_app(url, None, opts, compact_every_s=COMPACT_EVERY_S)
    print(f"\nchromasnap dev: a pool on {url}; collection {collection!r} (space "
          f"{space.value}) is ready, and clients create their own")
    print(f"  chromadb.HttpClient(host='127.0.0.1', port={port})"
          f".get_or_create_collection({collection!r})")
    print(f"  compaction of the collections written to every {COMPACT_EVERY_S:g} s; "
          "Ctrl-C stops\n", flush=True)
    return serve(app, "127.0.0.1", port, drain_seconds=0.0)
