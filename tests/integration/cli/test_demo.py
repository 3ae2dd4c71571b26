"""``make demo`` (``chromasnap demo``) as a new user runs it: it must pass its own checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_passes_its_checks(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "chromasnap", "demo", "--dir",
                           str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "read-your-writes through a reader: ok" in out
    assert "18/18 neighbours are on the query's topic" in out
    assert "list_collections() -> ['customer-a-renamed', 'customer-b']" in out
    assert "pool: ok" in out
