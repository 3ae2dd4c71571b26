"""Folding a version's segments into a new local copy, in a child process.

chromadb's write calls hold the GIL for their whole duration (a 4,000 x 384
``add`` starves other threads for seconds), so a fold running in a thread
of the serving process stalled everything else there: ``/readyz``,
``/healthz`` and ``/metrics`` took seconds (measured: ``/readyz`` p99 3.5 s
while a reader folded 3 segments of 10k writes), longer than the kubelet's
probe timeout. Smaller batches only bound each stall, they do not remove
it. So the serving process only writes the ops to a file (the delta format,
checksummed) and waits; a ``python -m chromasnap.reader.foldproc`` child
copies the directory and applies them, with its own GIL. The serving
process then opens the result like any other copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from chromasnap.engine.ops import Op
from chromasnap.storage import deltas

#: Last lines of a failed child's stderr kept in the error (the full text is logged there).
STDERR_TAIL = 4000


class FoldFailed(RuntimeError):
    """The child process that folds segments did not finish."""


def fold_in_child(src_db: Path, dest_db: Path, name: str, dimension: int,
                  ops: Sequence[Op]) -> None:
    """Copy the chromadb directory ``src_db`` to ``dest_db`` and apply ``ops`` there,
    in a child process; raise :class:`FoldFailed` if it fails."""
    ops_file = dest_db.parent / "fold-ops.delta"
    ops_file.parent.mkdir(parents=True, exist_ok=True)
    ops_file.write_bytes(deltas.encode(list(ops), dimension, "reader-fold"))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "chromasnap.reader.foldproc", str(src_db), str(dest_db),
             name, str(dimension), str(ops_file)],
            capture_output=True, check=False)
    finally:
        ops_file.unlink(missing_ok=True)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")[-STDERR_TAIL:]
        raise FoldFailed(f"fold process exited with {done.returncode}: {err}")


def _exit_with_parent() -> None:
    """End this process when the reader that started it is gone (re-parented): a fold
    nobody will open only burns CPU, and the cache it writes to is wiped on restart."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="fold-parent-watch", daemon=True).start()


def main(argv: Sequence[str]) -> int:
    """The child: ``SRC_DB DEST_DB NAME DIMENSION OPS_FILE``."""
    from chromasnap.engine import persistence, replay

    src, dest, name, dim, ops_file = argv
    _exit_with_parent()
    dimension = int(dim)
    ops = deltas.decode(Path(ops_file).read_bytes(), dimension)
    shutil.copytree(src, dest)
    with persistence.open_collection(Path(dest), name) as (_, col):
        # Full-size batches: nothing else runs in this process, so no stall to bound.
        replay.apply_ops(col, ops, dimension=dimension)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
