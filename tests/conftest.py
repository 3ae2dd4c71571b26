"""Shared fixtures: the real MinIO server and the store backends under test.

Helpers live in ``tests/minio_server.py`` (and ``tests/faultproxy.py``); only
fixtures are defined here so that later conftests can build on them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cluster  # hack/cluster.py
import pytest

from chromasnap.storage.store import ObjectStore, open_store
from minio_server import MinioServer, minio_binary, s3_env

pytest_plugins = ["cluster_fixture"]


@pytest.fixture(scope="session")
def minio() -> Iterator[MinioServer]:
    """One MinIO for the whole session; tests isolate themselves with ``new_bucket_url()``.

    While it runs, the standard AWS variables point boto3's default credential
    chain at it, and subprocesses inherit them.
    """
    cluster.await_tools("minio")  # make test builds it in the background
    binary = minio_binary()
    if not binary.exists():
        if os.environ.get("CHROMASNAP_SKIP_MINIO") == "1":
            pytest.skip(f"MinIO binary missing at {binary} and CHROMASNAP_SKIP_MINIO=1")
        pytest.fail(
            f"MinIO binary missing at {binary}: run `make test` (it builds the test tools), "
            "or set CHROMASNAP_SKIP_MINIO=1 to skip the tests that need it",
            pytrace=False,
        )
    with pytest.MonkeyPatch.context() as mp, MinioServer(binary) as server:
        for name, value in s3_env().items():
            mp.setenv(name, value)
        yield server


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.minio)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store root for each backend: ``file://`` and ``s3://`` on MinIO."""
    if request.param == "local":
        return (tmp_path / "store").as_uri()
    server: MinioServer = request.getfixturevalue("minio")
    return server.new_bucket_url()


@pytest.fixture
def store_endpoint(request: pytest.FixtureRequest, store_url: str) -> str | None:
    """The ``endpoint_url`` that goes with ``store_url`` (MinIO's, or None for local)."""
    if store_url.startswith("s3://"):
        server: MinioServer = request.getfixturevalue("minio")
        return server.endpoint
    return None


@pytest.fixture
def store(store_url: str, store_endpoint: str | None) -> ObjectStore:
    """``open_store`` on the parametrized backend."""
    return open_store(store_url, endpoint_url=store_endpoint)


#: integration test folders that need the Kubernetes control plane, helm or kubectl
_CLUSTER_DIRS = ("cli", "cluster", "observability", "operator")


def _phase(item: pytest.Item) -> int:
    """Run order: what needs no built binary first, then MinIO-only integration tests,
    then the control plane's, the kind e2e last. A cold ``make test`` builds the
    binaries in the background in that order, so each test finds its own ready."""
    parts = Path(str(item.path)).relative_to(Path(__file__).parent).parts
    if item.get_closest_marker("tools") is not None:
        return 2
    if parts[0] == "unit":
        return 0
    if parts[0] == "integration":
        return 2 if parts[1] in _CLUSTER_DIRS else 1
    return 3


def pytest_configure(config: pytest.Config) -> None:
    """Progress of a background build a test waits for reaches the terminal, not the
    test's captured output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        cluster.say = lambda msg: reporter.write_line(f"\n{msg}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the session by :func:`_phase` (stable: file order within a phase)."""
    items.sort(key=_phase)
