"""chromadb clients on local directories: create one, open it, close it completely.

Every chromadb ``PersistentClient`` in chromasnap is made here, with one set
of settings and at most one client per directory in the process, and every
one is closed through :func:`close_client`, which returns only once no file
under the directory is open any more (so it can be copied, hashed or
deleted). What a directory holds and when chromadb writes it is described in
:mod:`chromasnap.engine.persistence`, which also opens collections
(:func:`~chromasnap.engine.persistence.open_collection`) so that they are
complete when closed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import time
from pathlib import Path
from typing import Any, cast

import chromadb
from chromadb.api import ClientAPI, ServerAPI
from chromadb.api.client import Client
from chromadb.api.models.Collection import Collection
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings

from chromasnap.config import CollectionSettings

log = logging.getLogger(__name__)

SQLITE_FILE = "chroma.sqlite3"
_RELEASE_TIMEOUT_S = 5.0


@functools.cache
def _base_settings() -> Settings:
    # Telemetry off: pods have no internet and must not try. Every client in
    # this process uses identical settings, which chromadb requires for two
    # clients on one path. Built once: reading the environment takes ~16 ms.
    return Settings(anonymized_telemetry=False, allow_reset=False)


def _settings() -> Settings:
    # A copy each time: PersistentClient writes the path into the object it gets.
    return _base_settings().model_copy()


def _key(path: Path) -> str:
    # chromadb caches one System per persist_directory *string*; resolve so
    # that two spellings of one directory are the same key.
    return str(path.resolve())


def is_open(path: Path) -> bool:
    """Whether a chromadb client in this process still holds ``path``."""
    return _key(path) in SharedSystemClient._identifier_to_system


def open_client(path: Path) -> ClientAPI:
    """A new ``PersistentClient`` on ``path``; refused if this process already holds it."""
    if is_open(path):
        # A second client would share the first one's System: closing ours
        # would not close the files, and the other could write behind us.
        raise RuntimeError(f"{path} is already open by a chromadb client in this process")
    return chromadb.PersistentClient(path=_key(path), settings=_settings())


def _wait_released(path: Path) -> None:
    """Wait until this process holds no file descriptor under ``path``.

    ``client.close()`` drops the Rust bindings, but the SQLite pool shuts its
    last connection down in the background (measured: gone within ~1 s).
    Callers copy, hash or delete the directory next, so wait for it. Linux
    only (``/proc/self/fd``); elsewhere this returns at once.
    """
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return
    prefix = _key(path) + os.sep
    deadline = time.monotonic() + _RELEASE_TIMEOUT_S
    while True:
        held = []
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith(prefix):
                held.append(target)
        if not held:
            return
        if time.monotonic() > deadline:
            log.warning("chromadb still holds %d file(s) under %s after close", len(held), path)
            return
        time.sleep(0.01)


def close_client(client: ClientAPI, path: Path) -> None:
    """Close ``client`` (opened by :func:`open_client` on ``path``) and wait for its files."""
    # PersistentClient returns a chromadb.api.client.Client; close() drops our
    # reference to the shared System and stops it (closing the files) when it
    # was the last one, which open_client guarantees.
    cast(Client, client).close()
    _wait_released(path)


#: ``mallopt`` parameter: the most arenas glibc's malloc may create (glibc's malloc.h).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let glibc's ``malloc`` use at most ``arenas`` arenas in this process (before threads
    start allocating: existing arenas stay).

    By default glibc gives threads up to eight arenas per core, each a heap
    of its own that is never given back whole; chromadb's Rust runtime, its
    query pool and the HTTP server's thread pool spread a reader's short-lived
    allocations (records, vectors, index copies) over 15-20 of them, each
    holding 5-20 MB of free memory. Two arenas keep what is free in two
    heaps, which ``malloc_trim`` can then return. Same as
    ``MALLOC_ARENA_MAX=2``; returns False where there is no glibc.
    """
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_memory() -> bool:
    """Hand the memory that closed clients freed back to the operating system.

    chromadb's Rust code allocates through glibc's ``malloc`` from many threads.
    glibc keeps freed blocks in its arenas, and once a large block was freed
    it serves even index-sized blocks from them instead of ``mmap``: a
    process that loads and drops one index after another (a reader swapping
    versions) would keep the high-water mark of all of them resident.
    ``gc.collect`` drops cyclic garbage that may still hold a client's
    objects, ``malloc_trim(0)`` returns every arena's free pages. Costs a few
    milliseconds; returns False where there is no glibc.
    """
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def server_api(collection: Collection) -> ServerAPI:
    """The server-side API behind ``collection``: Chroma's HTTP server semantics.

    The public Collection.update/upsert/add run the collection's embedding
    function whenever documents come without embeddings (and the default
    one downloads a model). Chroma's HTTP server does not: an update that
    carries only a document changes only the document. The compactor must
    replay writes with the server's semantics, so it calls the same
    ServerAPI methods that Collection calls after its client-side steps.
    """
    return collection._client


def directory_of(collection: Collection) -> Path:
    """The persistence directory ``collection`` was opened from."""
    persist = server_api(collection).get_settings().persist_directory
    return Path(persist)


def create_collection(path: Path, settings: CollectionSettings) -> str:
    """Create ``path`` holding one empty collection with ``settings``; return its id.

    The id is chosen by Chroma and is stored in the directory, so it stays the
    same in every copy and every later snapshot built from this one.
    The embedding function recorded in the collection's configuration is
    Chroma's default (as with a plain ``create_collection``), so an
    ``HttpClient`` sees the same configuration as from ``chroma run``;
    chromasnap itself never embeds anything.
    """
    path.mkdir(parents=True, exist_ok=True)
    if (path / SQLITE_FILE).exists():
        raise FileExistsError(f"{path / SQLITE_FILE} already exists: not a fresh directory")
    client = open_client(path)
    try:
        collection = client.create_collection(
            name=settings.name,
            configuration={
                "hnsw": {
                    "space": settings.space.value,
                    "max_neighbors": settings.hnsw_m,
                    "ef_construction": settings.hnsw_construction_ef,
                    "ef_search": settings.hnsw_search_ef,
                }
            },
            # Chroma rejects an empty metadata dict; None means "no metadata".
            metadata=dict(settings.metadata) or None,
        )
        return str(collection.id)
    finally:
        close_client(client, path)


def keep_only(path: Path, name: str) -> list[str]:
    """Delete every collection in ``path`` except ``name``; return the names that were there.

    Nothing is deleted when ``name`` is not among them.
    """
    client = open_client(path)
    try:
        names = [c.name for c in client.list_collections()]
        if name not in names:
            return names
        for other in names:
            if other != name:
                client.delete_collection(other)
        return names
    finally:
        close_client(client, path)


def rename_only(path: Path, name: str) -> str:
    """Give the one collection in ``path`` the name ``name``; return the name it had.

    ValueError if ``path`` holds more or fewer than one collection.
    """
    client = open_client(path)
    try:
        cols = client.list_collections()
        if len(cols) != 1:
            raise ValueError(f"{path} holds {len(cols)} collections, not one")
        old = cols[0].name
        if old != name:
            cols[0].modify(name=name)
        return str(old)
    finally:
        close_client(client, path)
