"""``kubectl chromasnap compact NAME``: request a compaction and follow it to its report.

The request is the documented interface: a new value of the
``chromasnap.dev/compact-now`` annotation (set with the plugin's own field manager,
so a GitOps tool that owns the manifest never sees it as its own field).

- On a ChromaCollection, the operator starts the Job ``NAME-compactor-<id>`` (the id
  derived from the value); the run reports into ``status.lastCompaction``, which is
  what this command waits for.
- On a ChromaDatabase, the pool's pods (which read their ChromaDatabase every two
  seconds) run a compaction pass at once and report it with the value in
  ``status.lastPass.request``, which is what this command waits for.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from chromasnap.cli.plugin.kube import FIELD_MANAGER, Kube, NotFound, PluginError, path
from chromasnap.operator.schedule import compaction_run_id
from chromasnap.operator.specs.naming import ChildNames
from chromasnap.resource import COMPACT_NOW_ANNOTATION, DATABASE_KIND, KIND


def job_name(name: str, uid: str, request: str) -> str:
    """The Job the operator starts for one value of the compact-now annotation."""
    return f"{ChildNames.for_collection(name).compactor}-{compaction_run_id(uid, request)}"


def _job_state(job: Mapping[str, Any] | None) -> str:
    if job is None:
        return "waiting for the operator to start it"
    st = job.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") == "Failed":
            return f"failed ({c.get('reason')}: {c.get('message')})"
        if c.get("status") == "True" and c.get("type") == "Complete":
            return "complete"
    if st.get("active"):
        return "running"
    return "created, waiting for its pod"


def _describe(last: Mapping[str, Any]) -> str:
    text = (f"{last.get('result')} ({last.get('reason')}) in "
            f"{last.get('durationSeconds', '?')}s: {last.get('deltasFolded', 0)} deltas, "
            f"{last.get('recordsFolded', 0)} records folded")
    if last.get("snapshotVersion"):
        text += f"; snapshot {last['snapshotVersion']}"
    if last.get("message"):
        text += f"; {last['message']}"
    return text


def _request(kube: Kube, kind: str, name: str, value: str) -> None:
    kube.request(
        "PATCH", path(kind, kube.namespace, name),
        query=[("fieldManager", FIELD_MANAGER)],
        body={"metadata": {"annotations": {COMPACT_NOW_ANNOTATION: value}}},
        content_type="application/merge-patch+json")


def describe_pass(last: Mapping[str, Any]) -> str:
    """One line for a pool's ``status.lastPass``."""
    outcomes = ", ".join(f"{n} {k}" for k, n in sorted((last.get("outcomes") or {}).items()))
    return (f"pass by {last.get('identity', '?')}: {last.get('collections', 0)} collections "
            f"in {last.get('seconds', '?')}s" + (f" ({outcomes})" if outcomes else ""))


def compact_pool(kube: Kube, name: str, value: str, *, wait: bool = True,
                 timeout: float = 600.0, interval: float = 1.0, out: TextIO = sys.stdout,
                 clock: Callable[[], float] = time.monotonic) -> int:
    """Ask a ChromaDatabase's pods for a compaction pass now; with ``wait``, follow it
    until a pass reports the request. 0 when no collection failed, 1 otherwise."""
    _request(kube, DATABASE_KIND, name, value)
    print(f"requested a compaction pass of {kube.namespace}/{name} "
          f"({COMPACT_NOW_ANNOTATION}={value}); the pool's pods run one within seconds",
          file=out, flush=True)
    if not wait:
        return 0
    deadline = clock() + timeout
    while clock() < deadline:
        status = kube.database(name).get("status") or {}
        last = status.get("lastPass") or {}
        if last.get("request") == value:
            print(describe_pass(last), file=out, flush=True)
            if (last.get("outcomes") or {}).get("failed"):
                print(f"some collections failed to compact: `kubectl chromasnap status {name} "
                      f"-n {kube.namespace}` lists them", file=out, flush=True)
                return 1
            return 0
        time.sleep(interval)
    raise PluginError(
        f"no pass answered the request within {timeout:.0f}s: check that the pool's pods "
        f"run (`kubectl chromasnap status {name}`) and their logs (`kubectl chromasnap logs "
        f"{name}`)")


def compact(kube: Kube, name: str, *, request: str | None = None, wait: bool = True,
            timeout: float = 600.0, interval: float = 1.0, out: TextIO = sys.stdout,
            report_grace: float = 60.0,
            clock: Callable[[], float] = time.monotonic) -> int:
    """Request a compaction; with ``wait``, follow it until ``status.lastCompaction``
    changes. 0 when the run succeeded or was skipped, 1 when it failed, finished without
    reporting within ``report_grace`` seconds, or ``timeout`` passed."""
    kind, obj = kube.resource(name)
    value = request or str(int(time.time() * 1000))
    if kind == DATABASE_KIND:
        return compact_pool(kube, name, value, wait=wait, timeout=timeout, interval=interval,
                            out=out, clock=clock)
    uid = str(obj["metadata"]["uid"])
    before = dict((obj.get("status") or {}).get("lastCompaction") or {})
    job = job_name(name, uid, value)
    _request(kube, KIND, name, value)
    print(f"requested a compaction of {kube.namespace}/{name} "
          f"({COMPACT_NOW_ANNOTATION}={value}); the operator starts Job {job}", file=out,
          flush=True)
    if not wait:
        return 0
    deadline = clock() + timeout
    said = ""
    completed_at: float | None = None
    while clock() < deadline:
        try:
            live: dict[str, Any] | None = kube.get(path("Job", kube.namespace, job))
        except NotFound:
            live = None
        state = _job_state(live)
        if state != said:
            print(f"Job {job}: {state}", file=out, flush=True)
            said = state
        last = dict((kube.collection(name).get("status") or {}).get("lastCompaction") or {})
        ours = str(last.get("identity") or "").startswith(f"{job}-")
        if last and last != before and (ours or state == "complete"):
            print(f"compaction {_describe(last)}", file=out, flush=True)
            return 1 if last.get("result") == "Failed" else 0
        if state == "complete":
            completed_at = completed_at or clock()
            if clock() - completed_at > report_grace:
                print(f"compaction Job {job} completed but no result reached the status in "
                      f"{report_grace:.0f}s: the run could not report (its ServiceAccount "
                      "needs patch on the collection's status); see `kubectl chromasnap logs "
                      f"{name} --role compactor -n {kube.namespace}`", file=out, flush=True)
                return 1
        if state.startswith("failed"):
            print(f"compaction Job {job} {state} without reporting a result; see "
                  f"`kubectl chromasnap logs {name} --role compactor -n {kube.namespace}`",
                  file=out, flush=True)
            return 1
        time.sleep(interval)
    raise PluginError(
        f"no result after {timeout:.0f}s (Job {job}: {said}); the run may still be going: "
        f"`kubectl chromasnap status {name}`, `kubectl chromasnap logs {name} --role "
        f"compactor` (and check that the operator is running)")
