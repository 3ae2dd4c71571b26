"""The compactor's Lease lock (chromasnap.kubelease.LeaseLock) on the real API server.

Durations are short (3 s) so the expiry paths run in seconds; every wait is on a
condition with a timeout. A "paused" holder is simulated by blocking its API
calls (its renew thread stops exactly where a SIGSTOPped process would).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from chromasnap.compactor.lease import LeaseLock
from chromasnap.compactor.lock import LockLost
from kubeops import gone, maybe, wait_for

pytestmark = pytest.mark.cluster
DURATION = 3
LEASE = "docs-compactor"


class PausableApi:
    """Wraps CoordinationV1Api; while paused, every call blocks until resumed."""

    def __init__(self, api: client.CoordinationV1Api) -> None:
        self._api = api
        self._running = threading.Event()
        self._running.set()
        self.blocked = threading.Event()

    def pause(self) -> None:
        """Block subsequent calls."""
        self._running.clear()

    def resume(self) -> None:
        """Let blocked and later calls through."""
        self._running.set()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        target = getattr(self._api, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if not self._running.is_set():
                self.blocked.set()
                self._running.wait()
            return target(*args, **kwargs)

        return call


def holder(api: client.CoordinationV1Api, ns: str) -> str:
    lease: Any = api.read_namespaced_lease(LEASE, ns)
    return str(lease.spec.holder_identity or "")


def lost(lock: LeaseLock) -> bool:
    try:
        lock.check()
    except LockLost:
        return True
    return False


@pytest.fixture
def coordination(kube_api: Any) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(kube_api)


def make(api: Any, ns: str, identity: str) -> LeaseLock:
    return LeaseLock(ns, LEASE, identity, DURATION, api=api, observe_poll_s=0.1)


def test_two_compactors_one_wins_the_other_sees_renewals_and_gives_up(
    coordination: client.CoordinationV1Api, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    a, b = make(coordination, ns, "compactor-a"), make(coordination, ns, "compactor-b")
    assert a.acquire()
    try:
        assert holder(coordination, ns) == "compactor-a"
        t0 = time.monotonic()
        assert not b.acquire(), "a live holder keeps the lease"
        waited = time.monotonic() - t0
        # b gave up because it saw a renewal (every DURATION/3), not because it timed out
        assert waited < DURATION, f"b waited {waited:.1f}s"
        assert b.describe_holder() == "compactor-a"
        a.check()  # still held
        assert holder(coordination, ns) == "compactor-a"
    finally:
        a.release()
    assert holder(coordination, ns) == ""
    # an explicit release lets the next run in at once
    t0 = time.monotonic()
    assert b.acquire()
    assert time.monotonic() - t0 < 1.0
    b.release()


def test_a_paused_holder_is_taken_over_after_the_lease_duration_and_loses_the_lock(
    coordination: client.CoordinationV1Api, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    paused = PausableApi(coordination)
    a, b = make(paused, ns, "compactor-a"), make(coordination, ns, "compactor-b")
    assert a.acquire()
    try:
        before: Any = coordination.read_namespaced_lease(LEASE, ns)
        paused.pause()
        wait_for("a's renew loop to block", paused.blocked.is_set, timeout=DURATION * 2)
        t0 = time.monotonic()
        assert b.acquire(), "an expired lease is taken over"
        waited = time.monotonic() - t0
        assert waited >= DURATION - 0.5, f"taken after only {waited:.1f}s"
        after: Any = coordination.read_namespaced_lease(LEASE, ns)
        assert after.spec.holder_identity == "compactor-b"
        assert after.spec.lease_transitions == (before.spec.lease_transitions or 0) + 1
        # the paused holder wakes up: its next renewal finds another holder
        paused.resume()
        wait_for("the old holder to notice it lost the lease", lambda: lost(a),
                 timeout=DURATION * 3)
        with pytest.raises(LockLost):
            a.check()
        # releasing a lost lock must not free the new holder's lease
        a.release()
        assert holder(coordination, ns) == "compactor-b"
        b.check()
    finally:
        paused.resume()
        b.release()


def test_a_deleted_lease_is_noticed_by_its_holder_and_recreated_by_the_next(
    coordination: client.CoordinationV1Api, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    a, b = make(coordination, ns, "compactor-a"), make(coordination, ns, "compactor-b")
    assert a.acquire()
    try:
        coordination.delete_namespaced_lease(LEASE, ns)
        assert gone(lambda: coordination.read_namespaced_lease(LEASE, ns))
        wait_for("the holder to notice the deleted lease", lambda: lost(a),
                 timeout=DURATION * 3)
        assert maybe(lambda: coordination.read_namespaced_lease(LEASE, ns)) is None, (
            "a holder that lost its lease must not re-create it")
        assert b.acquire()
        assert holder(coordination, ns) == "compactor-b"
        a.release()  # a no-op: not ours any more
        assert holder(coordination, ns) == "compactor-b"
    finally:
        b.release()


def test_release_and_check_follow_the_holder(
    coordination: client.CoordinationV1Api, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    a = make(coordination, ns, "compactor-a")
    with pytest.raises(LockLost):
        a.check()  # never acquired
    assert a.acquire()
    a.release()
    assert lost(a)
    lease: Any = coordination.read_namespaced_lease(LEASE, ns)
    assert lease.spec.holder_identity in ("", None)
    assert lease.spec.lease_duration_seconds == DURATION


def test_taking_the_lease_keeps_its_labels_and_owner(
    coordination: client.CoordinationV1Api, cluster_namespace: str, kube_api: Any
) -> None:
    ns = cluster_namespace
    owner: Any = client.CoreV1Api(kube_api).create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    coordination.create_namespaced_lease(ns, client.V1Lease(
        metadata=client.V1ObjectMeta(
            name=LEASE, labels={"app.kubernetes.io/managed-by": "chromasnap-operator"},
            owner_references=[client.V1OwnerReference(
                api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)]),
        spec=client.V1LeaseSpec(lease_duration_seconds=DURATION)))
    a = make(coordination, ns, "compactor-a")
    assert a.acquire()
    a.release()
    lease: Any = coordination.read_namespaced_lease(LEASE, ns)
    assert lease.metadata.labels == {"app.kubernetes.io/managed-by": "chromasnap-operator"}
    assert [r.uid for r in lease.metadata.owner_references or []] == [owner.metadata.uid]
