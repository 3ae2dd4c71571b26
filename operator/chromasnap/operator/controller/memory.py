"""What the operator decided about each collection, and one lock per collection.

Everything here can be lost (a restart): resume handlers re-apply, and status is
recomputed from the cluster.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chromasnap.operator.checks import Problem
from chromasnap.operator.controller.cache import Key


class Memory:
    """Per-collection judgements (by uid) shared by the reconciler and the status writer."""

    def __init__(self) -> None:
        self.locks: dict[Key, asyncio.Lock] = {}
        #: uid -> the operator-owned status fields last patched (compared before patching)
        self.written: dict[str, dict[str, Any]] = {}
        #: uid -> generation last applied or judged invalid (status.observedGeneration)
        self.judged: dict[str, int | None] = {}
        #: uid -> why the current spec is not applied (absent: applied fine)
        self.problems: dict[str, Problem] = {}
        #: uids whose children were applied at least once by this process
        self.applied: set[str] = set()

    def lock(self, key: Key) -> asyncio.Lock:
        """One lock per collection: applies, drift repairs and status patches never interleave."""
        return self.locks.setdefault(key, asyncio.Lock())

    def judge(self, uid: str, generation: int | None, problem: Problem | None) -> None:
        """Record the verdict on ``generation`` of a spec: applied, or why not."""
        if problem is None:
            self.problems.pop(uid, None)
        else:
            self.problems[uid] = problem
        self.judged[uid] = generation

    def forget(self, uid: str, key: Key) -> None:
        """Drop what is remembered about a deleted collection."""
        self.written.pop(uid, None)
        self.judged.pop(uid, None)
        self.problems.pop(uid, None)
        self.applied.discard(uid)
        lock = self.locks.get(key)
        if lock is not None and not lock.locked():
            self.locks.pop(key, None)
