"""The compactor's mutex. It keeps compactors from wasting work, not data safe.

Safety never depends on the lock: a compactor that lost it (paused past its
lease, partitioned) is stopped by the conditional pointer write instead.
Implementations:

- ``LocalLock``: an ``flock`` on a file, for the embedded mode and one host;
  the kernel releases it when the process dies, so a crash never wedges it.
- ``NoLock``: for tests that race compactors on purpose.
- ``kubelease.LeaseLock``: a coordination.k8s.io/v1 Lease, for Kubernetes.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Protocol


class LockLost(Exception):
    """The lock was lost while working; the run must stop before publishing."""


class Lock(Protocol):
    """A mutex held for one compaction run."""

    def acquire(self) -> bool:
        """Take the lock without waiting; ``False`` when another live holder has it."""
        ...

    def check(self) -> None:
        """Raise LockLost if the lock is no longer held (called between steps)."""
        ...

    def release(self) -> None:
        """Give the lock up explicitly so the next run need not wait for expiry."""
        ...

    def describe_holder(self) -> str:
        """Who holds the lock now (for 'skipped: lock held by …' results)."""
        ...


class LocalLock:
    """``flock(LOCK_EX | LOCK_NB)`` on a lock file."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the flock; ``False`` if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.holder} pid={os.getpid()}\n".encode())
        self._fd = fd
        return True

    def check(self) -> None:
        """An flock cannot be lost while the process lives."""
        if self._fd is None:
            raise LockLost("lock was never acquired")

    def release(self) -> None:
        """Unlock and close."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def describe_holder(self) -> str:
        """The holder line the current owner wrote."""
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"


class NoLock:
    """Always granted: lets tests race compactors to exercise the pointer fence."""

    def acquire(self) -> bool:
        """Always succeeds."""
        return True

    def check(self) -> None:
        """Never lost."""

    def release(self) -> None:
        """Nothing to release."""

    def describe_holder(self) -> str:
        """No holder is tracked."""
        return "nobody (locking disabled)"
