"""One reader's data plane: the version it serves, the tail on top of it, its answers.

The same assembly runs in the ``chromasnap reader`` process (``cli/runtime``)
and in tests that drive a reader step by step, so both exercise the one poll
step production uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chromasnap.reader.backend import ReaderBackend
from chromasnap.reader.snapshot import LoadedSnapshot, SnapshotReader
from chromasnap.reader.tail import DeltaTail
from chromasnap.storage.store import ObjectStore


@dataclass
class Replica:
    """A snapshot reader, its tail (fresh reads only) and the backend answering from both."""

    reader: SnapshotReader
    tail: DeltaTail | None
    backend: ReaderBackend

    def poll_once(self) -> bool:
        """One background poll: the pointer, then the LIST fallback for lost pushes.

        True when the pointer poll reached the bucket; the LIST's errors are
        raised, for the poll loop to count and back off.
        """
        self.reader.refresh()
        if self.tail is not None and self.reader.ready():
            self.tail.poll()
        return not self.reader.failing


def open_replica(store: ObjectStore, cache_dir: Path, dimension: int, *, fresh: bool,
                 cache_max_bytes: int = 0, read_after_timeout_s: float = 10.0,
                 on_bytes: Callable[[int], None] | None = None,
                 fold_min_rows: int = 0) -> Replica:
    """Wire a reader on ``store``: with a tail (``fresh``) every swap rebases it."""
    tail = DeltaTail(store, dimension) if fresh else None

    def rebase(snap: LoadedSnapshot) -> None:
        if tail is not None:
            tail.rebase(snap.lineage)

    reader = SnapshotReader(store, cache_dir, on_bytes=on_bytes, on_swap=rebase,
                            cache_max_bytes=cache_max_bytes, fold_min_rows=fold_min_rows)
    return Replica(reader, tail, ReaderBackend(reader, tail, read_after_timeout_s))
