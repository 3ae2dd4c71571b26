"""The compactor lock as a coordination.k8s.io/v1 Lease, judged like client-go's leader election.

- Holder identity is the pod name. Every change is an optimistic-concurrency
  write (``resourceVersion`` from the read), so two candidates cannot both
  take the Lease.
- Expiry is judged as client-go does: not by trusting the holder's clock in
  ``renewTime``, but by how long *this* process has seen the record unchanged.
  A candidate that finds the Lease held watches it for up to one lease
  duration: if the holder renews in that time it is alive and the candidate
  gives up; if not, the candidate takes it over.
- A background thread renews every third of the duration; failing to renew
  for two thirds of it marks the lock lost, and ``check()`` then raises.
- ``release()`` clears the holder so the next run need not wait.

Safety never depends on this lock: the conditional pointer write fences a
compactor that lost its Lease while paused.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from chromasnap.compactor.lock import LockLost
from chromasnap.logs import fields

log = logging.getLogger("chromasnap.lease")


def _now() -> datetime:
    return datetime.now(UTC)


def load_client() -> client.CoordinationV1Api:
    """In-cluster config in a pod, else the local kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.CoordinationV1Api()


class LeaseLock:
    """A Lease-backed compactor mutex with a renew loop."""

    def __init__(self, namespace: str, name: str, identity: str, duration_s: int,
                 api: client.CoordinationV1Api | None = None,
                 observe_poll_s: float | None = None) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.api = api or load_client()
        self.observe_poll_s = observe_poll_s or max(0.2, duration_s / 10)
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False
        self.last_holder = ""

    # -- acquiring -------------------------------------------------------------------

    def _spec(self, transitions: int, acquire_time: datetime | None) -> Any:
        now = _now()
        return client.V1LeaseSpec(holder_identity=self.identity,
                                  lease_duration_seconds=self.duration_s,
                                  acquire_time=acquire_time or now, renew_time=now,
                                  lease_transitions=transitions)

    def _get(self) -> Any | None:
        try:
            return self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def acquire(self) -> bool:
        """Take the Lease, waiting up to one lease duration to judge a silent holder dead."""
        deadline: float | None = None
        observed: tuple[str, str] | None = None
        while True:
            lease = self._get()
            if lease is None:
                try:
                    body = client.V1Lease(
                        metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                        spec=self._spec(0, None))
                    self.api.create_namespaced_lease(self.namespace, body)
                except ApiException as e:
                    if e.status == 409:  # another candidate created it first
                        continue
                    raise
                return self._start()
            spec = lease.spec
            holder = spec.holder_identity or ""
            self.last_holder = holder
            record = (holder, str(spec.renew_time))
            mine_or_free = holder in ("", self.identity)
            if not mine_or_free:
                if observed != record:
                    # First sight of this record (or it changed: the holder renewed).
                    if observed is not None:
                        log.info("lease holder is alive", extra=fields(holder=holder))
                        return False
                    observed = record
                    duration = spec.lease_duration_seconds or self.duration_s
                    deadline = time.monotonic() + duration
                assert deadline is not None
                if time.monotonic() < deadline:
                    time.sleep(self.observe_poll_s)
                    continue
                log.warning("taking over an expired lease", extra=fields(previous=holder))
            transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
            acquired = spec.acquire_time if holder == self.identity else None
            # Keep the object's metadata (labels, owner reference): the operator owns those;
            # resourceVersion in it makes the write conditional.
            lease.spec = self._spec(transitions, acquired)
            try:
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            except ApiException as e:
                if e.status == 409:  # someone else wrote first: look again
                    observed, deadline = None, None
                    continue
                raise
            return self._start()

    def _start(self) -> bool:
        self._held = True
        self._lost.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._thread.start()
        return True

    # -- holding ---------------------------------------------------------------------

    def _renew_once(self) -> bool:
        lease = self._get()
        if lease is None or (lease.spec.holder_identity or "") != self.identity:
            return False
        lease.spec.renew_time = _now()
        self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        return True

    def _renew_loop(self) -> None:
        # Renew every third of the duration, but wake twice as often so a holder that
        # cannot renew notices its deadline well before a candidate may take over.
        period = self.duration_s / 3
        renew_deadline = self.duration_s * 2 / 3
        last_ok = time.monotonic()
        while not self._stop.wait(period / 2):
            if time.monotonic() - last_ok < period:
                continue
            try:
                if not self._renew_once():
                    log.error("lease lost: deleted or taken by another holder")
                    self._lost.set()
                    return
                last_ok = time.monotonic()
            except ApiException as e:
                if e.status == 409:
                    continue  # raced with ourselves or another writer; the next read decides
                log.warning("lease renew failed", extra=fields(status=e.status))
            except Exception as e:
                log.warning("lease renew failed", extra=fields(error=str(e)))
            if time.monotonic() - last_ok > renew_deadline:
                log.error("lease lost: could not renew within the renew deadline")
                self._lost.set()
                return

    def check(self) -> None:
        """Raise LockLost once renewing failed or another holder took the Lease."""
        if not self._held or self._lost.is_set():
            raise LockLost(f"lease {self.namespace}/{self.name} is no longer held by "
                           f"{self.identity}")

    def stop_renewing(self) -> None:
        """Stop the renew loop without releasing (tests simulate a paused holder)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.duration_s)

    def release(self) -> None:
        """Stop renewing and clear the holder (only if still ours)."""
        self.stop_renewing()
        if not self._held:
            return
        self._held = False
        try:
            lease = self._get()
            if lease is not None and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = ""
                lease.spec.renew_time = _now()
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as e:
            log.warning("lease release failed; it will expire", extra=fields(status=e.status))

    def describe_holder(self) -> str:
        """The holder seen at the last acquire attempt."""
        return self.last_holder or "unknown"
