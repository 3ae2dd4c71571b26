"""The conflict rules: how writes combine. Pure functions, no I/O.

Rule (documented in docs/consistency.md):

1. All writes are totally ordered by ``OpKey`` = (write timestamp µs, writer
   id, writer sequence). Within one writer the order is the order the writer
   accepted the requests.
2. Writes are applied in that order with Chroma's own semantics: ``add`` of
   an existing id and ``update`` of a missing id do nothing, ``upsert``
   creates or updates, ``update``/``upsert`` change only the fields sent and
   merge metadata keys (a ``None`` value removes the key), ``delete`` removes.
3. Last writer wins per record, and a late write never overwrites a newer
   one: every snapshot remembers, per id, the key of the newest write it has
   applied (deleted ids keep a tombstone for the delta grace period). A write
   that arrives after a newer write to the same id was already folded is
   *superseded*: it is dropped and counted, never applied.
4. A filtered delete (``delete(where=..., where_document=..., ids=...)``)
   removes the records that match *at its place in that order*: before the
   ops are planned it becomes a plain delete, with its own key, of every
   record that is live and matches just before it (the state the ops fold
   onto, then the ops before it), unless a write to the record newer than
   it was already folded — that write came after the delete, so rule 3 keeps
   it (:func:`expand_filtered_deletes`). A record written after it survives.

Compactors and fresh-read readers both use these functions, so a reader's
merged view equals what the next compaction will publish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from chromasnap.engine.filters import compile_filter
from chromasnap.engine.ops import DeleteFilter, Embedding, Metadata, Op, OpKey, OpKind


@dataclass(frozen=True)
class Record:
    """A record's visible state."""

    id: str
    embedding: Embedding
    document: str | None = None
    metadata: Metadata | None = None
    uri: str | None = None


@dataclass(frozen=True)
class Version:
    """The newest write folded for an id, and whether it left the id deleted."""

    key: OpKey
    deleted: bool = False


def sort_ops(ops: Iterable[Op]) -> list[Op]:
    """Ops in the total order every component applies them in."""
    return sorted(ops, key=lambda o: o.key)


def merge_metadata(old: Metadata | None, new: Metadata | None) -> Metadata | None:
    """Chroma's update rule: keys merge, a None value removes the key, nothing left is None."""
    if new is None:
        return old
    merged = dict(old or {})
    for k, v in new.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged or None


def _strip_nones(m: Metadata | None) -> Metadata | None:
    if m is None:
        return None
    out: Metadata = {k: v for k, v in m.items() if v is not None}
    return out or None


def apply_op(current: Record | None, op: Op) -> Record | None:
    """Chroma's semantics for one op on one record (``None`` means absent)."""
    if op.kind == OpKind.DELETE:
        return None
    if op.kind == OpKind.ADD:
        if current is not None or op.embedding is None:
            return current
        return Record(op.id, op.embedding, op.document, _strip_nones(op.metadata), op.uri)
    if current is None:
        if op.kind == OpKind.UPDATE or op.embedding is None:
            return None
        return Record(op.id, op.embedding, op.document, _strip_nones(op.metadata), op.uri)
    return replace(
        current,
        embedding=current.embedding if op.embedding is None else op.embedding,
        document=current.document if op.document is None else op.document,
        metadata=merge_metadata(current.metadata, op.metadata),
        uri=current.uri if op.uri is None else op.uri,
    )


@dataclass
class FoldPlan:
    """What folding a batch of ops onto a base will do."""

    ops: list[Op]  # survivors, in total order
    superseded: int  # ops dropped because a newer write to the id was already folded
    versions: dict[str, Version]  # new version entries for every touched id


def plan(ops: Iterable[Op], versions: Mapping[str, Version]) -> FoldPlan:
    """Sort ``ops``, drop superseded ones, and compute the touched ids' new versions.

    Filtered deletes must have been expanded first (:func:`expand_filtered_deletes`).
    """
    survivors: list[Op] = []
    superseded = 0
    new_versions: dict[str, Version] = {}
    for op in sort_ops(ops):
        if op.kind is OpKind.DELETE_WHERE:
            raise ValueError("a filtered delete must be expanded against the state before "
                             "planning (merge.expand_filtered_deletes)")
        seen = new_versions.get(op.id) or versions.get(op.id)
        if seen is not None and op.key <= seen.key:
            superseded += 1
            continue
        survivors.append(op)
        new_versions[op.id] = Version(op.key, deleted=op.kind == OpKind.DELETE)
    return FoldPlan(survivors, superseded, new_versions)


Lookup = Callable[[list[str]], Mapping[str, Record]]
"""Records of a state by id (absent ids are left out)."""

Matching = Callable[[DeleteFilter], Iterable[str]]
"""Ids of a state's live records that a filter matches, its ``ids`` limit included, in
the state's storage order (Chroma's ``get`` order) at least when the filter has a
``limit``; the ``limit`` itself is not applied (every match is returned)."""


def matching_records(records: Mapping[str, Record | None], f: DeleteFilter) -> list[str]:
    """Ids of the live ``records`` that ``f`` matches, in their order (Chroma's filter rules)."""
    pred = compile_filter(f.where, f.where_document)
    allowed = None if f.ids is None else set(f.ids)
    return [rid for rid, rec in records.items()
            if rec is not None and (allowed is None or rid in allowed)
            and (pred is None or pred(rec.metadata, rec.document))]


def has_filtered_deletes(ops: Iterable[Op]) -> bool:
    """True when ``ops`` hold a filtered delete (which needs the state's records)."""
    return any(op.kind is OpKind.DELETE_WHERE for op in ops)


def _relevant(ops: Sequence[Op], retained: Iterable[Op]) -> list[Op]:
    """The retained filtered deletes newer than one of ``ops``: those it must meet."""
    oldest = min((op.key for op in ops), default=None)
    return [] if oldest is None else [f for f in retained if f.key > oldest]


def needs_records(ops: Sequence[Op], retained: Iterable[Op] = ()) -> bool:
    """True when folding ``ops`` needs the state's records, not only its versions.

    That is when they hold a filtered delete, or when one of them is older
    than a filtered delete the state already folded (``retained``): the late
    write must still be tested against it.
    """
    return has_filtered_deletes(ops) or bool(_relevant(ops, retained))


def retain(retained: Iterable[Op], ops: Iterable[Op], horizon_us: int) -> list[Op]:
    """The filtered deletes a new version keeps: the old ones and ``ops``' own, in key
    order, minus those older than the grace horizon (like tombstones) and those with
    a ``limit``: those removed exactly the ids they removed when folded, and the
    tombstones they left turn away late writes to those ids."""
    kept = {f.key: f for f in [*retained, *(op for op in ops if op.kind is OpKind.DELETE_WHERE)]
            if f.key.ts_us >= horizon_us
            and (f.filter is None or f.filter.limit is None)}  # a limited one is decided
    return [kept[k] for k in sorted(kept)]


def expand_filtered_deletes(ops: Iterable[Op], versions: Mapping[str, Version],
                            lookup: Lookup, matching: Matching,
                            retained: Iterable[Op] = ()) -> list[Op]:
    """``ops`` in total order, each filtered delete replaced by deletes of what it removes.

    The state the ops fold onto is given by ``lookup`` (its records),
    ``matching`` (which of them a filter matches: chromadb's own ``get(where=...)``
    where the state is a chromadb copy) and ``versions`` (its newest folded
    write per id). A filtered delete at key ``K`` removes a record when it is
    live just before ``K`` — the state, then this batch's surviving ops before
    ``K``, tested with :mod:`filters` — and matches, unless a write to it newer
    than ``K`` was already folded (rule 3: that write came later and stays).
    Each removal is a plain ``DELETE`` keyed ``K``, so planning, tombstones,
    segments and replay treat it like any delete; nothing downstream sees a filter.

    ``retained`` are filtered deletes the state already folded (kept for the
    grace period): they were decided on the state's records then, so they
    test only the records this batch changes before them — a late write older
    than a filtered delete still meets it.

    A delete with a ``limit`` removes only the first ``limit`` matching
    records in Chroma's order just before ``K``: the state's records that
    exist throughout in storage order (``matching`` gives that order), then
    the records the batch created before ``K`` in creation order. A matching
    record a newer folded write keeps still counts toward the limit. Once
    folded, a limited delete is decided: it removed exactly those ids, and
    their tombstones (keyed ``K``) turn away late writes to them, so it is
    not retained (:func:`retain`) and a late write creating another matching
    record keeps it.
    """
    ordered = sort_ops(ops)
    again = _relevant(ordered, retained)
    if not has_filtered_deletes(ordered) and not again:
        return ordered
    old_keys = {f.key for f in again}
    ordered = sort_ops([*ordered, *again])
    # Only writes before the last filtered delete can change what one matches: read
    # just those records, not every record a large batch writes.
    last = max(op.key for op in ordered if op.kind is OpKind.DELETE_WHERE)
    written = list(dict.fromkeys(op.id for op in ordered
                                 if op.kind is not OpKind.DELETE_WHERE and op.key < last))
    base = dict(lookup(written)) if written else {}
    state: dict[str, Record | None] = {}  # ids this batch changed so far: their state
    newest: dict[str, OpKey] = {}  # the batch's surviving writes per id

    def newer_than(rid: str, key: OpKey) -> bool:
        seen = newest.get(rid)
        if seen is None and rid in versions:
            seen = versions[rid].key
        return seen is not None and key <= seen

    created: dict[str, int] = {}  # live ids the batch created: when (Chroma's order)
    out: list[Op] = []
    for op in ordered:
        if op.kind is not OpKind.DELETE_WHERE:
            out.append(op)
            if op.key < last and not newer_than(op.id, op.key):  # else plan decides alone
                cur = state[op.id] if op.id in state else base.get(op.id)
                state[op.id] = new = apply_op(cur, op)
                newest[op.id] = op.key
                if new is None:
                    created.pop(op.id, None)
                elif cur is None:
                    created[op.id] = len(out)
            continue
        f = op.filter
        assert f is not None, "a filtered delete carries its filter"
        if f.limit is not None:
            removes = _first_matching(f, f.limit, matching, state, created)
        else:
            # Records unchanged since the state: a retained one decided them already.
            hits = [] if op.key in old_keys else [rid for rid in matching(f) if rid not in state]
            removes = [*hits, *matching_records(state, f)]
        for rid in removes:
            if newer_than(rid, op.key):
                continue
            out.append(Op(OpKind.DELETE, rid, op.key))
            state[rid] = None
            created.pop(rid, None)
            newest[rid] = op.key
    return out


def _first_matching(f: DeleteFilter, limit: int, matching: Matching,
                    state: Mapping[str, Record | None], created: Mapping[str, int]) -> list[str]:
    """The first ``limit`` records ``f`` matches, in Chroma's order (storage order).

    The state's matching records the batch left alone, and those it changed
    but did not create (they keep their place), go in the state's order; the
    records the batch created follow, in creation order.
    """
    if limit == 0:
        return []
    hits = [rid for rid in matching(f) if rid not in state]
    mine = matching_records(state, f)
    kept = [rid for rid in mine if rid not in created]
    if kept:  # their place among the state's hits: the state's own order of them
        hits = list(matching(DeleteFilter(ids=(*hits[:limit], *kept), limit=limit)))
    new = sorted((rid for rid in mine if rid in created), key=lambda rid: created[rid])
    return [*hits, *new][:limit]


@dataclass
class Folded:
    """The result of :func:`fold_tracked`."""

    records: dict[str, Record | None]  # final state of every touched id (None: absent)
    # Live ids whose record the ops created (absent before, present after), with the
    # position in ``ops`` of the last op that did so. A live touched id not in here
    # existed all along.
    created: dict[str, int]


def fold_tracked(base: Mapping[str, Record], ops: Iterable[Op]) -> Folded:
    """Like :func:`fold`, and also say which records the ops created, and when.

    That decides record order as Chroma keeps it: a record keeps its place
    through updates and upserts, and one created (new, or deleted and added
    again) goes after every existing one, in creation order.
    """
    out: dict[str, Record | None] = {}
    created: dict[str, int] = {}
    for i, op in enumerate(ops):
        cur = out[op.id] if op.id in out else base.get(op.id)
        new = apply_op(cur, op)
        if cur is None and new is not None:
            created[op.id] = i
        out[op.id] = new
    return Folded(out, {rid: k for rid, k in created.items() if out[rid] is not None})


def fold(base: Mapping[str, Record], ops: Iterable[Op]) -> dict[str, Record | None]:
    """Apply ``ops`` (already planned, in order) to base records; return the touched ids' states."""
    return fold_tracked(base, ops).records


def prune_tombstones(versions: Mapping[str, Version], older_than_us: int) -> dict[str, Version]:
    """Drop tombstones older than the grace horizon; live ids always keep their version."""
    return {
        rid: v for rid, v in versions.items() if not (v.deleted and v.key.ts_us < older_than_us)
    }


def liveness(ops: Iterable[Op], live_before: Mapping[str, bool]) -> dict[str, bool]:
    """Whether each touched id holds a record after ``ops`` (planned, in order).

    The same presence rules as :func:`apply_op`, without the records: a
    compaction that does not have the base's records (a minor one) still
    knows how many records its version holds and which ids are tombstones.
    """
    out: dict[str, bool] = {}
    for op in ops:
        cur = out.get(op.id, live_before.get(op.id, False))
        if op.kind == OpKind.DELETE:
            out[op.id] = False
        elif op.kind == OpKind.UPDATE:
            out[op.id] = cur
        else:
            out[op.id] = cur or op.embedding is not None
    return out


def settle(plan_: FoldPlan, prior: Mapping[str, Version]) -> tuple[dict[str, Version], int]:
    """The touched ids' new versions, ``deleted`` meaning *no record*, and the count change.

    ``prior`` holds the versions before the plan for (at least) every touched
    id; an id without one held no record.
    """
    before = {rid: rid in prior and not prior[rid].deleted for rid in plan_.versions}
    after = liveness(plan_.ops, before)
    versions = {rid: Version(v.key, deleted=not after[rid]) for rid, v in plan_.versions.items()}
    return versions, sum(after.values()) - sum(before.values())
