"""The soak test's pure parts: the workload, the reference model of acknowledged writes,
and the per-minute statistics. No I/O, no servers (``benchmarks/soak.py`` runs them).

The workload is churn over a fixed id space, shaped so that the live set settles:
half the writes are upserts (create or replace a record), 30% metadata-only
updates, 20% deletes, so about 5/7 of the ids are live at any time. Each client
process owns the ids ``≡ client (mod clients)`` and sends one write at a time,
waiting for its acknowledgement, so the writes to one id are totally ordered by
acknowledgement — and, as every write gets its key from a clock on this machine
when it is accepted, by chromasnap's last-writer-wins key too. The model can
then say exactly which final states the acknowledged history allows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ID_SPACE = 4000
GROUPS = 10
UPSERT, UPDATE, DELETE = "upsert", "update", "delete"
MIX = ((UPSERT, 0.5), (UPDATE, 0.3), (DELETE, 0.2))
#: Beyond this many possible states for one id (uncertain writes piling up) it is not checked.
MAX_STATES = 64


@dataclass(frozen=True)
class Write:
    """One write a client sends: ``seq`` is the client's own sequence number."""

    client: int
    seq: int
    kind: str
    rid: str
    group: int

    @property
    def document(self) -> str:
        """The document an upsert stores: names the write, so a record says where it came from."""
        return f"{self.rid}:{self.client}:{self.seq}"

    @property
    def metadata(self) -> dict[str, int]:
        """Always the same keys, so Chroma's key merge on update/upsert equals replacement."""
        return {"g": self.group, "c": self.client, "s": self.seq}


def embedding(client: int, seq: int, dim: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The vector of write ``seq`` of ``client``: regenerated exactly by the verifier."""
    return np.random.default_rng([client, seq]).standard_normal(dim).astype(np.float32)


def next_write(rng: np.random.Generator, client: int, clients: int, seq: int) -> Write:
    """The ``seq``-th write of ``client`` (one of ``clients``), drawn from ``rng``."""
    kind = str(rng.choice([k for k, _ in MIX], p=[p for _, p in MIX]))
    owned = ID_SPACE // clients
    rid = f"id{int(rng.integers(owned)) * clients + client}"
    return Write(client, seq, kind, rid, int(rng.integers(GROUPS)))


# A record's state as the model tracks it: (client, seq) of the vector and document,
# and (group, client, seq) of the metadata; None when the id has no record.
State = tuple[tuple[int, int], tuple[int, int, int]] | None


def apply(state: State, w: Write) -> State:
    """Chroma's semantics for one write: update of a missing id does nothing."""
    meta = (w.group, w.client, w.seq)
    if w.kind == UPSERT:
        return ((w.client, w.seq), meta)
    if w.kind == DELETE:
        return None
    return None if state is None else (state[0], meta)


@dataclass
class Model:
    """Which final states the acknowledged history allows, per id.

    An acknowledged write happened; a write whose request failed may or may
    not have (the writer may have stored it and died before answering), so
    each id keeps every state some choice of the uncertain writes leads to.
    """

    states: dict[str, set[State]]
    acknowledged: int = 0
    uncertain: int = 0
    unchecked: set[str] | None = None

    @classmethod
    def empty(cls) -> Model:
        """No record yet: every id is absent."""
        return cls({}, unchecked=set())

    def record(self, w: Write, acknowledged: bool) -> None:
        """Add one write of the history, in its client's order."""
        now = self.states.get(w.rid, {None})
        after = {apply(s, w) for s in now}
        if acknowledged:
            self.acknowledged += 1
            self.states[w.rid] = after
        else:
            self.uncertain += 1
            self.states[w.rid] = now | after
        if len(self.states[w.rid]) > MAX_STATES:
            assert self.unchecked is not None
            self.unchecked.add(w.rid)

    def ruled_out(self, observed: Mapping[str, State]) -> list[str]:
        """Ids whose observed state (absent: None) the history does not allow."""
        bad = []
        skip = self.unchecked or set()
        for rid in sorted(set(self.states) | set(observed)):
            if rid in skip:
                continue
            if observed.get(rid) not in self.states.get(rid, {None}):
                bad.append(rid)
        return bad


def observed_state(rid: str, document: str | None, metadata: Mapping[str, Any] | None,
                   vector: Sequence[float] | np.ndarray[Any, Any], dim: int) -> State | str:
    """The model state a stored record stands for, or a text saying why it stands for none."""
    try:
        owner, client, seq = (document or "").split(":")
        c, s = int(client), int(seq)
    except ValueError:
        return f"{rid}: document {document!r} names no write"
    if owner != rid:
        return f"{rid}: holds the document of {owner}"
    if not same_direction(np.asarray(vector, dtype=np.float32), embedding(c, s, dim)):
        return f"{rid}: vector is not the one of write {c}:{s}"
    md = metadata or {}
    try:
        meta = (int(md["g"]), int(md["c"]), int(md["s"]))
    except (KeyError, TypeError, ValueError):
        return f"{rid}: metadata {md!r} names no write"
    return ((c, s), meta)


def same_direction(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    """Whether two vectors are the same up to length and float rounding: a cosine
    collection stores (and returns) vectors normalized, the fresh tail as sent."""
    if a.shape != b.shape:
        return False
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return na > 0 and nb > 0 and bool(np.allclose(a / na, b / nb, atol=1e-5))


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile, or None without values."""
    return float(np.percentile(np.asarray(values), q)) if values else None


def slope_per_hour(points: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, in value per hour (None: < 3 points)."""
    pts = list(points)
    if len(pts) < 3:
        return None
    t = np.asarray([p[0] for p in pts]) / 3600.0
    v = np.asarray([p[1] for p in pts])
    if float(np.ptp(t)) == 0.0:
        return None
    return float(np.polyfit(t, v, 1)[0])


@dataclass(frozen=True)
class Windows:
    """The measured part of a run: after ``warmup_s``, a first and a last window."""

    warmup_s: float
    window_s: float
    end_s: float

    @classmethod
    def for_run(cls, minutes: float, warmup_minutes: float) -> Windows:
        """10-minute windows after the warm-up, shorter when the run is short."""
        measured = max(minutes - warmup_minutes, 0.0)
        window = min(10.0, measured / 3) if measured else 0.0
        return cls(warmup_minutes * 60, window * 60, minutes * 60)

    def first(self, t: float) -> bool:
        """Whether time ``t`` (seconds since the start) is in the first window."""
        return self.warmup_s <= t < self.warmup_s + self.window_s

    def last(self, t: float) -> bool:
        """Whether time ``t`` is in the last window."""
        return self.end_s - self.window_s <= t <= self.end_s

    def measured(self, t: float) -> bool:
        """Whether time ``t`` is after the warm-up."""
        return t >= self.warmup_s


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0 or math.isnan(b):
        return None
    return a / b
