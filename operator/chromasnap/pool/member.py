"""One collection of a pool: the unchanged roles, on the collection's own prefix.

A collection is served as a single-collection deployment serves it, in one
process: a group-commit writer, a fresh reader (snapshot plus delta tail) and a
compactor, all on ``collections/<id>/`` of the pool's store, with the protocol,
fence and files of a single collection. The writer holds no records and is
cheap; the reader holds a copy and is loaded only while the collection is
used (``members.Members``). Each durable delta goes straight to the loaded
reader's tail (the in-process form of a writer's push) before it is
acknowledged, so a write is visible to every read that starts after it.

Read-your-writes tokens name a delta of one collection; a client's session cookie
carries its last write's token to every collection it reads, so a member's token
is ``<collection id>:<delta>`` and a read waits only for a token of its own
collection.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chromasnap.api.models import GetRequest, QueryRequest, WriteAck, WriteRequest
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import NoLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.config import CollectionSettings
from chromasnap.engine.errors import Unavailable
from chromasnap.engine.ops import OpKind
from chromasnap.engine.validation import Limits
from chromasnap.pool.batcher import WriteBatcher
from chromasnap.reader.backend import ReaderBackend
from chromasnap.reader.replica import Replica, open_replica
from chromasnap.storage import pointer
from chromasnap.storage.catalog import collection_root
from chromasnap.storage.deltas import DeltaName
from chromasnap.storage.prefixed import PrefixedStore
from chromasnap.storage.store import ObjectStore
from chromasnap.writer.backend import WriterBackend
from chromasnap.writer.groupcommit import FlushWindow, GroupCommitWriter


@dataclass(frozen=True)
class PoolOptions:
    """How a pool process runs its members."""

    cache_dir: Path
    identity: str = "pool"
    flush: FlushWindow = field(default_factory=FlushWindow)
    #: Collections kept loaded (a reader with its copy open); the least recently read
    #: one is closed beyond it, or beyond ``max_loaded_bytes`` of loaded versions (0: no
    #: byte budget), and loaded again from the bucket on its next read.
    max_loaded: int = 64
    max_loaded_bytes: int = 0
    #: The process's memory (RSS) the loaded readers may fill, with everything else it
    #: holds (0: none): the least recently read are closed beyond it.
    memory_budget_bytes: int = 0
    #: Collections a compaction pass folds at once (most of a small run is waiting on
    #: the bucket; each holds at most one collection's work in memory).
    compaction_concurrency: int = 4
    read_after_timeout_s: float = 10.0
    #: How long folded deltas stay, and a deleted collection's bytes (a flush still
    #: landing there).
    delta_grace_seconds: float = 600.0
    #: Versions each collection keeps, the current one included.
    retain_snapshots: int = 3
    #: Point-in-time recovery (0: off): each collection keeps every version and delta
    #: that restoring it to any time in this window needs; a pass then stores the
    #: batched deltas it folds as the collection's own (``compactproc``).
    recovery_window_seconds: float = 0.0
    max_request_bytes: int = 40 << 20


#: A pool collection's runs list no deltas (its writes come in batches): clean up after
#: every fourth version only.
CLEANUP_EVERY = 4


def compactor_for(store: ObjectStore, settings: CollectionSettings, opts: PoolOptions,
                  purpose: str = "pass") -> Compactor:
    """A compactor of one pool collection (its id is ``settings.name``). Compactors of
    different ``purpose`` may run at once (a reader's first version, a compaction
    pass): each has its own work directory, and the pointer fences their results."""
    cid = settings.name
    return Compactor(PrefixedStore(store, collection_root(cid)), settings, NoLock(),
                     CompactorOptions(identity=f"{opts.identity}-compactor",
                                      cache_dir=opts.cache_dir / "compactor" / cid / purpose,
                                      delta_grace_seconds=opts.delta_grace_seconds,
                                      retain_snapshots=opts.retain_snapshots,
                                      recovery_window_seconds=opts.recovery_window_seconds,
                                      cleanup_every=CLEANUP_EVERY))


def scoped(cid: str, token: str | None) -> str | None:
    """The member's own part of a client's token, or ``None`` for another collection's."""
    if token is None or not token.startswith(cid + ":"):
        return None
    return token[len(cid) + 1:]


class ScopedRead:
    """A member's reader backend, waiting only for tokens of its own collection."""

    def __init__(self, backend: ReaderBackend, cid: str) -> None:
        self.backend = backend
        self.cid = cid

    async def query(self, req: QueryRequest) -> Mapping[str, Any]:
        """See ``ReadBackend.query``."""
        return await self.backend.query(replace(req, read_after=scoped(self.cid, req.read_after)))

    async def get(self, req: GetRequest) -> Mapping[str, Any]:
        """See ``ReadBackend.get``."""
        return await self.backend.get(replace(req, read_after=scoped(self.cid, req.read_after)))

    async def count(self, read_after: str | None) -> int:
        """See ``ReadBackend.count``."""
        return await self.backend.count(scoped(self.cid, read_after))


class ScopedWrite:
    """A member's writer backend, issuing ``<collection id>:<delta>`` tokens."""

    def __init__(self, backend: WriterBackend, cid: str) -> None:
        self.backend = backend
        self.cid = cid

    async def write(self, kind: OpKind, req: WriteRequest) -> str | WriteAck:
        """See ``WriteBackend.write``."""
        token = await self.backend.write(kind, req)
        return f"{self.cid}:{token}"


class CollectionWriter:
    """One collection's writer: cheap (it holds no records), kept while the process runs."""

    def __init__(self, store: ObjectStore, settings: CollectionSettings, opts: PoolOptions,
                 writer_id: str, batcher: WriteBatcher,
                 on_durable: Callable[[str, str, bytes], Awaitable[None]]) -> None:
        self.cid = cid = settings.name

        async def store_delta(name: DeltaName, data: bytes) -> None:
            await batcher.put(cid, name.name, data)

        # The batcher waits for the flush window, across collections: this writer cuts a
        # delta of what is queued as soon as it can, and hands it over.
        self.writer = GroupCommitWriter(
            PrefixedStore(store, collection_root(cid)),
            Limits(settings.dimension, max_bytes=opts.max_request_bytes), writer_id,
            replace(opts.flush, max_delay_s=0.0),
            on_durable=lambda name, data: on_durable(cid, name, data), store_delta=store_delta)
        self.write = ScopedWrite(WriterBackend(self.writer), cid)


class LoadedReader:
    """One loaded collection's fresh reader: its version's copy, and the tail on top."""

    def __init__(self, store: ObjectStore, settings: CollectionSettings,
                 opts: PoolOptions) -> None:
        self.cid = cid = settings.name
        self.store = PrefixedStore(store, collection_root(cid))
        self.compactor = compactor_for(store, settings, opts, "first-version")
        # A directory per load: an evicted reader's copy may still be open for a read in
        # flight when the collection is loaded again.
        self.replica: Replica = open_replica(self.store, opts.cache_dir / "readers" / cid
                                             / secrets.token_hex(4),
                                             settings.dimension, fresh=True,
                                             read_after_timeout_s=opts.read_after_timeout_s)
        #: A refresh (a thread) and closing must not interleave: a version loaded after
        #: the close would stay open.
        self._lock = threading.Lock()
        self._closed = False
        self.read = ScopedRead(self.replica.backend, cid)

    def load(self) -> None:
        """Create the collection's first version if it has none, then load the newest
        and the deltas after it (blocking: call from a thread).

        Deltas acknowledged from now on are pushed to this tail by the caller, so
        the LIST here only needs to find those acknowledged before.
        """
        if pointer.read(self.store).pointer is None:
            res = self.compactor.run()
            if res.result == "failed":
                raise Unavailable(f"could not create collection {self.cid}'s first version: "
                                  f"{res.reason}: {res.message}")
        self.replica.poll_once()
        # A compaction may have folded, and deleted, deltas between the pointer read and
        # the LIST: they are in the version the pointer names now.
        self.replica.reader.refresh()
        if not self.replica.reader.ready():
            raise Unavailable(f"could not load collection {self.cid}: "
                              f"{self.replica.reader.last_error}")

    def size_bytes(self) -> int:
        """Bytes of the loaded version (its base and segments, as the manifest lists them)."""
        snap = self.replica.reader.current
        if snap is None:
            return 0
        return sum(f.size for f in snap.manifest.files) + sum(
            seg.byte_size for seg in snap.manifest.segments)

    def pending(self) -> int:
        """Deltas the tail holds that the loaded version has not folded."""
        tail = self.replica.tail
        return len(tail.names()) if tail is not None else 0

    def take(self, name: str, data: bytes) -> None:
        """A delta of this collection that this process made durable: add it to the tail
        (blocking)."""
        tail = self.replica.tail
        assert tail is not None
        tail.accept(name, data)

    def refresh(self) -> None:
        """Load a newer version and deltas from other processes, unless closed (blocking)."""
        with self._lock:
            if not self._closed:
                self.replica.poll_once()

    def close(self) -> None:
        """Close the copy (blocking); reads in flight finish on it first."""
        with self._lock:
            self._closed = True
            self.replica.reader.close()
