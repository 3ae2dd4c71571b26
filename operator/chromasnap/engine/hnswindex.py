"""A segment's vector index: built once by the compactor, loaded by every reader.

A reader used to take in a new segment by replaying its writes into its own
chromadb copy: every reader redid every HNSW insert (about 1.6 ms of CPU per
write), and queries were slow until it finished. Instead the compactor
builds, for each segment it writes, one HNSW index (hnswlib, the library
inside Chroma's own index, with the collection's space, ``M`` and
``ef_construction``) over the vectors the segment's writes carry; readers
download it and search it as it is.

Label ``i`` of the index holds the vector of the write at position
``op_positions[i]`` in the segment's ops: for each id, the *last* write that
carries a vector. Whether that vector is still the id's vector at a given
version (a later write may replace it, an ``add`` of an existing id changes
nothing) is the reader's call, made with the same fold it uses for
everything else (``freshview``); the index only has to say which write each
label holds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from chromasnap.engine.ops import Op

#: Segments whose writes carry fewer vectors than this get no index: readers search
#: them exhaustively (a few thousand rows cost well under a millisecond), and tier
#: merges fold small segments into one big enough to get an index.
MIN_ROWS = 1000

#: Searches over-fetch and drop excluded labels afterwards while at most this share of
#: an index's labels is excluded; beyond it, the filter goes inside the graph walk.
OVERFETCH_MAX_EXCLUDED = 0.5
OVERFETCH_MARGIN = 8

BoolArray = npt.NDArray[np.bool_]


def rows(ops: Sequence[Op]) -> list[int]:
    """Positions in ``ops`` of each id's last write that carries a vector, in op order."""
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        if op.embedding is not None:
            last[op.id] = i
    return sorted(last.values())


def build(ops: Sequence[Op], positions: Sequence[int], space: str, m: int,
          ef_construction: int, index_path: Path, ids_path: Path) -> None:
    """Index the vectors of ``ops[positions]``; write the index and its label table."""
    vectors = np.stack([np.asarray(ops[i].embedding, dtype=np.float32) for i in positions])
    index = hnswlib.Index(space=space, dim=vectors.shape[1])
    # A fixed seed: the same segment always gets the same graph.
    index.init_index(max_elements=len(positions), M=m, ef_construction=ef_construction,
                     random_seed=100)
    index.add_items(vectors, np.arange(len(positions)))
    index.save_index(str(index_path))
    table = pa.table({"id": [ops[i].id for i in positions],
                      "op": pa.array(positions, type=pa.int64())})
    with pa.OSFile(str(ids_path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


@dataclass
class SegmentIndex:
    """A loaded segment index: search it with :meth:`nearest`."""

    index: Any  # hnswlib.Index (untyped)
    ids: list[str]
    op_positions: npt.NDArray[np.int64]
    ef_search: int
    _ef: int = field(default=0, repr=False)
    #: ``set_ef`` changes the index for every search: it and the search go together.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def nearest(self, query: Any, k: int,
                allowed: BoolArray | None) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """Up to ``k`` labels nearest to one ``query``, among ``allowed`` ones (all if None).

        As Chroma searches: ``ef = max(ef_search, k)``. When few labels are
        excluded (records later writes replaced, the usual case), the search
        over-fetches and drops them afterwards: a filter inside the graph walk
        calls back into Python for every node visited, retaking the GIL each
        time, which under a busy server cost more than the search itself. Only
        when the over-fetch leaves fewer than ``k`` does the filtered walk run.
        """
        n = len(self.ids) if allowed is None else int(allowed.sum())
        k = min(k, n)
        if k <= 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if allowed is None or n == len(self.ids):
            return self._search(q, k, None)
        if n >= len(self.ids) * (1 - OVERFETCH_MAX_EXCLUDED):
            # Expect k / (share allowed) to hold k allowed labels; a margin for variance.
            ask = min(len(self.ids), int(k * len(self.ids) / n) + OVERFETCH_MARGIN)
            labels, dists = self._search(q, ask, None)
            keep = allowed[labels]
            if int(keep.sum()) >= k:
                return labels[keep][:k], dists[keep][:k]
        return self._search(q, k, allowed.tolist().__getitem__)

    def _search(self, q: Any, k: int, keep: Any) -> tuple[npt.NDArray[np.intp],
                                                         npt.NDArray[np.float32]]:
        ef = max(self.ef_search, k)
        with self._lock:
            if ef != self._ef:
                self.index.set_ef(ef)
                self._ef = ef
            labels, dists = self.index.knn_query(q, k=k, num_threads=1, filter=keep)
        return labels[0].astype(np.intp), dists[0].astype(np.float32)


def load(index_path: Path, ids_path: Path, space: str, dimension: int,
         ef_search: int) -> SegmentIndex:
    """Open an index written by :func:`build` (files already verified)."""
    index = hnswlib.Index(space=space, dim=dimension)
    index.load_index(str(index_path), max_elements=0)
    with pa.memory_map(str(ids_path)) as src:
        table = pa.ipc.open_file(src).read_all()
    ids = table.column("id").to_pylist()
    if index.get_current_count() != len(ids):
        raise ValueError(f"index holds {index.get_current_count()} vectors, its label "
                         f"table {len(ids)}")
    return SegmentIndex(index, ids, table.column("op").to_numpy(), ef_search)
