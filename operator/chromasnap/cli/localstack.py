"""Writer, reader and compactor processes on one machine: ``chromasnap dev``, the demo, tests.

Each process is started exactly as a pod runs it — ``chromasnap <role>`` with
``CHROMASNAP_*`` variables — only on loopback ports instead of Services.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Proc:
    """One server process and where it listens."""

    role: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"


def collection_env(bucket_url: str, endpoint: str | None, collection: str, dimension: int,
                   space: str = "l2", **extra: str) -> dict[str, str]:
    """The environment the operator gives every pod of one collection."""
    env = dict(os.environ)
    env.update({"CHROMASNAP_BUCKET_URL": bucket_url, "CHROMASNAP_COLLECTION": collection,
                "CHROMASNAP_DIMENSION": str(dimension), "CHROMASNAP_SPACE": space,
                "CHROMASNAP_POLL_INTERVAL_SECONDS": "0.5", "CHROMASNAP_LOG_FORMAT": "text",
                # One machine, no partitions to ride out: a writer is ready 2.5 s after it
                # starts rather than the pods' 10.5 s (config.FreshnessTiming).
                "CHROMASNAP_MEMBERS_WINDOW_SECONDS": "2"})
    if endpoint:
        env["CHROMASNAP_S3_ENDPOINT_URL"] = endpoint
    env.update(extra)
    return env


@dataclass
class LocalStack:
    """Processes of one collection root; stop() ends them all."""

    env: dict[str, str]
    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, role: str, port: int | None = None, wait: bool = True, **extra: str) -> Proc:
        """Start ``chromasnap <role>`` on ``port`` (or a free one); wait for /healthz."""
        port = port or free_port()
        env = dict(self.env)
        env.update({"CHROMASNAP_PORT": str(port), "CHROMASNAP_HOST": "127.0.0.1",
                    "CHROMASNAP_CACHE_DIR": str(self.workdir / f"{role}-{port}")})
        env.update(extra)
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"{role}-{port}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "chromasnap", role], env=env,
                                    stdout=fh, stderr=subprocess.STDOUT)
        p = Proc(role, port, proc, log)
        self.procs.append(p)
        if wait:
            self.wait(p, "/healthz")
        return p

    def wait(self, p: Proc, path: str, timeout: float = 60.0) -> None:
        """Poll ``path`` until it answers 200; fail with the process's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.role} exited:\n{p.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(p.url + path, timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{p.role} not answering {path}:\n{p.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM every process, SIGKILL what is still running after 15 s."""
        for p in self.procs:
            p.proc.terminate()
        for p in self.procs:
            try:
                p.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
        self.procs.clear()
