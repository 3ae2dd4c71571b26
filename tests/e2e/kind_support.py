"""Helpers for the kind end-to-end tests: kubectl, helm, timings, clients, load.

Everything here drives real tools against the kind cluster that ``hack/kind.sh``
creates; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".cache" / "kind"
KUBECONFIG = STATE / "kubeconfig"
CACHE = Path(os.environ.get("CHROMASNAP_CACHE") or Path.home() / ".cache" / "chromasnap")
BIN = CACHE / "bin"
NAMESPACE = "search"
OPERATOR_NAMESPACE = "chromasnap-system"
COLLECTION = "docs"  # examples/minio-collection.yaml
DIM = 384
WRITER_PORT, READER_PORT, MINIO_PORT = 31800, 31801, 31900  # hack/kind.sh NODE_PORTS


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["KUBECONFIG"] = str(KUBECONFIG)
    e["PATH"] = f"{e.get('PATH', '')}:{BIN}"
    return e


def tool(name: str) -> str:
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if not found:
        raise RuntimeError(f"{name} not found on PATH or in {BIN}")
    return found


def run(args: list[str], *, input: str | None = None, check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, input=input, capture_output=True, text=True, env=env(),
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def kubectl(*args: str, input: str | None = None, check: bool = True,
            timeout: float = 600) -> str:
    return run([tool("kubectl"), *args], input=input, check=check, timeout=timeout).stdout


def kjson(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json"))


def helm(*args: str, timeout: float = 600) -> str:
    return run([str(BIN / "helm"), *args], timeout=timeout).stdout


def ccol(name: str = COLLECTION) -> dict[str, Any]:
    obj: dict[str, Any] = kjson("-n", NAMESPACE, "get", "ccol", name)
    return obj


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c.get("type") == ctype:
            return dict(c)
    return {}


def wait_for(what: str, predicate: Callable[[], Any], timeout: float,
             interval: float = 2.0, describe: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # a transient API error while pods restart
            last_error = e
        if time.monotonic() > deadline:
            detail = describe() if describe else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 f"{f' (last error: {last_error})' if last_error else ''}"
                                 f"\n{detail}")
        time.sleep(interval)


def pods(component: str, name: str = COLLECTION) -> list[dict[str, Any]]:
    sel = f"app.kubernetes.io/instance={name},app.kubernetes.io/component={component}"
    items: list[dict[str, Any]] = kjson("-n", NAMESPACE, "get", "pods", "-l", sel)["items"]
    return items


def running_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return pod.get("status", {}).get("phase") == "Running" and conds.get("Ready") == "True"


def diagnose() -> str:
    """What a human would look at when something hangs."""
    parts = []
    for args in (["get", "ccol", "-A", "-o", "wide"], ["get", "pods,jobs", "-A", "-o", "wide"],
                 ["-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp"]):
        parts.append(kubectl(*args, check=False)[-4000:])
    parts.append(json.dumps(ccol().get("status", {}), indent=1)[-3000:]
                 if kubectl("-n", NAMESPACE, "get", "ccol", COLLECTION, check=False) else "")
    return "\n".join(parts)


# ---- timings ---------------------------------------------------------------------------
@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = round(time.monotonic() - start, 1)
            self.save()

    def save(self) -> None:
        STATE.mkdir(parents=True, exist_ok=True)
        (STATE / "e2e-results.json").write_text(
            json.dumps({"seconds": self.steps, "facts": self.facts}, indent=2) + "\n")


TIMINGS = Timings()


# ---- chromadb clients ------------------------------------------------------------------
def client(port: int) -> Any:
    import chromadb

    return chromadb.HttpClient(host="127.0.0.1", port=port,
                               settings=chromadb.Settings(anonymized_telemetry=False))


def collection(port: int, timeout: float = 120) -> Any:
    def connect() -> Any:
        c = client(port)
        c.heartbeat()
        return c.get_collection(COLLECTION)

    return wait_for(f"chromadb.HttpClient on 127.0.0.1:{port}", connect, timeout)


def vectors(n: int, seed: int) -> list[list[float]]:
    import numpy as np

    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    out: list[list[float]] = v.tolist()
    return out


@dataclass
class Load:
    """A bounded background load: ``fn(i)`` in each of ``threads`` until stopped."""

    fn: Callable[[int, int], Any]
    threads: int = 2
    pause: float = 0.0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    max_seconds: float = 600

    def _loop(self, worker: int) -> None:
        i = 0
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.fn(worker, i)
                with self._lock:
                    self.ok += 1
            except Exception as e:
                with self._lock:
                    self.failed += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            i += 1
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self) -> Load:
        for w in range(self.threads):
            t = threading.Thread(target=self._loop, args=(w,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)
