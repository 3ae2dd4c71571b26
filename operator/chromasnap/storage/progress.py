"""A byte progress bar for transfers, as an ``on_bytes`` callback for the store.

Usage::

    with transfer_progress("uploading snapshot", total=size) as on_bytes:
        store.upload_file(key, path, on_bytes=on_bytes)

``on_bytes`` is ``None`` (so the store skips the bookkeeping) when stderr is not a
terminal, when ``CHROMASNAP_NO_PROGRESS`` is set, or when ``enabled=False``:
pods and CI logs should not fill up with redraws.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from chromasnap.storage.store import ByteCallback


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether to draw: an explicit choice wins, else only on an interactive stderr."""
    if enabled is not None:
        return enabled
    if os.environ.get("CHROMASNAP_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


@contextmanager
def transfer_progress(
    description: str, total: int | None = None, *, enabled: bool | None = None
) -> Iterator[ByteCallback | None]:
    """Show a bar for ``total`` bytes while the block runs; yield the callback or ``None``."""
    if not progress_enabled(enabled):
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    # stderr keeps stdout clean for command output; transient drops the finished bar.
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)

        def on_bytes(n: int) -> None:
            # Called from boto3's worker threads; Progress.advance takes its own lock.
            bar.advance(task, n)

        yield on_bytes
