"""Real server processes for tests and benchmarks: ``chromasnap writer`` / ``reader``
(see chromasnap.localstack) and ``chroma run``, the peer they are compared with."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from chromasnap.cli.localstack import LocalStack as Stack
from chromasnap.cli.localstack import Proc, free_port
from chromasnap.cli.localstack import collection_env as stack_env

__all__ = ["ChromaRun", "Proc", "Stack", "stack_env"]

VENV_BIN = Path(sys.executable).parent


class ChromaRun:
    """``chroma run`` (the Rust server shipped in the chromadb package) on a directory."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path = path
        self.port = free_port()
        self.log = workdir / "chroma-run.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ChromaRun:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [
                    str(VENV_BIN / "chroma"),
                    "run",
                    "--path",
                    str(self.path),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                url = f"{self.url}/api/v2/heartbeat"
                with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return self
            time.sleep(0.1)
        raise TimeoutError(f"chroma run not answering: {self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
