"""chromasnap.engine's chromadb modules (chromadir, persistence, replay, reads) against
the real chromadb 1.5.9 (temporary directories, no server).

The semantics tests pin down what chromadb really does with each write, since
the compactor replays writes through ``apply_ops`` and the pure merge model
must agree with it. If a chromadb upgrade changes any of this, these fail.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.modelgen import chroma_call

from chromasnap.config import CollectionSettings, Space
from chromasnap.engine import chromadir, distances, persistence, reads, replay
from chromasnap.engine.ops import RECORD_KINDS, Metadata, Op, OpKey, OpKind

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DIM = 4
_seq = iter(range(1, 1 << 62))


def key() -> OpKey:
    return OpKey(1, "w", next(_seq))


def vec(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float32)


def add(rid: str, e: np.ndarray | None = None, **kw: Any) -> Op:
    return Op(OpKind.ADD, rid, key(), vec(1, 0, 0, 0) if e is None else e, **kw)


def upsert(rid: str, e: np.ndarray | None = None, **kw: Any) -> Op:
    return Op(OpKind.UPSERT, rid, key(), vec(0, 1, 0, 0) if e is None else e, **kw)


def update(rid: str, e: np.ndarray | None = None, **kw: Any) -> Op:
    return Op(OpKind.UPDATE, rid, key(), e, **kw)


def delete(rid: str) -> Op:
    return Op(OpKind.DELETE, rid, key())


def settings(name: str = "coll", space: Space = Space.L2, **kw: Any) -> CollectionSettings:
    return CollectionSettings(name=name, dimension=DIM, space=space, **kw)


@pytest.fixture
def coll(tmp_path: Path) -> Path:
    path = tmp_path / "snap"
    chromadir.create_collection(path, settings())
    return path


def apply(path: Path, ops: list[Op], name: str = "coll") -> dict[str, reads.Record]:
    with persistence.open_collection(path, name) as (_, col):
        replay.apply_ops(col, ops)
        return reads.read_all(col)


def plain(records: dict[str, reads.Record]) -> dict[str, tuple[Any, ...]]:
    """Records in a form ``==`` compares exactly (embeddings as float tuples)."""
    return {
        rid: (tuple(r.embedding.tolist()), r.document, r.metadata, r.uri)
        for rid, r in records.items()
    }


def hashes(path: Path) -> dict[str, str]:
    files = persistence.snapshot_files(path)
    return {f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in files}


def sqlite_rows(path: Path) -> list[str]:
    """The database's logical content, minus chromadb's per-open lock probe rows."""
    con = sqlite3.connect(f"file:{path / chromadir.SQLITE_FILE}?mode=ro", uri=True)
    try:
        return [s for s in con.iterdump() if '"acquire_write"' not in s]
    finally:
        con.close()


def open_fds_under(path: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path.resolve()) + os.sep):
            out.append(target)
    return out


# ---------------------------------------------------------------- batching (pure)


def test_plan_batches_groups_runs_and_keeps_order() -> None:
    ops = [
        add("a"),
        add("b"),
        add("a"),  # repeat id: new batch
        upsert("c"),
        upsert("d", document="x"),  # different fields: new batch
        upsert("e", document="y"),
        delete("a"),
        delete("f"),
        update("b", document="z"),
    ]
    batches = replay.plan_batches(ops, max_batch_size=100)
    assert [op for b in batches for op in b.ops] == ops
    assert [(b.kind, [o.id for o in b.ops]) for b in batches] == [
        (OpKind.ADD, ["a", "b"]),
        (OpKind.ADD, ["a"]),
        (OpKind.UPSERT, ["c"]),
        (OpKind.UPSERT, ["d", "e"]),
        (OpKind.DELETE, ["a", "f"]),
        (OpKind.UPDATE, ["b"]),
    ]
    for b in batches:
        assert len({o.id for o in b.ops}) == len(b.ops)


def test_plan_batches_respects_max_batch_size() -> None:
    ops = [add(f"i{i}") for i in range(10)]
    assert [len(b.ops) for b in replay.plan_batches(ops, 4)] == [4, 4, 2]
    with pytest.raises(ValueError):
        replay.plan_batches(ops, 0)


# ---------------------------------------------------------------- create / open / close


def test_create_collection_settings_and_info(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    s = CollectionSettings(
        name="docs-1",
        dimension=DIM,
        space=Space.IP,
        hnsw_m=12,
        hnsw_construction_ef=80,
        hnsw_search_ef=33,
        metadata={"team": "search"},
    )
    cid = chromadir.create_collection(path, s)
    assert persistence.snapshot_files(path) == ["chroma.sqlite3"]
    with persistence.open_collection(path, "docs-1") as (_, col):
        info = reads.collection_info(col)
        assert reads.count(col) == 0
    assert list(info) == [
        "id",
        "name",
        "configuration_json",
        "schema",
        "metadata",
        "dimension",
        "tenant",
        "database",
        "log_position",
        "version",
    ]
    assert info["id"] == cid and info["name"] == "docs-1"
    assert info["metadata"] == {"team": "search"}
    assert info["dimension"] is None  # set by the first write
    hnsw = info["configuration_json"]["hnsw"]
    assert (hnsw["space"], hnsw["max_neighbors"], hnsw["ef_construction"], hnsw["ef_search"]) == (
        "ip",
        12,
        80,
        33,
    )
    assert hnsw["sync_threshold"] == 1000
    # Same as a plain create_collection: an HttpClient sees the default function.
    assert info["configuration_json"]["embedding_function"]["name"] == "default"
    with pytest.raises(FileExistsError):
        chromadir.create_collection(path, s)


def test_close_releases_files_and_path_reopens(coll: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    chromadir.create_collection(other, settings())
    with persistence.open_collection(coll, "coll") as (_, col):
        replay.apply_ops(col, [add("a")])
        assert chromadir.is_open(coll)
        with (
            pytest.raises(RuntimeError, match="already open"),
            persistence.open_collection(coll, "coll"),
        ):
            pass
        # Two directories open at once in one process.
        with persistence.open_collection(other, "coll") as (_, col2):
            replay.apply_ops(col2, [add("b"), add("c")])
            assert (reads.count(col), reads.count(col2)) == (1, 2)
    assert not chromadir.is_open(coll) and not chromadir.is_open(other)
    assert open_fds_under(coll) == [] and open_fds_under(other) == []
    # The same path can be replaced on disk and opened again.
    shutil.rmtree(coll)
    shutil.copytree(other, coll)
    with persistence.open_collection(coll, "coll") as (_, col):
        assert reads.count(col) == 2


def test_error_inside_block_still_closes(coll: Path) -> None:
    with pytest.raises(ZeroDivisionError), persistence.open_collection(coll, "coll"):
        _ = 1 / 0
    assert not chromadir.is_open(coll)
    assert open_fds_under(coll) == []


# ---------------------------------------------------------------- persistence


def test_snapshot_copy_reopens_complete_without_replay(coll: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.random((2600, DIM), dtype=np.float32)
    ops: list[Op] = [add(f"id{i}", vectors[i], metadata={"i": i}) for i in range(2500)]
    ops += [update(f"id{i}", document=f"doc {i}") for i in range(0, 2500, 7)]
    ops += [delete(f"id{i}") for i in range(0, 2500, 11)]
    ops += [upsert(f"id{i}", vectors[i], metadata={"late": True}) for i in range(2450, 2600)]
    with persistence.open_collection(coll, "coll") as (_, col):
        replay.apply_ops(col, ops)
        # Chroma saved HNSW at its own thresholds only: a tail is unsaved.
        assert persistence.pending_log_records(coll) > 0
        before = reads.read_all(col)
        cid = reads.collection_info(col)["id"]
    # open_collection flushed on exit: the saved index has applied everything.
    assert persistence.pending_log_records(coll) == 0
    result = persistence.finalize(coll)
    assert "chroma.sqlite3" in result.files
    assert {f.rsplit("/", 1)[-1] for f in result.files if "/" in f} == set(persistence.HNSW_FILES)
    assert result.total_bytes == sum((coll / f).stat().st_size for f in result.files)

    copy = tmp_path / "copy"
    shutil.copytree(coll, copy)
    files_before, rows_before = hashes(copy), sqlite_rows(copy)
    with persistence.open_collection(copy, "coll", flush_on_exit=False) as (_, col):
        assert reads.collection_info(col)["id"] == cid  # the id travels with the files
        assert reads.count(col) == len(before)
        after = reads.read_all(col)
        hit = col.query(query_embeddings=[vectors[2599].tolist()], n_results=1)
        assert hit["ids"] == [["id2599"]]
    assert plain(after) == plain(before)
    # Nothing was replayed or re-saved: index files are byte-identical and the
    # database's content is unchanged (chromadb only logs its open in acquire_write).
    files_after = hashes(copy)
    assert {f: h for f, h in files_after.items() if f != "chroma.sqlite3"} == {
        f: h for f, h in files_before.items() if f != "chroma.sqlite3"
    }
    assert sqlite_rows(copy) == rows_before
    assert persistence.pending_log_records(copy) == 0


def test_without_flush_a_reader_would_replay(coll: Path) -> None:
    with persistence.open_collection(coll, "coll", flush_on_exit=False) as (_, col):
        replay.apply_ops(col, [add(f"i{i}") for i in range(10)])
    assert persistence.pending_log_records(coll) == 10
    with pytest.raises(persistence.IncompleteSnapshotError, match="lags the log by 10"):
        persistence.finalize(coll)
    with persistence.open_collection(coll, "coll") as (_, col):
        pass  # flush on exit saves what an earlier session left unsaved
    assert persistence.pending_log_records(coll) == 0
    persistence.finalize(coll)
    with persistence.open_collection(coll, "coll") as (_, col):
        assert sorted(reads.read_all(col)) == sorted(f"i{i}" for i in range(10))


def test_flush_padding_changes_no_record(coll: Path) -> None:
    with persistence.open_collection(coll, "coll") as (_, col):
        replay.apply_ops(col, [add("a", metadata={"k": 1})])
        before = plain(reads.read_all(col))
        padded = persistence.flush(col, coll)
        assert padded == 999  # threshold 1000 minus the one pending write
        assert plain(reads.read_all(col)) == before
        assert persistence.flush(col, coll) == 0  # already complete: nothing to do
    assert persistence.pending_log_records(coll) == 0


def test_finalize_vacuums_after_mass_delete(coll: Path) -> None:
    docs = "x" * 2000
    with persistence.open_collection(coll, "coll") as (_, col):
        replay.apply_ops(col, [add(f"i{i}", document=docs) for i in range(1500)])
        replay.apply_ops(col, [delete(f"i{i}") for i in range(1500)])
    size = (coll / chromadir.SQLITE_FILE).stat().st_size
    result = persistence.finalize(coll)
    assert result.vacuumed
    assert (coll / chromadir.SQLITE_FILE).stat().st_size < size / 2
    with persistence.open_collection(coll, "coll") as (_, col):
        assert reads.count(col) == 0


# ---------------------------------------------------------------- write semantics


def test_add_existing_id_is_ignored(coll: Path) -> None:
    got = apply(
        coll,
        [
            add("a", vec(1, 0, 0, 0), document="first", metadata={"v": 1}, uri="u1"),
            add("a", vec(0, 0, 0, 1), document="second", metadata={"w": 2}, uri="u2"),
        ],
    )
    assert plain(got) == {"a": ((1.0, 0.0, 0.0, 0.0), "first", {"v": 1}, "u1")}


def test_update_missing_id_is_ignored(coll: Path) -> None:
    assert apply(coll, [update("ghost", vec(1, 1, 1, 1), document="d", metadata={"k": 1})]) == {}


def test_delete_missing_id_is_ignored(coll: Path) -> None:
    assert plain(apply(coll, [add("a"), delete("ghost")])) == {
        "a": ((1.0, 0.0, 0.0, 0.0), None, None, None)
    }


def test_update_merges_metadata_and_none_removes_a_key(coll: Path) -> None:
    got = apply(
        coll,
        [
            add("a", metadata={"x": 1, "y": "s", "z": True}),
            update("a", metadata={"y": None, "w": 2.5}),
        ],
    )
    assert got["a"].metadata == {"x": 1, "z": True, "w": 2.5}


def test_removing_every_key_leaves_no_metadata(coll: Path) -> None:
    got = apply(coll, [add("a", metadata={"x": 1}), update("a", metadata={"x": None})])
    assert got["a"].metadata is None


def test_upsert_existing_merges_and_keeps_unsent_fields(coll: Path) -> None:
    got = apply(
        coll,
        [
            add("a", vec(1, 0, 0, 0), document="doc", metadata={"x": 1, "y": 2}, uri="u"),
            upsert("a", vec(0, 0, 1, 0), metadata={"y": None, "q": "new"}),
        ],
    )
    assert plain(got) == {"a": ((0.0, 0.0, 1.0, 0.0), "doc", {"x": 1, "q": "new"}, "u")}


def test_upsert_new_id_drops_none_values(coll: Path) -> None:
    got = apply(coll, [upsert("n", metadata={"gone": None, "kept": 1})])
    assert got["n"].metadata == {"kept": 1}


def test_add_with_none_metadata_value_is_refused(coll: Path) -> None:
    with persistence.open_collection(coll, "coll") as (_, col):
        with pytest.raises(TypeError):
            replay.apply_ops(col, [add("a", metadata={"k": None})])
        assert reads.count(col) == 0


def test_update_of_only_one_field_leaves_the_others(coll: Path) -> None:
    # Each apply() is its own open/flush/close: results are what was saved.
    base = add("a", vec(1, 2, 3, 4), document="doc", metadata={"k": 1}, uri="u")
    got = apply(coll, [base, update("a", document="new doc")])
    # No embedding function runs: the vector stays (the public Collection.update
    # would have tried to embed "new doc").
    assert plain(got)["a"] == ((1.0, 2.0, 3.0, 4.0), "new doc", {"k": 1}, "u")
    got = apply(coll, [update("a", vec(4, 3, 2, 1))])
    assert plain(got)["a"] == ((4.0, 3.0, 2.0, 1.0), "new doc", {"k": 1}, "u")
    got = apply(coll, [update("a", uri="u2"), update("a")])  # an empty update is a no-op
    assert plain(got)["a"] == ((4.0, 3.0, 2.0, 1.0), "new doc", {"k": 1}, "u2")


def test_empty_document_and_metadata_types(coll: Path) -> None:
    md: Metadata = {"s": "str", "i": -3, "f": 1.5, "b": False, "big": 2**62}
    got = apply(coll, [add("a", document="", metadata=md)])
    assert got["a"].document == ""
    assert got["a"].metadata == md
    assert isinstance(got["a"].metadata["b"], bool)


def test_delete_then_add_recreates(coll: Path) -> None:
    got = apply(
        coll,
        [
            add("a", vec(1, 0, 0, 0), metadata={"old": 1}),
            delete("a"),
            add("a", vec(0, 1, 0, 0), document="reborn"),
        ],
    )
    assert plain(got) == {"a": ((0.0, 1.0, 0.0, 0.0), "reborn", None, None)}


def test_mixed_fields_in_a_run_match_one_op_per_call(coll: Path, tmp_path: Path) -> None:
    # A run of adds where only some carry metadata/documents is split by
    # fields: one call with metadatas=[{...}, None] would store {} for the second.
    ops = [
        add("a", metadata={"k": 1}),
        add("b"),
        add("c", document="c"),
        add("d", metadata={"k": 2}, document="d"),
    ]
    got = apply(coll, ops)
    assert got["b"].metadata is None and got["c"].metadata is None
    assert got["a"].metadata == {"k": 1} and got["d"].document == "d"


def test_invalid_ops_are_refused(coll: Path) -> None:
    with persistence.open_collection(coll, "coll") as (_, col):
        with pytest.raises(ValueError, match="no embedding"):
            replay.apply_ops(col, [Op(OpKind.ADD, "a", key())])
        with pytest.raises(ValueError, match="shape"):
            replay.apply_ops(col, [add("a", vec(1, 2, 3))], dimension=DIM)
        with pytest.raises(ValueError, match="reserved key"):
            replay.apply_ops(col, [add("a", metadata={"chroma:document": "x"})])
        assert reads.count(col) == 0


def test_cosine_space_reads_back_as_the_index_returns_it(tmp_path: Path) -> None:
    path = tmp_path / "cos"
    chromadir.create_collection(path, settings(space=Space.COSINE))
    got = apply(path, [add("a", vec(1, 1, 0, 0)), add("b", vec(3, 0, 4, 0))])
    # Cosine indexes store normalized vectors and scale back on read: the
    # result can differ from what was written in the last bit, exactly so.
    a = distances.as_indexed(vec(1, 1, 0, 0), "cosine")[0]
    assert not np.array_equal(a, vec(1, 1, 0, 0))
    np.testing.assert_array_equal(got["a"].embedding, a)
    np.testing.assert_array_equal(got["b"].embedding, distances.as_indexed(vec(3, 0, 4, 0),
                                                                           "cosine")[0])


# ---------------------------------------------------------------- grouping == sequential


def random_ops(rng: random.Random, n: int, ids: int) -> list[Op]:
    """Runs of same-kind, same-fields ops (so batching kicks in) over few ids (so ids repeat)."""
    ops: list[Op] = []
    while len(ops) < n:
        kind = rng.choice(RECORD_KINDS)
        with_doc, with_md, with_vec = rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5
        for _ in range(rng.randint(1, 6)):
            rid = f"r{rng.randrange(ids)}"
            e = vec(*(rng.randint(-4, 4) for _ in range(DIM)))
            doc = f"d{rng.randint(0, 9)}" if with_doc else None
            md: Metadata | None = None
            if with_md:
                md = rng.choice([{"a": rng.randint(0, 3)}, {"b": "x", "a": None}, {"c": True}])
            if kind is OpKind.DELETE:
                ops.append(delete(rid))
            elif kind is OpKind.UPDATE:
                ops.append(update(rid, e if with_vec else None, document=doc, metadata=md))
            elif kind is OpKind.UPSERT:
                ops.append(upsert(rid, e, document=doc, metadata=md))
            else:
                clean = {k: v for k, v in (md or {}).items() if v is not None} or None
                ops.append(add(rid, e, document=doc, metadata=clean))
    return ops[:n]


def raw_call(col: Any, op: Op) -> None:
    """One op as one plain chromadb server call: the reference for apply_ops."""
    chroma_call(col, op)


def test_apply_ops_equals_one_plain_call_per_op(tmp_path: Path) -> None:
    rng = random.Random(11)
    ops = random_ops(rng, 150, ids=20)
    grouped = tmp_path / "grouped"
    single = tmp_path / "single"
    chromadir.create_collection(grouped, settings())
    chromadir.create_collection(single, settings())
    with persistence.open_collection(grouped, "coll") as (_, col):
        calls = replay.apply_ops(col, ops)
        live = plain(reads.read_all(col))
    with persistence.open_collection(grouped, "coll") as (_, col):
        reopened = plain(reads.read_all(col))
    with persistence.open_collection(single, "coll") as (_, col):
        for op in ops:
            raw_call(col, op)
        # Read before closing: chromadb's own saved index may lose vector
        # updates (see test_chromadb_loses_isolated_vector_updates).
        reference = plain(reads.read_all(col))
    assert calls < len(ops) * 0.7
    assert live == reference
    assert reopened == reference
    assert reference  # the sequence leaves records behind
    # Same get order too (dicts keep read_all's order): vector updates keep their place.
    assert list(live) == list(reopened) == list(reference)


def test_same_id_repeated_is_applied_in_order(coll: Path) -> None:
    ops = [upsert("a", vec(float(i), 0, 0, 0), metadata={"n": i}) for i in range(1, 9)]
    ops += [update("a", document="last"), add("b"), delete("a"), upsert("a", metadata={"z": 0})]
    got = apply(coll, ops)
    assert plain(got) == {
        "a": ((0.0, 1.0, 0.0, 0.0), None, {"z": 0}, None),
        "b": ((1.0, 0.0, 0.0, 0.0), None, None, None),
    }


def test_chroma_agrees_with_the_merge_model(tmp_path: Path) -> None:
    """The compactor's pure model (merge.fold) must predict what Chroma stores."""
    from chromasnap.engine import merge

    rng = random.Random(5)
    ops = random_ops(rng, 200, ids=20)
    path = tmp_path / "m"
    chromadir.create_collection(path, settings())
    apply(path, ops)
    with persistence.open_collection(path, "coll") as (_, col):
        got = plain(reads.read_all(col))
    folded = merge.fold_tracked({}, ops)
    model = {
        rid: (tuple(r.embedding.tolist()), r.document, r.metadata, r.uri)
        for rid, r in folded.records.items()
        if r is not None
    }
    assert got == model
    # ... and the order: from an empty base every record was created, in key order.
    assert list(got) == sorted(folded.created, key=lambda rid: folded.created[rid])


# ---------------------------------------------------------------- chromadb 1.5.9 bug


def test_chromadb_loses_isolated_vector_updates(tmp_path: Path) -> None:
    """Canary: plain chromadb 1.5.9 does not save a vector update of an isolated element.

    If this starts failing after a chromadb upgrade, the bug is fixed and
    replay._replace_vectors (delete + add) can go back to a plain update.
    """
    import chromadb
    from chromadb.config import Settings

    path = str(tmp_path / "raw")
    s = Settings(anonymized_telemetry=False)
    client = chromadb.PersistentClient(path=path, settings=s)
    col = client.create_collection("coll", configuration={"hnsw": {"sync_threshold": 1}})
    col.add(ids=["a"], embeddings=[[1.0, 2.0, 3.0, 4.0]])
    col.update(ids=["a"], embeddings=[[4.0, 3.0, 2.0, 1.0]])
    assert col.get(ids=["a"], include=["embeddings"])["embeddings"][0].tolist() == [4, 3, 2, 1]
    client.close()
    client = chromadb.PersistentClient(path=path, settings=s)
    stored = client.get_collection("coll").get(ids=["a"], include=["embeddings"])
    client.close()
    assert stored["embeddings"][0].tolist() == [1, 2, 3, 4]  # the update was lost


@pytest.mark.parametrize("kind", [OpKind.UPDATE, OpKind.UPSERT])
def test_vector_updates_survive_reopen(coll: Path, kind: OpKind) -> None:
    first = add("a", vec(1, 2, 3, 4), document="d", metadata={"k": 1, "j": 2}, uri="u")
    apply(coll, [first])
    # The only record: its HNSW element has no neighbour (the bug's trigger).
    change = Op(kind, "a", key(), vec(4, 3, 2, 1), metadata={"j": None, "n": 3})
    apply(coll, [change])
    with persistence.open_collection(coll, "coll") as (_, col):
        got = plain(reads.read_all(col))
        assert col.query(query_embeddings=[[4.0, 3.0, 2.0, 1.0]], n_results=1)["distances"] == [
            [0.0]
        ]
    assert got == {"a": ((4.0, 3.0, 2.0, 1.0), "d", {"k": 1, "n": 3}, "u")}


def test_vector_updates_survive_reopen_after_neighbours_deleted(coll: Path) -> None:
    rng = np.random.default_rng(3)
    apply(coll, [add(f"i{i}", rng.random(DIM, dtype=np.float32)) for i in range(20)])
    apply(coll, [delete(f"i{i}") for i in range(20) if i != 5])
    apply(coll, [update("i5", vec(9, 9, 9, 9)), upsert("new", vec(0, 0, 0, 1))])
    with persistence.open_collection(coll, "coll") as (_, col):
        got = plain(reads.read_all(col))
    assert got == {
        "i5": ((9.0, 9.0, 9.0, 9.0), None, None, None),
        "new": ((0.0, 0.0, 0.0, 1.0), None, None, None),
    }


# ---------------------------------------------------------------- record order


def ids_in_order(col: Any, **kw: Any) -> list[str]:
    return list(col.get(include=[], **kw)["ids"])


def test_get_order_is_row_order_and_insertion_order(coll: Path) -> None:
    """The fact replay and the fresh view build on: get order is the embeddings row id order."""
    ops = [add(r, metadata={"k": i}) for i, r in enumerate("cadbe")]
    ops += [update("a", metadata={"k": 9}), add("d"), upsert("b", metadata={"u": 1}), delete("c")]
    ops += [add("c"), upsert("f")]
    with persistence.open_collection(coll, "coll") as (_, col):
        replay.apply_ops(col, ops)
        order = ids_in_order(col)
        rows = persistence.row_ids(coll, str(col.id), ["f", "a", "missing", *order])
        with reads.row_positions(col) as positions:
            assert positions(order) == rows
        # Filtered and by-id gets use the same order, whatever order the ids come in.
        assert ids_in_order(col, where={"k": {"$gte": 0}}) == [r for r in order if r not in "cf"]
        assert ids_in_order(col, ids=["f", "b", "a"]) == ["a", "b", "f"]
    # Updates and upserts keep the place; delete + add and new ids go to the end.
    assert order == ["a", "d", "b", "e", "c", "f"]
    assert "missing" not in rows
    assert sorted(order, key=rows.__getitem__) == order


@pytest.mark.parametrize("kind", [OpKind.UPDATE, OpKind.UPSERT], ids=["update", "upsert"])
def test_vector_replacement_keeps_the_record_in_place(coll: Path, kind: OpKind) -> None:
    """Regression (issue #9, 10): the delete + add workaround moved the record to the end."""
    docs = {"a": "alpha", "b": "bravo", "c": "charlie", "d": "delta"}
    apply(coll, [add(r, vec(i, 0, 0, 0), document=d, metadata={"n": i}, uri=f"u{r}")
                 for i, (r, d) in enumerate(docs.items())])
    change = [
        Op(kind, "b", key(), vec(0, 9, 0, 0), metadata={"n": 10}),
        Op(kind, "d", key(), vec(0, 0, 9, 0), document="delta 2"),
        Op(kind, "a", key(), vec(0, 0, 0, 9)),
        upsert("e", vec(5, 5, 5, 5)),
    ]
    with persistence.open_collection(coll, "coll") as (_, col):
        replay.apply_ops(col, change)
        assert ids_in_order(col) == ["a", "b", "c", "d", "e"]
    with persistence.open_collection(coll, "coll", flush_on_exit=False) as (_, col):
        got = reads.read_all(col)
        assert list(got) == ["a", "b", "c", "d", "e"]
        assert ids_in_order(col, where={"n": {"$gte": 1}}) == ["b", "c", "d"]
        # Documents, URIs and the full-text index moved with the rows.
        assert ids_in_order(col, where_document={"$contains": "delta 2"}) == ["d"]
        assert ids_in_order(col, where_document={"$contains": "alpha"}) == ["a"]
        assert [got[r].uri for r in "abcd"] == ["ua", "ub", "uc", "ud"]
        assert got["b"].metadata == {"n": 10} and got["d"].document == "delta 2"
        hit = col.query(query_embeddings=[[0.0, 9.0, 0.0, 0.0]], n_results=1)
        assert hit["ids"] == [["b"]] and hit["distances"] == [[0.0]]
        # The moved rows still take later writes like any other.
        replay.apply_ops(col, [update("b", document="bravo 2"), delete("c"), add("c")])
        assert ids_in_order(col) == ["a", "b", "d", "e", "c"]
        assert ids_in_order(col, where_document={"$contains": "bravo 2"}) == ["b"]


def test_vector_replacement_of_the_last_rows_keeps_order(coll: Path) -> None:
    # Deleting the highest rows frees them, so the re-adds land on row ids the
    # moved records themselves want: move_rows must handle the overlap.
    apply(coll, [add(r) for r in "abcd"])
    with persistence.open_collection(coll, "coll") as (_, col):
        replay.apply_ops(col, [update("d", vec(0, 0, 0, 1)), update("c", vec(0, 0, 1, 0))])
        assert ids_in_order(col) == ["a", "b", "c", "d"]
        replay.apply_ops(col, [update(r, vec(1, 1, 1, i)) for i, r in enumerate("dcba")])
        assert ids_in_order(col) == ["a", "b", "c", "d"]
    with persistence.open_collection(coll, "coll") as (_, col):
        got = reads.read_all(col)
    assert [got[r].embedding.tolist() for r in "abcd"] == [[1, 1, 1, i] for i in (3, 2, 1, 0)]


def test_move_rows_refuses_taken_or_missing_rows(coll: Path) -> None:
    apply(coll, [add(r) for r in "abc"])
    with persistence.open_collection(coll, "coll") as (_, col):
        cid = str(col.id)
        rows = persistence.row_ids(coll, cid, ["a", "b", "c"])
        with pytest.raises(RuntimeError, match="held by other records"):
            persistence.move_rows(coll, cid, {"c": rows["a"]})
        with pytest.raises(RuntimeError, match="missing records"):
            persistence.move_rows(coll, cid, {"zz": 99})
        assert ids_in_order(col) == ["a", "b", "c"]  # rolled back: nothing moved


# ---------------------------------------------------------------- reads as Chroma answers


def test_query_by_missing_id_raises_as_chroma_does(coll: Path) -> None:
    from chromasnap.engine.errors import Internal

    with persistence.open_collection(coll, "coll") as (_, col):
        # Never written: no index, so no error (chromadb answers empty).
        assert not reads.has_index(col)
        got = reads.query_raw(col, [[1.0, 0, 0, 0]], 1, ids=["ghost"])
        assert got["ids"] == [[]]
        replay.apply_ops(col, [add("a"), add("b"), delete("b")])
        assert reads.has_index(col)
        for ids in (["a", "ghost"], ["b"]):  # missing, or deleted
            with pytest.raises(Internal) as e:
                reads.query_raw(col, [[1.0, 0, 0, 0]], 1, ids=ids)
            assert e.value.message == reads.ID_NOT_FOUND == str(reads.id_not_found())
        # A filter narrows the ids first: no error.
        got = reads.query_raw(col, [[1.0, 0, 0, 0]], 1, ids=["a", "ghost"], where={"k": {"$ne": 1}})
        assert got["ids"] == [["a"]]
        replay.apply_ops(col, [delete("a")])
        assert reads.has_index(col)  # empty again, but the index stays
