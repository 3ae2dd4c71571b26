"""The pool's catalog in the bucket: an append-only log of changes, with checkpoints.

::

    catalog/log/<seq, 20 digits>.json          one change (storage/catalog.py's CatalogOp)
    catalog/checkpoints/<seq, 20 digits>.json  the whole state after change <seq>

A change is appended by writing the next sequence number's key with
``If-None-Match: *``: of two clients deciding against the same state, exactly one
write lands, and the other re-reads the log's end and decides again (Delta Lake's
transaction log works the same way). So a create, rename or delete is one small
PUT, and a name is never given twice. Bringing a cached state up to date is one
LIST (``StartAfter`` the last change it has) plus a GET per new change, however
large the catalog; a process starts from the newest checkpoint, which whoever
appends every ``checkpoint_every``-th change writes. Changes older than the
newest checkpoint are pruned by the compactor (``prune``); a state that falls
behind a pruned log reloads from the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from chromasnap.engine.errors import Unavailable
from chromasnap.logs import fields
from chromasnap.storage.catalog import (
    CatalogOp,
    Checkpoint,
    CorruptCatalog,
    PoolCatalog,
    apply,
    from_checkpoint,
    to_checkpoint,
)
from chromasnap.storage.manifest import now
from chromasnap.storage.store import NotFound, ObjectStore, PreconditionFailed

log = logging.getLogger("chromasnap.catalog")

LOG_PREFIX = "catalog/log/"
CHECKPOINT_PREFIX = "catalog/checkpoints/"
CHECKPOINT_EVERY = 200
#: Changes stay this long after a checkpoint covers them (see ``CatalogLog.prune``).
PRUNE_GRACE_SECONDS = 300.0
#: Appends lost to other clients in a row before a change gives up.
MAX_ATTEMPTS = 64

T = TypeVar("T")


class LogEntry(BaseModel):
    """What one ``catalog/log/<seq>.json`` holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    op: CatalogOp
    by: str
    at: datetime


def log_key(seq: int) -> str:
    """The key of change ``seq``."""
    return f"{LOG_PREFIX}{seq:020d}.json"


def checkpoint_key(seq: int) -> str:
    """The key of the checkpoint after change ``seq``."""
    return f"{CHECKPOINT_PREFIX}{seq:020d}.json"


def _seq_of(key: str) -> int:
    return int(key.rsplit("/", 1)[1].split(".", 1)[0])


class CatalogLog:
    """A process's view of the pool's catalog, and the only way it changes it.

    The state is shared by the process's threads; every read and change runs under
    one lock, so a route sees a state that no other thread is changing.
    """

    def __init__(self, store: ObjectStore, *, identity: str,
                 checkpoint_every: int = CHECKPOINT_EVERY, max_attempts: int = MAX_ATTEMPTS,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.identity = identity
        self.checkpoint_every = checkpoint_every
        self.max_attempts = max_attempts
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._state = PoolCatalog()
        self._loaded = False

    # -- reading -------------------------------------------------------------------

    def view(self, read: Callable[[PoolCatalog], T], *, refresh: bool = False) -> T:
        """``read`` the state (brought up to date first with ``refresh``) under the lock.

        ``read`` must not keep references to the state's mutable parts past its call.
        """
        with self._lock:
            if refresh or not self._loaded:
                self._refresh()
            return read(self._state)

    def _refresh(self) -> None:
        if not self._loaded:
            self._state = self._load_checkpoint()
            self._loaded = True
        if not self._catch_up():
            # Pruned past this state: the newest checkpoint covers the gap.
            log.info("catalog log pruned past change %d; reloading from a checkpoint",
                     self._state.seq, extra=fields(seq=self._state.seq))
            self._state = self._load_checkpoint(at_least=self._state.seq)
            if not self._catch_up():
                raise CorruptCatalog(
                    f"the catalog log has no change {self._state.seq + 1} although later "
                    "ones exist, and no checkpoint covers it")

    def _catch_up(self) -> bool:
        """Apply the changes after the state's; ``False`` when the next one is gone."""
        after = log_key(self._state.seq) if self._state.seq else None
        for info in self.store.list(LOG_PREFIX, start_after=after):
            seq = _seq_of(info.key)
            if seq != self._state.seq + 1:
                return False
            try:
                data = self.store.get(info.key).data
            except NotFound:
                return False  # pruned between the LIST and the GET
            apply(self._state, seq, _parse_entry(data, info.key, seq).op)
        return True

    def _load_checkpoint(self, at_least: int = 0) -> PoolCatalog:
        newest = None
        for info in self.store.list(CHECKPOINT_PREFIX):
            newest = info.key
        if newest is None:
            if at_least:
                raise CorruptCatalog(
                    f"the catalog log starts after change {at_least} and there is no "
                    "checkpoint to start from")
            return PoolCatalog()
        try:
            cp = Checkpoint.model_validate_json(self.store.get(newest).data)
        except ValidationError as e:
            raise CorruptCatalog(f"{newest} is not a valid catalog checkpoint: {e}") from e
        if cp.seq < at_least:
            raise CorruptCatalog(
                f"the newest checkpoint ({cp.seq}) is older than the oldest change kept "
                f"({at_least + 1})")
        return from_checkpoint(cp)

    # -- changing --------------------------------------------------------------------

    def change(self, decide: Callable[[PoolCatalog], tuple[CatalogOp | None, T]]) -> T:
        """Decide a change against the log's end and append it; return ``decide``'s result.

        ``decide`` is pure and may raise (nothing is appended then) or return no
        change (the state already is as asked). When another client appended first,
        the state is refreshed and ``decide`` runs again on it.
        """
        with self._lock:
            for attempt in range(self.max_attempts):
                if attempt:
                    # Racing appenders spread out instead of colliding again.
                    time.sleep(self._rng.uniform(0, min(0.2, 0.002 * 2 ** min(attempt, 7))))
                self._refresh()
                op, result = decide(self._state)
                if op is None:
                    return result
                seq = self._state.seq + 1
                entry = LogEntry(seq=seq, op=op, by=self.identity, at=now())
                try:
                    self.store.put_if_absent(log_key(seq), entry.model_dump_json(
                        by_alias=True).encode())
                except PreconditionFailed:
                    continue
                apply(self._state, seq, op)
                if seq % self.checkpoint_every == 0:
                    self._checkpoint()
                return result
        raise Unavailable(
            f"the catalog changed {self.max_attempts} times while this change was being "
            "decided; retry the request")

    def _checkpoint(self) -> None:
        data = to_checkpoint(self._state).model_dump_json(by_alias=True).encode()
        with contextlib.suppress(PreconditionFailed):  # the same state, by another process
            self.store.put_if_absent(checkpoint_key(self._state.seq), data)

    # -- pruning (the compactor) -----------------------------------------------------

    def prune(self, *, keep_checkpoints: int = 2,
              grace_seconds: float = PRUNE_GRACE_SECONDS) -> int:
        """Delete changes before the newest checkpoint that are older than
        ``grace_seconds``, and all but the newest checkpoints.

        A process whose state is older reloads from that checkpoint; one that lists
        a change and then finds it gone does the same. The grace keeps a change that
        another process is deciding right now from landing on a slot just freed: that
        process refreshed before the slot's change was appended, so its conditional
        append would succeed on the deleted key, at a seq every other process has
        passed, and the change would be lost. Returns the objects deleted.
        """
        with self._lock:
            self._refresh()
            self._checkpoint()
            checkpoints = [i.key for i in self.store.list(CHECKPOINT_PREFIX)]
            newest = _seq_of(checkpoints[-1])
            # The change at the checkpoint stays: a process further behind then lists
            # it, sees the gap before it and reloads (an empty listing would look
            # like "nothing new").
            settled = time.time() - grace_seconds
            old_changes = [i.key for i in self.store.list(LOG_PREFIX)
                           if _seq_of(i.key) < newest and i.last_modified < settled]
            doomed = old_changes + checkpoints[:-keep_checkpoints]
            self.store.delete_many(doomed)
            return len(doomed)


def _parse_entry(data: bytes, key: str, seq: int) -> LogEntry:
    try:
        entry = LogEntry.model_validate_json(data)
    except ValidationError as e:
        raise CorruptCatalog(f"{key} is not a valid catalog change: {e}") from e
    if entry.seq != seq:
        raise CorruptCatalog(f"{key} holds change {entry.seq}")
    return entry
