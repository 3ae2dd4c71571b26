"""The fresh-read guarantee's pure rules: writer lease tables and reader freshness state.

The last test is a seeded randomized model: writers acknowledge deltas by the
lease rules while pushes and lease requests fail at random, and every read a
reader answers from memory must hold every delta acknowledged before it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from chromasnap.config import FreshnessTiming
from chromasnap.reader.freshness import FreshnessState
from chromasnap.storage.members import Registration
from chromasnap.writer.leases import Lease, LeaseTable

T = FreshnessTiming(lease_s=3.0, members_refresh_s=1.0, writer_stale_s=15.0,
                    members_window_s=2.0)


def reg(wid: str, etag: str = "e1") -> Registration:
    return Registration(wid, f"http://{wid}", etag)


def test_a_lease_is_renewed_in_its_epoch_and_a_lapsed_one_gets_a_new_epoch() -> None:
    table = LeaseTable(3.0)
    first = table.grant("r1", "http://r1", now=0.0)
    assert first is not None and first.until == 3.0
    again = table.grant("r1", "http://r1", now=2.0)
    assert again is not None and again.epoch == first.epoch and again.until == 5.0
    lapsed = table.grant("r1", "http://r1", now=6.0)
    assert lapsed is not None and lapsed.epoch != first.epoch
    moved = table.grant("r1", "http://r1-new", now=7.0)
    assert moved is not None and moved.epoch != lapsed.epoch


def test_a_reader_that_missed_a_push_drains_until_its_lease_ends() -> None:
    table = LeaseTable(3.0)
    lease = table.grant("r1", "http://r1", now=0.0)
    assert lease is not None
    assert table.failed(lease) == 3.0
    assert table.grant("r1", "http://r1", now=1.0) is None  # no renewal while draining
    assert [le.reader_id for le in table.holders(now=10.0)] == ["r1"]  # still awaited
    table.ended(lease)
    assert table.holders(now=10.0) == []
    fresh = table.grant("r1", "http://r1", now=11.0)
    assert fresh is not None and fresh.epoch != lease.epoch


def test_a_released_lease_is_no_longer_awaited() -> None:
    table = LeaseTable(3.0)
    table.grant("r1", "http://r1", now=0.0)
    table.release("r1")
    assert table.holders(now=1.0) == []


def test_holders_forget_leases_that_ended() -> None:
    table = LeaseTable(3.0)
    table.grant("r1", "http://r1", now=0.0)
    table.grant("r2", "http://r2", now=2.0)
    assert [le.reader_id for le in table.holders(now=4.0)] == ["r2"]


def state_with(*writers: str, now: float = 0.0) -> FreshnessState:
    st = FreshnessState(T, sync_after=now)
    st.listed({w: reg(w) for w in writers}, started=now, now=now)
    return st


def test_fast_needs_a_recent_member_list_every_lease_and_a_delta_list_after_the_epochs() -> None:
    st = state_with("w1", "w2", now=0.0)
    assert not st.fast(0.5, deltas_listed=0.4)  # no lease yet
    st.granted("w1", 1, sent=0.5, now=0.6)
    st.granted("w2", 7, sent=0.5, now=0.6)
    assert not st.fast(0.7, deltas_listed=0.4)  # the LIST predates the epochs
    assert st.fast(0.8, deltas_listed=0.7)
    assert not st.fast(2.1, deltas_listed=0.7)  # member list older than the window
    st.listed({"w1": reg("w1"), "w2": reg("w2")}, started=2.0, now=2.1)
    assert st.fast(2.2, deltas_listed=0.7)
    assert not st.fast(3.6, deltas_listed=0.7)  # leases ran out (sent + 3 s)


def test_a_new_epoch_means_a_new_delta_list() -> None:
    st = state_with("w1")
    st.granted("w1", 1, sent=0.0, now=0.1)
    assert st.fast(0.3, deltas_listed=0.2)
    st.granted("w1", 1, sent=1.0, now=1.1)  # renewal in the same epoch: nothing missed
    assert st.fast(1.2, deltas_listed=0.2)
    st.granted("w1", 2, sent=1.5, now=1.6)  # the writer let the lease end meanwhile
    assert not st.fast(1.7, deltas_listed=0.2)
    assert st.fast(1.8, deltas_listed=1.7)


def test_a_lost_lease_or_a_departed_writer_stops_answers_from_memory() -> None:
    st = state_with("w1", "w2")
    st.granted("w1", 1, sent=0.0, now=0.1)
    st.granted("w2", 1, sent=0.0, now=0.1)
    assert st.fast(0.5, deltas_listed=0.2)
    st.lost("w2")
    assert not st.fast(0.6, deltas_listed=0.2)
    st.listed({"w1": reg("w1")}, started=0.7, now=0.8)  # w2 deregistered
    assert not st.fast(0.9, deltas_listed=0.2)  # what w2 acknowledged needs a LIST
    assert st.fast(1.0, deltas_listed=0.85)


def test_a_writer_whose_registration_stops_changing_is_dropped_and_stays_dropped() -> None:
    st = state_with("w1", "w2")
    for t in (5.0, 10.0, 16.0):
        st.listed({"w1": reg("w1", f"e{t}"), "w2": reg("w2")}, started=t - 0.1, now=t)
    assert set(st.writers) == {"w1"}
    st.listed({"w1": reg("w1", "e17"), "w2": reg("w2")}, started=16.9, now=17.0)
    assert set(st.writers) == {"w1"}  # the same stale object does not come back
    st.listed({"w1": reg("w1", "e18"), "w2": reg("w2", "e2")}, started=17.9, now=18.0)
    assert set(st.writers) == {"w1", "w2"}  # renewed: alive after all, needs a lease again


# -- the randomized model ---------------------------------------------------------------


@dataclass
class SimReader:
    rid: str
    state: FreshnessState
    has: set[int] = field(default_factory=set)
    listed_at: float | None = None
    cut_off: bool = False  # pushes to it and its lease requests fail


@dataclass
class SimWriter:
    wid: str
    table: LeaseTable
    pending: list[tuple[float, int, list[Lease]]] = field(default_factory=list)


@pytest.mark.parametrize("seed", range(40))
def test_no_read_answered_from_memory_misses_an_acknowledged_delta(seed: int) -> None:
    rng = random.Random(seed)
    durable: dict[int, float] = {}  # delta -> when it became durable
    acked: dict[int, float] = {}  # delta -> when it was acknowledged
    writers = [SimWriter(f"w{i}", LeaseTable(T.lease_s)) for i in range(2)]
    readers = [SimReader(f"r{i}", FreshnessState(T, sync_after=0.0)) for i in range(2)]
    now, next_delta, fast_reads = 0.0, 0, 0
    for r in readers:
        r.state.listed({w.wid: reg(w.wid) for w in writers}, started=0.0, now=0.0)
    while now < 120.0:
        now += rng.uniform(0.01, 0.3)
        for w in writers:  # acknowledgements whose lease waits are over
            for due, d, drained in [p for p in w.pending if p[0] <= now]:
                acked[d] = due
                for le in drained:
                    w.table.ended(le)
            w.pending = [p for p in w.pending if p[0] > now]
        event = rng.random()
        r = rng.choice(readers)
        if event < 0.05:
            r.cut_off = not r.cut_off
        elif event < 0.35:  # a write: durable, pushed to every holder, then acknowledged
            w = rng.choice(writers)
            d, next_delta = next_delta, next_delta + 1
            durable[d] = now
            holders = w.table.holders(now)
            due = now
            for le in holders:
                target = next(x for x in readers if x.rid == le.reader_id)
                if not target.cut_off:
                    target.has.add(d)
                else:
                    due = max(due, w.table.failed(le) + 0.1)
            if due == now:
                acked[d] = now
            else:
                w.pending.append((due, d, [le for le in holders if le.draining]))
        elif event < 0.7:  # the reader's refresh step: LIST registrations, then leases
            started = now
            # Writers renew their registrations every 5 s (a new ETag each time).
            renewal = f"e{int(started // T.renew_s)}"
            now += 0.01
            r.state.listed({w.wid: reg(w.wid, renewal) for w in writers}, started, now)
            for w in writers:
                sent = now
                now += rng.uniform(0.0, 0.05)
                if r.cut_off:
                    continue
                lease = w.table.grant(r.rid, f"http://{r.rid}", now)
                if lease is None:
                    r.state.lost(w.wid)
                else:
                    r.state.granted(w.wid, lease.epoch, sent, now + rng.uniform(0.0, 0.05))
        elif event < 0.8:  # a delta LIST: every durable delta
            started = now
            r.has |= {d for d, t in durable.items() if t <= started}
            r.listed_at = started
        elif r.state.fast(now, r.listed_at):
            fast_reads += 1
            missing = {d for d, t in acked.items() if t < now} - r.has
            assert not missing, f"seed {seed}: {r.rid} at {now:.2f} misses {missing}"
    assert fast_reads > 0  # the rule does let reads through
