"""engine.rebuild against the real chromadb 1.5.9 (temporary directories, no server).

What chromadb keeps of a collection's history, and that a rebuilt directory is
the same collection — id, configuration, records, ``get`` order, query answers —
holding only what a fresh collection of its live records holds.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chromasnap.config import CollectionSettings, Space
from chromasnap.engine import chromadir, persistence, reads, rebuild, replay
from chromasnap.engine.merge import plan
from chromasnap.engine.ops import Op, OpKey, OpKind
from modelgen import random_history

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DIM = 8
SETTINGS = CollectionSettings(name="coll", dimension=DIM, space=Space.L2, metadata={"team": "a"})
_seq = iter(range(1, 1 << 62))


def op(kind: OpKind, rid: str, rng: np.random.Generator | None = None, **kw: Any) -> Op:
    vec = rng.standard_normal(DIM).astype(np.float32) if rng is not None else None
    return Op(kind, rid, OpKey(1, "w", next(_seq)), vec, **kw)


def churn(path: Path, rounds: int, seed: int = 0) -> None:
    """Adds of 40 ids with every kind of field, then rounds of vector upserts and deletes."""
    rng = np.random.default_rng(seed)
    first = [op(OpKind.ADD, f"r{i}", rng, document=f"doc {i}", metadata={"i": i, "tags": ["x"]})
             for i in range(30)]
    first += [op(OpKind.ADD, f"u{i}", rng, uri=f"s3://b/{i}") for i in range(5)]
    first += [op(OpKind.ADD, f"d{i}", rng, document=f"only {i}") for i in range(5)]
    ops = list(first)
    for r in range(rounds):
        ops += [op(OpKind.UPSERT, f"r{i}", rng, metadata={"round": r}) for i in range(0, 30, 3)]
        ops += [op(OpKind.DELETE, f"r{i}") for i in range(1, 30, 7)]
        ops += [op(OpKind.UPSERT, f"r{i}", rng, document=f"back {r}") for i in range(1, 30, 7)]
        ops += [op(OpKind.UPDATE, f"u{i}", rng) for i in range(0, 5, 2)]
    with persistence.open_collection(path, SETTINGS.name) as (_, col):
        replay.apply_ops(col, ops, dimension=DIM)
    persistence.finalize(path)


def contents(path: Path) -> tuple[list[tuple[Any, ...]], dict[str, Any], list[list[str]]]:
    """Records in get order (exactly comparable), the collection's JSON, query answers."""
    queries = np.random.default_rng(99).standard_normal((5, DIM)).astype(np.float32)
    with persistence.open_collection(path, SETTINGS.name, flush_on_exit=False) as (_, col):
        recs = [(rid, tuple(r.embedding.tolist()), r.document, r.metadata, r.uri)
                for rid, r in reads.read_all(col).items()]
        info = reads.collection_info(col)
        answers = reads.query_raw(col, list(queries), 10)["ids"]
    return recs, info, answers


def collection_id(path: Path) -> str:
    return persistence.log_states(path)[0].collection_id


@pytest.fixture
def churned(tmp_path: Path) -> Path:
    path = tmp_path / "churned"
    chromadir.create_collection(path, SETTINGS)
    churn(path, rounds=6)
    return path


def test_chromadb_keeps_deleted_and_replaced_vectors_in_its_index(churned: Path) -> None:
    """The canary of what accumulates: if chromadb starts reusing dead elements, this fails
    (and ``index_state`` reads the element count from hnswlib's header: if that layout
    changes, this fails too)."""
    state = rebuild.index_state(churned, collection_id(churned))
    assert state is not None
    with persistence.open_collection(churned, SETTINGS.name, flush_on_exit=False) as (_, col):
        assert state.live == col.count() == 40
    # 40 adds, then per round 10 + 3 vector replacements (delete + add) and 5 re-adds.
    assert state.elements == 40 + 6 * (10 + 3 + 5)
    assert state.dead == state.elements - 40


def test_rebuild_is_the_same_collection_without_its_history(churned: Path,
                                                             tmp_path: Path) -> None:
    before = contents(churned)
    work = tmp_path / "work"
    shutil.copytree(churned, work)  # rebuild opens its source: give it a copy
    fresh = tmp_path / "fresh"
    assert rebuild.rebuild(work, fresh, SETTINGS).records == 40
    assert not chromadir.is_open(fresh) and persistence.pending_log_records(fresh) == 0
    # Same id (clients hold it), same configuration and metadata, same records in the
    # same get order, same answers (40 records: HNSW search is exact here).
    assert collection_id(fresh) == collection_id(churned)
    assert contents(fresh) == before
    state = rebuild.index_state(fresh, collection_id(fresh))
    assert state is not None and (state.elements, state.live) == (40, 40)
    # As compact as a fresh collection of the same records, added in the same order.
    peer = tmp_path / "peer"
    chromadir.create_collection(peer, SETTINGS)
    with persistence.open_collection(work, SETTINGS.name, flush_on_exit=False) as (_, col):
        recs = reads.read_all(col)
    with persistence.open_collection(peer, SETTINGS.name) as (_, col):
        replay.apply_ops(col, [Op(OpKind.ADD, rid, OpKey(1, "p", i), r.embedding, r.document,
                                  r.metadata or None, r.uri)
                               for i, (rid, r) in enumerate(recs.items())], dimension=DIM)
    persistence.finalize(peer)
    assert _bytes(fresh) <= _bytes(peer) * 1.05
    assert _bytes(fresh) < _bytes(churned)


def test_a_rebuilt_directory_takes_later_writes_like_the_original(churned: Path,
                                                                  tmp_path: Path) -> None:
    """Row order continues as it would have: re-added records go last, updates stay put."""
    work = tmp_path / "work"
    shutil.copytree(churned, work)
    fresh = tmp_path / "fresh"
    rebuild.rebuild(work, fresh, SETTINGS)
    rng = np.random.default_rng(5)
    later = [op(OpKind.DELETE, "r3"), op(OpKind.ADD, "r3", rng, document="again"),
             op(OpKind.UPSERT, "r6", rng), op(OpKind.ADD, "new", rng, metadata={"k": 1}),
             op(OpKind.UPDATE, "d1", None, metadata={"k": 2})]
    for path in (churned, fresh):
        with persistence.open_collection(path, SETTINGS.name) as (_, col):
            replay.apply_ops(col, later, dimension=DIM)
    assert contents(fresh) == contents(churned)


@pytest.mark.parametrize("seed", range(4))
def test_rebuild_with_writes_equals_applying_them(churned: Path, tmp_path: Path,
                                                  seed: int) -> None:
    """Building afresh with writes gives what applying them in place gives: the same
    records in the same get order (updates keep their place, re-adds go last)."""
    ops = plan([op for d in random_history(random.Random(seed), dimension=DIM, n_ops=150,
                                           ids=50) for op in d.ops
                if not (op.id.startswith("id") and int(op.id[2:]) % 5 == 0)]
               + [Op(OpKind.UPDATE, f"r{i}", OpKey(2_000_000, "w9", i), None, f"late {i}")
                  for i in range(0, 30, 4)], {}).ops
    # Some ops on the churned records too: rename ids of the history onto them.
    ops = [dataclasses.replace(o, id=f"r{int(o.id[2:]) % 30}") if o.id.startswith("id") and
           int(o.id[2:]) < 20 else o for o in ops]
    in_place = tmp_path / "in-place"
    shutil.copytree(churned, in_place)
    with persistence.open_collection(in_place, SETTINGS.name) as (_, col):
        replay.apply_ops(col, ops, dimension=DIM)
    persistence.finalize(in_place)
    work = tmp_path / "work"
    shutil.copytree(churned, work)
    fresh = tmp_path / "fresh"
    built = rebuild.rebuild(work, fresh, SETTINGS, ops)
    assert contents(fresh)[0] == contents(in_place)[0]
    assert built.model == contents(in_place)[1] and built.records == len(contents(fresh)[0])
    state = rebuild.index_state(fresh, collection_id(fresh))
    assert state is not None and state.dead == 0


def test_index_state_of_a_collection_without_vectors(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    chromadir.create_collection(path, SETTINGS)
    assert rebuild.index_state(path, collection_id(path)) is None
    assert rebuild.hnsw_elements(tmp_path / "nowhere") is None


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
