"""The reader's background loop: pointer and tail polls that survive anything.

A reader that stops refreshing quietly is worse than one that crashes: it keeps
answering from an ever older snapshot and a tail that is never confirmed. So
every iteration's exception is caught, logged as a structured record, counted
in ``chromasnap_reader_errors_total`` and retried with capped exponential
backoff; the next success resets the pace. ``chromasnap_reader_refresh_failing``
and ``chromasnap_reader_last_refresh_timestamp_seconds`` tell the truth about
how current the served snapshot is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chromasnap.logs import fields
from chromasnap.reader import metrics

log = logging.getLogger("chromasnap.reader")

#: Longest pause between attempts while polls keep failing.
MAX_BACKOFF_S = 30.0


@dataclass
class Poller:
    """Calls ``step`` every ``interval_s`` in a daemon thread until stopped.

    ``step`` returns True when it reached the bucket (a successful poll); an
    exception or False counts as a failure and slows the loop down.
    """

    step: Callable[[], bool]
    interval_s: float
    name: str = "reader-poll"
    failures: int = 0
    last_success: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop (once)."""
        metrics.READER_REFRESH_FAILING.set(0)
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to end and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def delay(self) -> float:
        """Seconds until the next attempt: the interval, doubled per consecutive failure."""
        if self.failures == 0:
            return self.interval_s
        return min(MAX_BACKOFF_S, self.interval_s * 2.0 ** min(self.failures, 16))

    def run_once(self) -> bool:
        """One iteration; never raises."""
        try:
            ok = self.step()
        except Exception as e:
            metrics.READER_ERRORS.labels("loop").inc()
            log.error("reader background poll failed; retrying",
                      exc_info=True, extra=fields(error=f"{type(e).__name__}: {e}",
                                                  failures=self.failures + 1))
            ok = False
        if ok:
            self.failures = 0
            self.last_success = time.time()
            metrics.READER_LAST_REFRESH.set(self.last_success)
        else:
            self.failures += 1
        metrics.READER_REFRESH_FAILING.set(1 if self.failures else 0)
        return ok

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.delay())
