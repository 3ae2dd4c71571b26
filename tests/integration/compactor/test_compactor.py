"""Compaction on real chromadb and a real object store (local dir and MinIO)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chromasnap.compactor.compaction import QUARANTINE_PREFIX
from chromasnap.compactor.lock import LocalLock
from chromasnap.config import CollectionSettings, Space
from chromasnap.engine import rebuild
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.storage import deltas, pointer, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import ObjectStore, open_store
from dataplane import (
    FULL,
    SEGMENTS,
    SETTINGS,
    compactor,
    compactor_env,
    current_records,
    put_delta,
    run_compactor_process,
)
from modelgen import (
    Delta,
    PureState,
    arrival_batches,
    random_history,
    records_equal,
    reference_state,
)


def upserts(writer: str, ts: int, ids: list[str], tag: str) -> Delta:
    rng = np.random.default_rng(ts)
    ops = [
        Op(
            OpKind.UPSERT,
            rid,
            OpKey(ts, writer, i + 1),
            rng.standard_normal(4).astype(np.float32),
            f"{tag} {rid}",
            {"tag": tag},
        )
        for i, rid in enumerate(ids)
    ]
    return Delta(f"{ts:017d}-{writer}.arrow", writer, ops)


def test_first_run_publishes_empty_version_1(store: ObjectStore, tmp_path: Path) -> None:
    res = compactor(store, tmp_path / "c").run()
    assert (res.result, res.reason) == ("succeeded", "Compacted")
    man, recs = current_records(store, tmp_path)
    assert man.seq == 1 and man.parent is None and recs == {}
    assert man.collection.settings == SETTINGS
    # Nothing new: the next run says so and changes nothing.
    again = compactor(store, tmp_path / "c").run()
    assert (again.result, again.reason) == ("skipped", "NothingToDo")
    assert pointer.read(store).pointer.version == man.version  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", ["default", "segments", "full"])
def test_seeded_model_random_batches_on_chromadb(
    store_url: str, store_endpoint: str | None, tmp_path: Path, policy: str
) -> None:
    """Random multi-writer histories, late deltas, random compaction batches == the model.

    Under every merge policy: segments only (tier merges included), full
    versions only, and the default mix.
    """
    chosen = {"default": None, "segments": SEGMENTS, "full": FULL}[policy]
    for seed in range(4):
        root = open_store(f"{store_url.rstrip('/')}/{policy}{seed}", store_endpoint)
        rng = random.Random(seed)
        history = random_history(rng, n_ops=80)
        batches = arrival_batches(rng, history)
        # Model timestamps are in 1970: a huge grace keeps their tombstones.
        c = compactor(root, tmp_path / f"cache{policy}{seed}", grace=1e10, policy=chosen)
        superseded = 0
        for batch in batches:
            for d in batch:
                put_delta(root, d)
            res = c.run()
            assert res.result == "succeeded", res.message
            superseded += res.superseded_ops
        want, want_sup = reference_state(batches)
        man, got = current_records(root, tmp_path / f"check{policy}{seed}")
        assert man.record_count == len(want), f"seed {seed}: record count"
        assert records_equal(got, want), f"seed {seed}"
        assert superseded == want_sup
        assert man.record_count == len(want)
        assert sorted(man.deltas) == sorted(d.name for d in history)


@pytest.mark.parametrize("policy", ["default", "segments", "full"])
def test_filtered_deletes_fold_on_chromadb_as_the_pure_model(
    store_url: str, store_endpoint: str | None, tmp_path: Path, policy: str
) -> None:
    """Issue 17, 1: filtered deletes, late deltas included, decided on chromadb's records.

    The compactor finds matching records with chromadb's ``get(where=...)``
    on its copy; the pure model with ``filters.py`` on a dict. A run that
    folds a filtered delete is a full run, whatever the policy.
    """
    chosen = {"default": None, "segments": SEGMENTS, "full": FULL}[policy]
    for seed in range(3):
        root = open_store(f"{store_url.rstrip('/')}/{policy}{seed}", store_endpoint)
        rng = random.Random(seed)
        history = random_history(rng, writers=2, n_ops=70, ids=8, filtered_deletes=0.1)
        batches = arrival_batches(rng, history)
        c = compactor(root, tmp_path / f"cache{policy}{seed}", grace=1e10, policy=chosen)
        model = PureState()
        kinds = set()
        for batch in batches:
            for d in batch:
                put_delta(root, d)
            res = c.run()
            assert res.result == "succeeded", res.message
            filtered = any(op.kind is OpKind.DELETE_WHERE for d in batch for op in d.ops)
            assert res.kind == "full" or not filtered
            kinds.add(res.kind)
            model.compact([op for d in batch for op in d.ops])
            man, got = current_records(root, tmp_path / f"check{policy}{seed}-{man_seq(root)}")
            assert records_equal(got, model.records), f"seed {seed}, {res.version}"
            assert man.record_count == len(model.records)
        if policy == "segments":
            assert kinds == {"full", "segment"}


def man_seq(store: ObjectStore) -> int:
    cur = pointer.read(store).pointer
    assert cur is not None
    return mf.version_seq(cur.version)


def test_conditional_write_fences_a_racing_compactor(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_delta(store, upserts("w1", 1000, ["a", "b"], "one"))
    assert compactor(store, tmp_path / "seed").run().result == "succeeded"
    base = pointer.read(store).pointer
    assert base is not None
    put_delta(store, upserts("w1", 2000, ["a", "c"], "two"))

    a = compactor(store, tmp_path / "a", identity="compactor-a")
    b = compactor(store, tmp_path / "b", identity="compactor-b")
    real_swap = pointer.swap
    b_result = []

    def swap_after_b_wins(*args: object, **kw: object) -> str:
        # A has read the pointer and uploaded its snapshot; B now runs to completion first.
        monkeypatch.setattr(pointer, "swap", real_swap)
        b_result.append(b.run())
        return real_swap(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pointer, "swap", swap_after_b_wins)
    a_result = a.run()
    assert b_result[0].result == "succeeded"
    assert (a_result.result, a_result.reason) == ("skipped", "Fenced")
    now = pointer.read(store).pointer
    assert now is not None and now.version == b_result[0].version
    # Exactly one pointer change from the base: A's snapshot is gone, B's parent is the base.
    assert snapshots.load_manifest(store, now.manifest).parent == base.version
    assert not list(store.list(mf.snapshot_prefix(a_result.version or "none")))
    versions = {o.key.split("/")[1] for o in store.list(mf.SNAPSHOT_PREFIX)}
    assert versions == {base.version, now.version}
    _, recs = current_records(store, tmp_path)
    assert recs["a"].document == "two a" and set(recs) == {"a", "b", "c"}


def test_local_lock_skips_a_second_compactor(tmp_path: Path) -> None:
    store = open_store((tmp_path / "bucket").as_uri())
    held = LocalLock(tmp_path / "lock", "holder-1")
    assert held.acquire()
    res = compactor(store, tmp_path / "c", lock=LocalLock(tmp_path / "lock", "holder-2")).run()
    assert (res.result, res.reason, res.lock_contended) == ("skipped", "LockHeld", True)
    assert "holder-1" in res.message
    held.release()
    assert (
        compactor(store, tmp_path / "c", lock=LocalLock(tmp_path / "lock", "h3")).run().result
        == "succeeded"
    )


def test_corrupt_delta_is_quarantined_and_the_rest_is_folded(
    store: ObjectStore, tmp_path: Path
) -> None:
    good = put_delta(store, upserts("w1", 1000, ["a"], "good"))
    bad = "00000000000001500-w2.arrow"
    blob = bytearray(deltas.encode(upserts("w2", 1500, ["b"], "bad").ops, 4, "w2"))
    blob[40] ^= 0xFF
    store.put(deltas.DELTA_PREFIX + bad, bytes(blob))
    res = compactor(store, tmp_path / "c").run()
    assert res.result == "succeeded" and res.corrupt_deltas == [bad]
    man, recs = current_records(store, tmp_path)
    assert set(recs) == {"a"} and man.deltas == [good]
    assert [o.key for o in store.list(QUARANTINE_PREFIX)] == [QUARANTINE_PREFIX + bad]
    assert not list(store.list(deltas.DELTA_PREFIX + bad))


def test_corrupt_base_snapshot_is_refused(store: ObjectStore, tmp_path: Path) -> None:
    put_delta(store, upserts("w1", 1000, ["a"], "one"))
    assert compactor(store, tmp_path / "c1").run().result == "succeeded"
    cur = pointer.read(store).pointer
    assert cur is not None
    man = snapshots.load_manifest(store, cur.manifest)
    victim = max(man.files, key=lambda f: f.size)
    data = bytearray(store.get(man.prefix + victim.path).data)
    data[len(data) // 2] ^= 0xFF
    store.put(man.prefix + victim.path, bytes(data))
    put_delta(store, upserts("w1", 2000, ["b"], "two"))
    # A full run without the base in its cache must download and verify it.
    res = compactor(store, tmp_path / "fresh-cache", policy=FULL).run()
    assert (res.result, res.reason) == ("failed", "CorruptSnapshot")
    assert victim.path in res.message
    assert pointer.read(store).pointer == cur


@pytest.mark.parametrize("victim_file", [mf.OPS_FILE, mf.VERSIONS_FILE])
def test_corrupt_segment_is_refused(store: ObjectStore, tmp_path: Path,
                                    victim_file: str) -> None:
    """A damaged segment stops every run that needs it; the pointer stays put."""
    put_delta(store, upserts("w1", 1000, ["a"], "one"))
    assert compactor(store, tmp_path / "c1").run().kind == "full"
    put_delta(store, upserts("w1", 2000, ["b"], "two"))
    assert compactor(store, tmp_path / "c1").run().kind == "segment"
    cur = pointer.read(store).pointer
    assert cur is not None
    seg = snapshots.load_manifest(store, cur.manifest).segments[0]
    data = bytearray(store.get(seg.prefix + victim_file).data)
    data[len(data) // 2] ^= 0xFF
    store.put(seg.prefix + victim_file, bytes(data))
    put_delta(store, upserts("w1", 3000, ["c"], "three"))
    # A segment run reads older segments' version tables, not their writes.
    for policy in (FULL, SEGMENTS) if victim_file == mf.VERSIONS_FILE else (FULL,):
        res = compactor(store, tmp_path / "fresh", policy=policy).run()
        assert (res.result, res.reason) == ("failed", "CorruptSnapshot"), policy
        assert seg.name in res.message
        assert pointer.read(store).pointer == cur


@pytest.mark.parametrize("policy", ["full", "segments"])
def test_retention_and_delta_cleanup(store: ObjectStore, tmp_path: Path, policy: str) -> None:
    """Only what the retained versions reach stays: their manifests, bases and segments."""
    chosen = {"full": FULL, "segments": SEGMENTS}[policy]
    c = compactor(store, tmp_path / "c", grace=0, retain=2, policy=chosen)
    for i in range(7):
        put_delta(store, upserts("w1", 1000 * (i + 1), [f"id{i}"], f"v{i}"))
        res = c.run()
        assert res.result == "succeeded"
    versions = {o.key.split("/")[1] for o in store.list(mf.SNAPSHOT_PREFIX)}
    segs = {o.key.split("/")[1] for o in store.list(mf.SEGMENT_PREFIX)}
    cur = pointer.read(store).pointer
    assert cur is not None
    live = snapshots.load_manifest(store, cur.manifest)
    parent = snapshots.load_manifest(store, mf.snapshot_prefix(live.parent or "") + "manifest.json")
    assert versions == {live.version, parent.version, live.base_version, parent.base_version}
    assert segs == {*live.segment_names, *parent.segment_names}
    if policy == "segments":
        # Seven runs at tiers of three: the first wrote the base, then tiers merged.
        assert live.base_version != live.version and 1 <= len(live.segments) < 6
    # Every delta was applied and then removed; the state still has all four records.
    assert not [o for o in store.list(deltas.DELTA_PREFIX)]
    _, recs = current_records(store, tmp_path)
    assert set(recs) == {f"id{i}" for i in range(7)}


CRASH_POINTS = [
    "lock",
    "read_pointer",
    "list_deltas",
    "fetch_base",
    "apply",
    "upload",
    "upload:mid",
    "swap",
    "cleanup",
    "cleanup:mid",
]


@pytest.mark.parametrize("kind", ["segment", "full"])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_at_every_step_loses_nothing(
    point: str, kind: str, store_url: str, store_endpoint: str | None, tmp_path: Path
) -> None:
    """A run killed at any step, writing a segment or a full version, loses nothing."""
    policy = {"CHROMASNAP_MERGE_FULL_RATIO": "0"} if kind == "full" else {}
    store = open_store(store_url, store_endpoint)
    first = [upserts("w1", 1000, ["a", "b", "c"], "one"), upserts("w2", 1001, ["d"], "one")]
    for d in first:
        put_delta(store, d)
    cache = tmp_path / "cache"
    assert run_compactor_process(compactor_env(store_url, store_endpoint, cache)).returncode == 0
    second = [upserts("w1", 2000, ["a", "e"], "two"), upserts("w2", 2001, ["b"], "two")]
    for d in second:
        put_delta(store, d)
    before = pointer.read(store)

    killed = run_compactor_process(
        compactor_env(store_url, store_endpoint, cache, CHROMASNAP_TEST_KILL_AT=point, **policy)
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # The pointer is either unchanged or on a complete, verifiable snapshot.
    after_crash = pointer.read(store)
    moved = after_crash.etag != before.etag
    _, recs = current_records(store, tmp_path / "after-crash")
    assert recs["a"].document == ("two a" if moved else "one a")
    result_file = tmp_path / "result.json"
    recovered = run_compactor_process(
        compactor_env(store_url, store_endpoint, cache, CHROMASNAP_RESULT_FILE=str(result_file),
                      **policy)
    )
    assert recovered.returncode == 0, recovered.stderr[-2000:]
    result = json.loads(result_file.read_text())
    man, recs = current_records(store, tmp_path / "final")
    assert (man.base_version == man.version) == (kind == "full")
    want, _ = reference_state([first, second])
    assert records_equal(recs, want)
    # No delta applied twice: the recovery folds the second pair only if the crashed
    # run did not publish them, and no write is dropped as already applied.
    assert result["deltas_folded"] == (0 if moved else 2)
    assert result["superseded_ops"] == 0
    assert sorted(man.deltas) == sorted(set(man.deltas))


def test_racing_compactor_processes_change_the_pointer_once_per_base(
    store_url: str, store_endpoint: str | None, tmp_path: Path
) -> None:
    store = open_store(store_url, store_endpoint)
    put_delta(store, upserts("w1", 1000, ["a"], "one"))
    assert compactor(store, tmp_path / "seed").run().result == "succeeded"
    put_delta(store, upserts("w1", 2000, ["a", "b"], "two"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "chromasnap", "compactor"],
            env=compactor_env(store_url, store_endpoint, tmp_path / f"c{i}",
                              CHROMASNAP_LOCK="none",
                              CHROMASNAP_RESULT_FILE=str(tmp_path / f"r{i}.json")),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    results = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(3)]
    by_base: dict[str | None, int] = {}
    for r in results:
        assert r["reason"] in ("Compacted", "Fenced", "NothingToDo"), r
        if r["reason"] == "Compacted":
            by_base[r["base_version"]] = by_base.get(r["base_version"], 0) + 1
    assert list(by_base.values()) == [1]  # exactly one winner, on the one base
    # Fenced runs removed their snapshots: every remaining version has its own depth.
    versions = {o.key.split("/")[1] for o in store.list(mf.SNAPSHOT_PREFIX)}
    seqs = [mf.version_seq(v) for v in versions]
    assert sorted(seqs) == sorted(set(seqs)) == [1, 2]
    _, recs = current_records(store, tmp_path)
    assert {k: r.document for k, r in recs.items()} == {"a": "two a", "b": "two b"}


@pytest.mark.parametrize("policy", ["full", "segments"])
def test_writes_that_create_nothing_on_a_collection_without_vectors(
    store: ObjectStore, tmp_path: Path, policy: str
) -> None:
    """Deletes and updates of ids that do not exist, before any vector was written.

    Chroma builds no HNSW index until the first vector, so it never saves one and
    the log of such writes stays "pending"; that used to fail every full run
    (IncompleteSnapshotError) and wedge the collection.
    """
    chosen = {"full": FULL, "segments": SEGMENTS}[policy]
    assert compactor(store, tmp_path / "c", policy=chosen).run().result == "succeeded"
    put_delta(store, Delta("00000000000002000-w1.arrow", "w1", [
        Op(OpKind.DELETE, "ghost", OpKey(2000, "w1", 1)),
        Op(OpKind.UPDATE, "ghost", OpKey(2000, "w1", 2), None, "doc"),
    ]))
    res = compactor(store, tmp_path / "c", policy=chosen).run()
    assert (res.result, res.record_count) == ("succeeded", 0), res.message
    put_delta(store, upserts("w1", 3000, ["a"], "one"))
    res = compactor(store, tmp_path / "c", policy=FULL).run()
    assert (res.result, res.record_count) == ("succeeded", 1), res.message
    _, recs = current_records(store, tmp_path / "check")
    assert set(recs) == {"a"}


@pytest.mark.parametrize("policy", ["full", "segments"])
def test_an_existing_collection_keeps_its_recorded_index_settings(
    store: ObjectStore, tmp_path: Path, policy: str
) -> None:
    """Issue #17: the default space became l2 (Chroma's). A collection created as cosine
    (say, before that, or a resource recreated without its space) stays cosine: its
    index was built so, and readers score its fresh tail by the manifest's space."""
    chosen = {"full": FULL, "segments": SEGMENTS}[policy]
    created = SETTINGS.model_copy(update={"space": Space.COSINE, "hnsw_m": 24})
    assert compactor(store, tmp_path / "c", settings=created).run().result == "succeeded"
    put_delta(store, upserts("w1", 2000, ["a", "b"], "one"))
    # What the configuration says now: the new default space and M, a new search ef.
    now = CollectionSettings(name=SETTINGS.name, dimension=SETTINGS.dimension, hnsw_search_ef=50)
    res = compactor(store, tmp_path / "c", settings=now, policy=chosen).run()
    assert res.result == "succeeded", res.message
    assert "kept the collection's recorded space 'cosine' (configured 'l2'), hnsw_m 24 " \
           "(configured 16)" in res.message
    man, recs = current_records(store, tmp_path / "check")
    assert set(recs) == {"a", "b"}
    assert man.collection.settings == created.model_copy(update={"hnsw_search_ef": 50})
    assert man.collection.model is not None
    assert man.collection.model["configuration_json"]["hnsw"]["space"] == "cosine"
    # Nothing to fold: still not silent about the difference.
    again = compactor(store, tmp_path / "c", settings=now, policy=chosen).run()
    assert again.reason == "NothingToDo" and "recorded space 'cosine'" in again.message


def test_another_collection_in_the_bucket_is_refused(store: ObjectStore, tmp_path: Path) -> None:
    """A different dimension or name is not the recorded collection: fail, fold nothing."""
    assert compactor(store, tmp_path / "c").run().result == "succeeded"
    before = pointer.read(store).pointer
    put_delta(store, upserts("w1", 2000, ["a"], "one"))
    for change, what in (({"dimension": 8}, "dimension 4 (configured 8)"),
                         ({"name": "other"}, "name 'docs' (configured 'other')")):
        res = compactor(store, tmp_path / "c", settings=SETTINGS.model_copy(update=change)).run()
        assert (res.result, res.reason) == ("failed", "SettingsMismatch"), res.message
        assert what in res.message
    assert pointer.read(store).pointer == before


@pytest.mark.parametrize("seed", [1, 2])
def test_full_runs_under_churn_keep_the_base_as_small_as_its_records(
    store: ObjectStore, tmp_path: Path, seed: int
) -> None:
    """Issue 20: chromadb never drops deleted or replaced vectors from its index, so a
    base carried forward grew with the history of writes. Every full run now rebuilds
    a base whose index is mostly history, and the state is still the model's."""
    rng = random.Random(seed)
    history = random_history(rng, n_ops=600, ids=15)
    batches = arrival_batches(rng, history, max_batch=6)
    c = compactor(store, tmp_path / "c", policy=FULL)
    assert c.run().result == "succeeded"
    rebuilt = 0
    for i, batch in enumerate(batches):
        for d in batch:
            put_delta(store, d)
        res = c.run()
        assert res.result == "succeeded", res.message
        rebuilt += res.base_rebuilt
        cur = pointer.read(store).pointer
        assert cur is not None
        man = snapshots.load_manifest(store, cur.manifest)
        base = tmp_path / f"base-{i}"
        snapshots.fetch(store, man, base)
        state = rebuild.index_state(base / mf.DB_DIR, man.collection.id)
        if state is not None:
            assert state.live == man.record_count
            assert state.dead == 0 or state.elements <= (1 + FULL.dead_ratio) * state.live, (
                i, state)
    assert rebuilt >= len(batches) // 4  # 600 writes on 15 ids: most runs kill elements
    _, recs = current_records(store, tmp_path / "final")
    want, _ = reference_state(batches)
    assert records_equal(recs, want)
