"""Exact nearest neighbours in a fresh tail, and filter masks cached per overlay.

A fresh read searches every live record of the overlay. Doing that in
float64 for every query (``distances.distances``: the precision the
differential tests rely on) converts the whole tail matrix on each query,
and evaluating ``where``/``where_document`` record by record in Python made
a query's cost grow by tens of microseconds per tail write. Both are
avoidable without giving up exactness:

- :class:`TailMatrix` keeps, once per overlay, the float32 vectors as the
  distance needs them (normalised for cosine) and their norms. A query
  scores every row with one float32 matrix-vector product, keeps the rows
  that can still be among the ``k`` nearest given a rigorous bound on the
  float32 rounding error, and computes only those exactly with
  ``distances.distances``; ``distances.top_k`` orders them (stable: ties
  keep record order). So the answer is the one the exhaustive float64
  search gives, at the cost of one BLAS call plus ``k``-odd exact rows.
- :class:`MaskCache` remembers, per overlay (which never changes), the
  boolean mask of live records each filter matches, keyed by the filter's
  canonical JSON; a bounded LRU, so arbitrary filters cannot grow it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from chromasnap.engine import distances

BoolArray = npt.NDArray[np.bool_]
F64Array = npt.NDArray[np.float64]

#: Filters whose masks an overlay remembers (each a byte per live record).
MASKS_PER_OVERLAY = 64
#: Unit roundoff of float32.
_U = float(np.finfo(np.float32).eps) / 2


class TailMatrix:
    """An overlay's live vectors prepared for exact top-k queries in ``space``."""

    def __init__(self, matrix: Any, space: str) -> None:
        self.space = space
        # An overlay's matrix is always 2-D, (0, dim) when nothing is live.
        self.raw: distances.Float32Array = np.ascontiguousarray(matrix, dtype=np.float32)
        # What the float32 product is taken with: the vectors as the exact distance sees
        # them (cosine normalises both sides first, exactly as ``distances`` does).
        self.search = distances.normalize(self.raw) if space == "cosine" and len(self.raw) \
            else self.raw
        sq: F64Array = np.einsum("ij,ij->i", self.search, self.search, dtype=np.float64)
        self.sq_norms = sq
        self.max_norm = float(np.sqrt(sq.max())) if len(sq) else 0.0
        # |fl32(a . b) - a . b| <= gamma_d * |a| |b| for any summation order (Higham 3.5).
        d = self.raw.shape[1]
        self.gamma = d * _U / (1 - d * _U) if d * _U < 1 else float("inf")

    def __len__(self) -> int:
        return len(self.raw)

    def nearest(self, query: Any, k: int,
                rows: npt.NDArray[np.intp] | None = None) -> tuple[npt.NDArray[np.intp],
                                                                   distances.Float32Array]:
        """The ``k`` nearest of ``rows`` (all when None) to one ``query`` vector.

        Returns row indices and float32 distances, nearest first, ties in row
        order: exactly ``distances.top_k(distances.distances(query, raw[rows]))``.
        """
        q = distances.as_matrix(query)
        cand_rows = np.arange(len(self.raw), dtype=np.intp) if rows is None else rows
        m = len(cand_rows)
        if m == 0 or k <= 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        if m > k:
            cand_rows = self._candidates(q, k, cand_rows)
        exact = distances.distances(q, self.raw[cand_rows], self.space)
        idx, dist = distances.top_k(exact, k)
        return cand_rows[idx[0]], dist[0]

    def _candidates(self, q: distances.Float32Array, k: int,
                    rows: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """The rows whose exact distance can be among the ``k`` smallest (a superset)."""
        qs = distances.normalize(q) if self.space == "cosine" else q
        dots = (self.search @ qs[0]).astype(np.float64)
        if len(rows) != len(self.raw):
            dots = dots[rows]
        if self.space == "l2":
            qsq = float(np.dot(qs[0].astype(np.float64), qs[0].astype(np.float64)))
            sq = self.sq_norms if len(rows) == len(self.raw) else self.sq_norms[rows]
            approx = qsq + sq - 2.0 * dots
            err = 2.0 * self.gamma * np.sqrt(qsq) * self.max_norm
        else:
            approx = 1.0 - dots
            err = self.gamma * float(np.linalg.norm(qs[0].astype(np.float64))) * self.max_norm
        part = np.argpartition(approx, k - 1)[:k]
        kth = float(approx[part].max())
        # Every row outside has an exact distance above kth + err, while k rows are at or
        # below it; the slack covers the float64 arithmetic and the final float32 rounding,
        # so no row outside can even tie with the k-th after rounding.
        slack = 8 * _U * (abs(kth) + err) + 1e-12 * (1.0 + abs(kth))
        keep = np.flatnonzero(approx <= kth + 2 * err + slack)
        return rows[keep]


class MaskCache:
    """Per overlay: filter masks (bounded LRU) and the prepared matrix, built once each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._masks: OrderedDict[str, BoolArray] = OrderedDict()
        self._matrix: TailMatrix | None = None

    def matrix(self, rows: Callable[[], Any], space: str) -> TailMatrix:
        """The prepared matrix of the vectors ``rows`` gives (called on first use only)."""
        with self._lock:
            tm = self._matrix
        if tm is None or tm.space != space:
            tm = TailMatrix(rows(), space)
            with self._lock:
                self._matrix = tm
        return tm

    def mask(self, where: Any, where_document: Any,
             build: Callable[[], BoolArray]) -> BoolArray:
        """The mask ``build`` computes for this filter, remembered under its canonical JSON."""
        try:
            key = json.dumps([where, where_document], sort_keys=True, allow_nan=True)
        except (TypeError, ValueError):
            return build()  # not JSON (cannot come from the API): not cached
        with self._lock:
            hit = self._masks.get(key)
            if hit is not None:
                self._masks.move_to_end(key)
                return hit
        out = build()
        out.setflags(write=False)  # shared by concurrent reads
        with self._lock:
            self._masks[key] = out
            while len(self._masks) > MASKS_PER_OVERLAY:
                self._masks.popitem(last=False)
        return out
