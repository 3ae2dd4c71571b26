"""What the last compaction pass of a pool did, as one small object in the bucket.

A pool's pass folds any number of collections; its status must stay small at
10,000 of them, so it holds totals and only the collections that need
attention: every one whose last compaction failed, with why (up to
``MAX_LISTED``; the count is always exact), and the ones the pass left with the
most pending deltas. The pass writes it to ``status/compaction.json`` of the
pool's root, where an operator, ``kubectl chromasnap status`` or a person
with bucket access reads it; the pool's log and metrics say the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from chromasnap.compactor.result import CompactionResult
from chromasnap.resource import COMPACT_NOW_ANNOTATION

STATUS_KEY = "status/compaction.json"
MAX_LISTED = 100


def summary(results: Mapping[str, CompactionResult], failures: Mapping[str, str],
            seconds: float, at: datetime, request: str | None = None) -> dict[str, Any]:
    """The status of a pass that produced ``results``; ``failures`` are the pool's
    collections whose last compaction failed (from this pass or an earlier one);
    ``request``: the compact-now value the pass answers, if any."""
    outcomes: dict[str, int] = {}
    for res in results.values():
        outcomes[res.result] = outcomes.get(res.result, 0) + 1
    pending = sorted(((res.pending_deltas, cid) for cid, res in results.items()
                      if res.pending_deltas), reverse=True)
    return {
        "at": at.isoformat(),
        "seconds": round(seconds, 3),
        "collections": len(results),
        "outcomes": dict(sorted(outcomes.items())),
        "failingCollections": len(failures),
        "failing": [{"id": cid, "reason": why[:512]}
                    for cid, why in sorted(failures.items())[:MAX_LISTED]],
        "pendingCollections": len(pending),
        "mostPending": [{"id": cid, "pendingDeltas": n} for n, cid in pending[:10]],
    } | ({"request": request} if request is not None else {})


def encode(status: Mapping[str, Any]) -> bytes:
    """The object's bytes."""
    return json.dumps(status, indent=2).encode()


#: Collections a ChromaDatabase's status lists by name of kind (failing, most pending):
#: the status is read by ``kubectl get`` and the operator, and must stay small.
STATUS_LISTED = 10


def database_status(last_pass: Mapping[str, Any] | None, collections: int,
                    databases: int, records: int, identity: str) -> dict[str, Any]:
    """The merge patch a pool's pod sends to its ChromaDatabase's ``status`` (pure).

    Totals (``records``: of the collections the passes recorded,
    :mod:`chromasnap.pool.published`), and only the collections that need attention (at most
    :data:`STATUS_LISTED` of each kind); ``last_pass`` is :func:`summary` of the last
    pass that folded anything (``None``: none since the pod started, and the fields it
    sets are left as they are).
    """
    status: dict[str, Any] = {"collections": collections, "databases": databases,
                              "records": records}
    if last_pass is not None:
        status |= {
            "lastPass": {"time": last_pass["at"], "seconds": last_pass["seconds"],
                         "collections": last_pass["collections"],
                         "outcomes": last_pass["outcomes"], "identity": identity}
                        | ({"request": last_pass["request"]} if "request" in last_pass else {}),
            "failingCollections": last_pass["failingCollections"],
            "failing": last_pass["failing"][:STATUS_LISTED],
            "mostPending": last_pass["mostPending"][:STATUS_LISTED],
            "pendingCollections": last_pass["pendingCollections"],
        }
    return {"status": status}


def pass_requested(database: Mapping[str, Any], seen: str | None) -> str | None:
    """The ``chromasnap.dev/compact-now`` value of a ChromaDatabase that no pass has
    answered yet (pure): set, not the one the last reported pass answered
    (``status.lastPass.request``), and not ``seen`` (already asked for here)."""
    value = ((database.get("metadata") or {}).get("annotations") or {}).get(
        COMPACT_NOW_ANNOTATION)
    answered = ((database.get("status") or {}).get("lastPass") or {}).get("request")
    if not value or value in (answered, seen):
        return None
    return str(value)
