"""Point-in-time recovery (issue #10): the state at any time in the window, on real parts.

A seeded multi-writer history with late deltas is folded by real compactions
(segments, tier merges and full versions mixed) with a recovery window, and
grace 0 so that nothing but the window keeps a delta. Restoring at many times
must equal the reference model of the writes at or before each time, with
the same compaction batches.

Write times are what the window and tombstones are judged by; the model's
histories get times one day *ahead* (so no tombstone is older than the grace
period, which the reference model does not know), and the anchor test adds
older, insert-only writes before them.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chromasnap.cli.importexport import ImportError_, export_at
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import NoLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.compactor.policy import MergePolicy
from chromasnap.engine import persistence, reads
from chromasnap.engine.merge import Record
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.storage import deltas, recovery
from chromasnap.storage.store import ObjectStore, open_store
from dataplane import (
    SETTINGS,
    compactor_env,
    current_records,
    put_delta,
    run_compactor_process,
)
from minio_server import MinioServer, s3_env
from modelgen import (
    Delta,
    PureState,
    arrival_batches,
    random_history,
    records_equal,
    reference_state,
)

DAY_US = 86_400_000_000
#: Fulls, segments and tier merges all happen within a few batches.
MIXED = MergePolicy(segments_per_tier=2, full_merge_ratio=2.0, shadowed_ratio=1e9, floor_ops=4)


def shifted(history: list[Delta], days: float = 1.0) -> list[Delta]:
    """The same history ``days`` from now instead of in 1970."""
    offset = int(time.time() * 1e6 + days * DAY_US) - 1_000_000
    out = []
    for d in history:
        ts = int(d.name[:17]) + offset
        ops = [replace(op, key=op.key._replace(ts_us=op.key.ts_us + offset)) for op in d.ops]
        out.append(Delta(f"{ts:017d}-{d.writer}.arrow", d.writer, ops))
    return out


def compactor(store: ObjectStore, cache: Path, window_s: float) -> Compactor:
    return Compactor(store, SETTINGS, NoLock(), CompactorOptions(
        identity="pitr", cache_dir=cache, delta_grace_seconds=0, retain_snapshots=1,
        policy=MIXED, recovery_window_seconds=window_s,
        segment_index_min_rows=1))  # indexed segments: restores must not depend on them


def restored_records(store: ObjectStore, at_us: int, tmp: Path) -> dict[str, Record]:
    dest = tmp / f"at-{at_us}"
    export_at(store, dest, datetime.fromtimestamp(at_us / 1e6, UTC))
    with persistence.open_collection(dest, SETTINGS.name, flush_on_exit=False) as (_, col):
        raw = reads.read_all(col)
    return {rid: Record(rid, r.embedding, r.document, r.metadata or None, r.uri)
            for rid, r in raw.items()}


def at_or_before(batches: list[list[Delta]], at_us: int) -> list[list[Delta]]:
    return [[Delta(d.name, d.writer, [op for op in d.ops if op.key.ts_us <= at_us])
             for d in batch] for batch in batches]


@pytest.mark.parametrize("seed", range(3))
def test_restore_at_any_time_in_the_window_equals_the_model(
    store: ObjectStore, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    batches = arrival_batches(rng, shifted(random_history(rng, n_ops=90)))
    c = compactor(store, tmp_path / "cache", window_s=7 * 86_400)
    assert c.run().result == "succeeded"  # the empty first version
    kinds = set()
    for batch in batches:
        for d in batch:
            put_delta(store, d)
        res = c.run()
        assert res.result == "succeeded", res.message
        kinds.add((res.kind, res.segments_merged > 0))
    assert {k for k, _ in kinds} == {"full", "segment"}
    times = sorted({op.key.ts_us for b in batches for d in b for op in d.ops})
    picks = [times[0] - 1, *rng.sample(times, 10), times[-1]]
    for at in picks:
        want, _ = reference_state(at_or_before(batches, at))
        got = restored_records(store, at, tmp_path)
        assert records_equal(got, want), f"seed {seed}, at {at}"
    # Deltas not yet compacted count too: the latest time sees a pending write.
    late = Delta(f"{times[-1] + 5:017d}-w9.arrow", "w9", [
        replace(batches[0][0].ops[0], key=batches[0][0].ops[0].key._replace(
            ts_us=times[-1] + 5, writer="w9", seq=1))])
    put_delta(store, late)
    want, _ = reference_state([*batches, [late]])
    assert records_equal(restored_records(store, times[-1] + 5, tmp_path), want)


def test_restore_decides_filtered_deletes_as_the_compactor_did(
    store: ObjectStore, tmp_path: Path
) -> None:
    """Issue 17, 1: a restore replays delete(where=...) on the records as they were then."""
    rng = random.Random(7)
    history = shifted(random_history(rng, writers=2, n_ops=80, ids=8, filtered_deletes=0.1))
    batches = arrival_batches(rng, history)
    c = compactor(store, tmp_path / "cache", window_s=7 * 86_400)
    assert c.run().result == "succeeded"  # the empty first version
    for batch in batches:
        for d in batch:
            put_delta(store, d)
        assert c.run().result == "succeeded"
    times = sorted({op.key.ts_us for b in batches for d in b for op in d.ops
                    if op.kind is OpKind.DELETE_WHERE})
    for at in [t + dt for t in rng.sample(times, 4) for dt in (-1, 0)]:
        model = PureState()
        for batch in at_or_before(batches, at):
            model.compact([op for d in batch for op in d.ops])
        assert records_equal(restored_records(store, at, tmp_path), model.records), at


def test_a_time_before_the_window_is_a_clear_error(store: ObjectStore, tmp_path: Path) -> None:
    rng = random.Random(9)
    batches = arrival_batches(rng, shifted(random_history(rng, n_ops=40)))
    c = compactor(store, tmp_path / "cache", window_s=0)  # no window: deltas go at once
    assert c.run().result == "succeeded"
    for batch in batches:
        for d in batch:
            put_delta(store, d)
        assert c.run().result == "succeeded"
    assert not list(store.list(deltas.DELTA_PREFIX))
    first = min(op.key.ts_us for b in batches for d in b for op in d.ops)
    with pytest.raises(ImportError_, match=r"outside the recovery window.*earliest time"):
        restored_records(store, first + 1, tmp_path)
    # The latest state is still there: the live version's own time.
    last = max(op.key.ts_us for b in batches for d in b for op in d.ops)
    want, _ = reference_state(batches)
    assert records_equal(restored_records(store, last, tmp_path), want)


def test_plan_restore_picks_the_newest_usable_anchor() -> None:
    """Pure: the anchor must be at or before T *and* have its later deltas still there."""
    from chromasnap.storage import manifest as mf

    def m(v: str, parent: str | None, newest: int, applied: list[str]) -> mf.Manifest:
        return mf.Manifest.model_validate({
            "version": v, "seq": int(v[:10]), "parent": parent, "chromadb_version": "1.5.9",
            "collection": {"id": "c", "settings": SETTINGS.model_dump()},
            "record_count": 0, "byte_size": 0, "files": [], "deltas": applied,
            "created_at": datetime.now(UTC).isoformat(), "compactor": "t",
            "newest_write_us": newest})

    v1 = m("0000000001-a", None, 10, ["d1"])
    v2 = m("0000000002-a", v1.version, 20, ["d1", "d2"])
    v3 = m("0000000003-a", v2.version, 30, ["d1", "d2", "d3"])
    chain = [v3, v2, v1]
    assert recovery.plan_restore(chain, True, {"d1", "d2", "d3"}, 25) == (1, [["d3"]])
    assert recovery.plan_restore(chain, True, {"d1", "d2", "d3"}, 5) == (
        None, [["d1"], ["d2"], ["d3"]])
    # d2 is gone: only v2 or later can anchor a restore.
    with pytest.raises(recovery.OutsideRecoveryWindow, match=r"earliest time .*00:00:00\.00002"):
        recovery.plan_restore(chain, True, {"d1", "d3"}, 15)


def test_the_window_keeps_what_it_needs_and_no_more(store: ObjectStore, tmp_path: Path) -> None:
    """Old writes (10 days ago) fall out of a 7-day window; recent ones stay restorable."""
    rng = random.Random(5)
    old_ops = [replace(op, kind=OpKind.UPSERT, id=f"old{i}")
               for i, op in enumerate(op for d in random_history(rng, n_ops=30) for op in d.ops
                                      if op.embedding is not None)]
    old: list[Delta] = []
    base_old = int(time.time() * 1e6) - 10 * DAY_US
    for i, o in enumerate(old_ops[:6]):
        ts = base_old + i * 1000
        old.append(Delta(f"{ts:017d}-w0.arrow", "w0",
                         [replace(o, key=OpKey(ts, "w0", 1))]))
    recent_batches = arrival_batches(rng, shifted(random_history(rng, n_ops=40)))
    batches = [[d] for d in old] + recent_batches
    c = compactor(store, tmp_path / "cache", window_s=7 * 86_400)
    assert c.run().result == "succeeded"
    for batch in batches:
        for d in batch:
            put_delta(store, d)
        assert c.run().result == "succeeded"
    left = {o.key[len(deltas.DELTA_PREFIX):] for o in store.list(deltas.DELTA_PREFIX)}
    # The window's anchor (the last old version) folded the old deltas: they went;
    # every delta folded after it stays.
    assert not left & {d.name for d in old}
    assert {d.name for b in recent_batches for d in b} <= left
    for at in [base_old + 5 * 1000, *sorted({op.key.ts_us for b in recent_batches
                                              for d in b for op in d.ops})[::7]]:
        want, _ = reference_state(at_or_before(batches, at))
        assert records_equal(restored_records(store, at, tmp_path), want), at
    with pytest.raises(ImportError_, match="outside the recovery window"):
        restored_records(store, base_old + 2 * 1000, tmp_path)


# -- bootstrap: a new collection from another one's state --------------------------------


def _listing(store: ObjectStore) -> dict[str, str]:
    return {o.key: o.etag for o in store.list("")}


@pytest.mark.minio
def test_bootstrap_from_another_bucket_at_a_version_a_time_or_the_latest(
    minio: MinioServer, tmp_path: Path
) -> None:
    """``chromasnap compactor`` with CHROMASNAP_BOOTSTRAP_* (what the operator renders from
    spec.bootstrap.from): version 1 of the new collection is the source's state; the
    source is never written; a bad point is a clear failure."""
    src_url = minio.new_bucket_url()
    src = open_store(src_url, minio.endpoint)
    rng = random.Random(3)
    batches = arrival_batches(rng, shifted(random_history(rng, n_ops=60)))
    c = compactor(src, tmp_path / "src-cache", window_s=7 * 86_400)
    assert c.run().result == "succeeded"
    versions = []
    for batch in batches:
        for d in batch:
            put_delta(src, d)
        res = c.run()
        versions.append((res.version, batch))
    before = _listing(src)
    mid_version, _ = versions[len(versions) // 2]
    mid_batches = [b for _, b in versions[: len(versions) // 2 + 1]]
    times = sorted({op.key.ts_us for b in batches for d in b for op in d.ops})
    at = times[len(times) // 3]
    # The source's own keys, given as the bootstrap keys; the target uses the default chain.
    keys = {"CHROMASNAP_BOOTSTRAP_AWS_ACCESS_KEY_ID": s3_env()["AWS_ACCESS_KEY_ID"],
            "CHROMASNAP_BOOTSTRAP_AWS_SECRET_ACCESS_KEY": s3_env()["AWS_SECRET_ACCESS_KEY"]}
    cases = [
        ({"CHROMASNAP_BOOTSTRAP_VERSION": mid_version}, reference_state(mid_batches)[0]),
        ({"CHROMASNAP_BOOTSTRAP_AT": datetime.fromtimestamp(at / 1e6, UTC).isoformat()},
         reference_state(at_or_before(batches, at))[0]),
        ({}, reference_state(batches)[0]),
    ]
    for i, (point, want) in enumerate(cases):
        url = minio.new_bucket_url()
        env = compactor_env(url, minio.endpoint, tmp_path / f"t{i}",
                            CHROMASNAP_BOOTSTRAP_URL=src_url,
                            CHROMASNAP_BOOTSTRAP_S3_ENDPOINT_URL=minio.endpoint,
                            CHROMASNAP_RESULT_FILE=str(tmp_path / f"r{i}.json"),
                            **keys, **point)
        done = run_compactor_process(env)
        assert done.returncode == 0, done.stderr[-2000:]
        target = open_store(url, minio.endpoint)
        man, got = current_records(target, tmp_path / f"check{i}")
        assert records_equal(got, want), point
        assert man.origin and man.origin.startswith(f"bootstrap:{src_url}")
        assert "SECRET" not in done.stderr and s3_env()["AWS_SECRET_ACCESS_KEY"] not in (
            done.stderr + (tmp_path / f"r{i}.json").read_text())
        # A second run does not bootstrap again: the live collection is never rolled back.
        put_delta(target, Delta(f"{times[-1] + 50:017d}-w7.arrow", "w7", [
            Op(OpKind.DELETE, next(iter(got), "x"), OpKey(times[-1] + 50, "w7", 1))]))
        again = run_compactor_process(env)
        assert again.returncode == 0, again.stderr[-2000:]
        _, after = current_records(target, tmp_path / f"again{i}")
        assert len(after) == max(0, len(got) - 1)
    assert _listing(src) == before
    # A point the source cannot give: a clear failure, nothing published.
    url = minio.new_bucket_url()
    bad = run_compactor_process(compactor_env(
        url, minio.endpoint, tmp_path / "bad", CHROMASNAP_BOOTSTRAP_URL=src_url,
        CHROMASNAP_BOOTSTRAP_S3_ENDPOINT_URL=minio.endpoint,
        CHROMASNAP_BOOTSTRAP_VERSION="0000000099-deadbeef",
        CHROMASNAP_RESULT_FILE=str(tmp_path / "bad.json")))
    assert bad.returncode != 0
    result = json.loads((tmp_path / "bad.json").read_text())
    assert result["reason"] == "BootstrapFailed" and "0000000099-deadbeef" in result["message"]
    assert not list(open_store(url, minio.endpoint).list(""))
