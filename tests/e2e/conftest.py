"""kind end-to-end fixtures: the cluster, the install the README documents, a collection.

Run with ``CHROMASNAP_KIND_E2E=1`` (``make kind-e2e`` sets it); otherwise every test
here is skipped and nothing is started. The session builds what it needs through
``hack/kind.sh cluster`` (Docker, the images, a kind cluster, MinIO) — cached, so a
warm run only creates the cluster — and deletes the cluster at the end unless
``CHROMASNAP_KIND_KEEP=1``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kind_support import (
    COLLECTION,
    NAMESPACE,
    OPERATOR_NAMESPACE,
    READER_PORT,
    ROOT,
    STATE,
    TIMINGS,
    WRITER_PORT,
    ccol,
    condition,
    diagnose,
    helm,
    kjson,
    kubectl,
    wait_for,
)

ENABLED = os.environ.get("CHROMASNAP_KIND_E2E") == "1"
#: lines of a failed hack script's output quoted in the test error
TAIL_LINES = 60
KEEP = os.environ.get("CHROMASNAP_KIND_KEEP") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kind: end-to-end on a kind cluster with the real image "
        "(needs Docker; runs only with CHROMASNAP_KIND_E2E=1, e.g. `make kind-e2e`)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="kind end-to-end: set CHROMASNAP_KIND_E2E=1 (make kind-e2e)")
    for item in items:
        if "kind" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS.steps:
        return
    tr = terminalreporter
    tr.section("kind e2e: wall time per step (s)")
    for name, secs in TIMINGS.steps.items():
        tr.write_line(f"{secs:8.1f}  {name}")
    for name, value in TIMINGS.facts.items():
        tr.write_line(f"{name}: {value}")
    tr.write_line(f"(also in {STATE / 'e2e-results.json'})")


def _sh(config: pytest.Config, *args: str, timeout: float = 3600) -> None:
    """Run a hack script with its progress streaming to the terminal, live (a cold
    build takes many minutes), not into pytest's captured output. On failure the
    error carries the script's last lines (the hack scripts repeat the failing step's
    own output there), not only its exit code."""
    capman = config.pluginmanager.getplugin("capturemanager")
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        proc = subprocess.Popen(["bash", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None
        killer = threading.Timer(timeout, proc.kill)  # a hung step cannot hang the run
        killer.start()
        try:
            for line in proc.stdout:
                sys.stderr.write(line)
                tail.append(line.rstrip("\n"))
            rc = proc.wait()
        finally:
            killer.cancel()
    if rc != 0:
        last = "\n".join(tail)
        pytest.fail(f"bash {' '.join(args)} failed with exit {rc}; its last "
                    f"{len(tail)} lines:\n{last}", pytrace=False)


@pytest.fixture(scope="session")
def kind_cluster(pytestconfig: pytest.Config) -> Iterator[None]:
    """Docker, the images, a kind cluster with MinIO: ``hack/kind.sh cluster``."""
    log = STATE / "times.log"
    seen = len(log.read_text().splitlines()) if log.exists() else 0
    with TIMINGS.step("cluster: docker + images + kind create + load + MinIO"):
        _sh(pytestconfig, "hack/kind.sh", "cluster")
    TIMINGS.facts["hack/kind.sh steps"] = [
        line.split(" ", 1)[1] for line in log.read_text().splitlines()[seen:]]
    TIMINGS.facts["host quirks"] = subprocess.run(
        ["bash", "hack/kind.sh", "quirks"], cwd=ROOT, capture_output=True, text=True,
        check=False).stdout.strip()
    yield
    if not KEEP:
        with TIMINGS.step("kind delete cluster"):
            _sh(pytestconfig, "hack/kind.sh", "down")


@pytest.fixture(scope="session")
def image(kind_cluster: None) -> str:
    return subprocess.run(["bash", "hack/kind-images.sh", "--print-image"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="session")
def installed(image: str) -> str:
    """The install the README documents: the CRDs, then the chart with the built image."""
    repo, tag = image.rsplit(":", 1)
    with TIMINGS.step("install: kubectl apply -f crds/ + helm install --wait"):
        kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        helm("upgrade", "--install", "chromasnap", str(ROOT / "charts" / "chromasnap"),
             "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
             "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
             "--set", "image.pullPolicy=IfNotPresent", "--wait", "--timeout", "300s")
    return image


def _nodeport_services() -> None:
    """NodePort twins of the operator's writer and reader Services (same selector),
    published on the host's 127.0.0.1 by the kind config's extraPortMappings."""
    for component, port in (("writer", WRITER_PORT), ("reader", READER_PORT)):
        svc = kjson("-n", NAMESPACE, "get", "service", f"{COLLECTION}-{component}")
        selector = svc["spec"]["selector"]
        sel = "\n".join(f"    {k}: {v}" for k, v in selector.items())
        kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Service
metadata:
  name: {COLLECTION}-{component}-nodeport
  namespace: {NAMESPACE}
spec:
  type: NodePort
  selector:
{sel}
  ports:
  - {{name: http, port: 8000, targetPort: 8000, nodePort: {port}}}
""")


@pytest.fixture(scope="session")
def docs(installed: str) -> dict[str, Any]:
    """examples/minio-collection.yaml applied as the README says, until Ready."""
    with TIMINGS.step("collection: apply example until Ready"):
        kubectl("create", "namespace", NAMESPACE, check=False)
        kubectl("apply", "-f", str(ROOT / "examples" / "minio-collection.yaml"))
        obj = wait_for("ccol/docs Ready",
                       lambda: condition(ccol(), "Ready").get("status") == "True" and ccol(),
                       timeout=600, interval=3, describe=diagnose)
        _nodeport_services()
    return dict(obj)

