"""The soak test's reference model and statistics (pure)."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.soakmodel import (
    DELETE,
    UPDATE,
    UPSERT,
    Model,
    Windows,
    Write,
    embedding,
    next_write,
    observed_state,
    slope_per_hour,
)


def w(seq: int, kind: str, rid: str = "id0", group: int = 1) -> Write:
    return Write(0, seq, kind, rid, group)


def test_acknowledged_history_allows_exactly_one_state() -> None:
    m = Model.empty()
    for write in (w(1, UPSERT), w(2, UPDATE, group=5), w(3, UPDATE, "id2"), w(4, UPSERT, "id4"),
                  w(5, DELETE, "id4")):
        m.record(write, acknowledged=True)
    want = {"id0": ((0, 1), (5, 0, 2)), "id2": None, "id4": None}
    assert m.ruled_out(want) == []
    assert m.ruled_out({"id0": ((0, 1), (1, 0, 1))}) == ["id0"]  # the update was lost
    assert m.ruled_out({**want, "id4": ((0, 4), (1, 0, 4))}) == ["id4"]  # a delete was lost
    assert m.ruled_out({**want, "id9": ((0, 9), (1, 0, 9))}) == ["id9"]  # never written


def test_a_failed_write_may_or_may_not_have_happened() -> None:
    m = Model.empty()
    m.record(w(1, UPSERT), acknowledged=True)
    m.record(w(2, DELETE), acknowledged=False)
    assert m.ruled_out({"id0": ((0, 1), (1, 0, 1))}) == []
    assert m.ruled_out({}) == []
    # An acknowledged update then applies to whichever state there was.
    m.record(w(3, UPDATE, group=7), acknowledged=True)
    assert m.ruled_out({"id0": ((0, 1), (7, 0, 3))}) == []
    assert m.ruled_out({}) == []
    assert m.ruled_out({"id0": ((0, 1), (1, 0, 1))}) == ["id0"]
    assert (m.acknowledged, m.uncertain) == (2, 1)


def test_observed_records_are_read_back_to_states() -> None:
    vec = embedding(1, 7, 16)
    assert observed_state("id3", "id3:1:7", {"g": 2, "c": 1, "s": 9}, vec.tolist(), 16) == \
        ((1, 7), (2, 1, 9))
    assert "vector" in str(observed_state("id3", "id3:1:7", {"g": 2, "c": 1, "s": 9},
                                          embedding(1, 8, 16), 16))
    assert "document" in str(observed_state("id3", "id4:1:7", {}, vec, 16))
    assert "metadata" in str(observed_state("id3", "id3:1:7", {"g": 2}, vec, 16))


def test_clients_own_disjoint_ids_and_the_mix_settles_near_five_sevenths_live() -> None:
    rng = [np.random.default_rng(c) for c in range(2)]
    writes = [next_write(rng[c], c, 2, s) for s in range(3000) for c in range(2)]
    assert all(int(x.rid[2:]) % 2 == x.client for x in writes)
    kinds = [x.kind for x in writes]
    assert 0.45 < kinds.count(UPSERT) / len(kinds) < 0.55


def test_slope_and_windows() -> None:
    assert slope_per_hour([(0, 100.0), (1800, 110.0), (3600, 120.0)]) == pytest.approx(20.0)
    assert slope_per_hour([(0, 1.0)]) is None
    win = Windows.for_run(70, 10)
    assert (win.warmup_s, win.window_s, win.end_s) == (600, 600, 4200)
    assert win.first(700) and not win.first(1300) and win.last(4000) and not win.last(3500)
    short = Windows.for_run(12, 2)
    assert short.window_s == 200
