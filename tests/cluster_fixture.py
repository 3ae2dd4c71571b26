"""pytest fixtures for the real Kubernetes control plane started by ``hack/cluster.py``.

``control_plane`` (session scope) runs etcd, kube-apiserver (RBAC on),
kube-controller-manager, kube-scheduler and kwok with one fake node, on
loopback. The binaries come from ``hack/build-tools.sh k8s``. When they are
missing the fixture skips, unless ``CHROMASNAP_REQUIRE_CLUSTER`` is set (to
anything but ``""``/``0``), in which case it fails. A control plane that is
built but does not start always fails the test.

Register with ``pytest_plugins = ["cluster_fixture"]`` in ``tests/conftest.py``
(with ``tests`` importable), or import the fixtures into a test module.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HACK = Path(__file__).resolve().parents[1] / "hack"
if str(_HACK) not in sys.path:
    sys.path.insert(0, str(_HACK))

import cluster  # noqa: E402  (hack/cluster.py)

REQUIRE_ENV = "CHROMASNAP_REQUIRE_CLUSTER"

# One control plane per process, even if the fixture is registered twice
# (conftest plugin + a module importing it).
_shared: cluster.ControlPlane | None = None


def cluster_required() -> bool:
    """Whether a missing control plane must fail instead of skip."""
    return os.environ.get(REQUIRE_ENV, "") not in {"", "0"}


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    """A running control plane: ``.kubeconfig_path`` (admin), ``.api_url``, ``.logs_dir``."""
    global _shared  # noqa: PLW0603
    if _shared is not None and _shared.servers:
        yield _shared
        return
    missing = cluster.missing_binaries()
    if missing:
        msg = (
            f"Kubernetes test binaries not built ({', '.join(missing)} missing in "
            f"{cluster.bin_dir()}); run `hack/build-tools.sh k8s`"
        )
        if cluster_required():
            pytest.fail(f"{msg} ({REQUIRE_ENV} is set)")
        pytest.skip(msg)
    # under pytest's basetemp, so logs stay around after a failure
    cp = cluster.ControlPlane(tmp_path_factory.mktemp("cluster"), keep_dir=True)
    cp.start()
    _shared = cp
    try:
        yield cp
    finally:
        _shared = None
        cp.stop()


@pytest.fixture(scope="session")
def kube_api(control_plane: cluster.ControlPlane) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` authenticated as the cluster admin."""
    from kubernetes import config

    api: Any = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(control_plane.kubeconfig_path)
    )
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def cluster_namespace(kube_api: Any) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)
