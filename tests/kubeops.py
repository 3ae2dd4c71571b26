"""Operator tests on the real control plane: the chart, the operator, pods as processes.

Fixtures (session scope, shared by every operator test module that imports them):

- ``chart_release``: ``helm install`` of ``charts/chromasnap`` (the real helm binary,
  ``--kubeconfig`` of the test control plane), CRDs from the chart's ``crds/``.
- ``operator``: ``chromasnap operator`` as a subprocess, started with the command,
  args and env of the Deployment the chart rendered (read back from the API), and
  authenticated as the chart's ServiceAccount (a TokenRequest token in a kubeconfig,
  standing in for the token a pod gets mounted), so missing RBAC fails the tests.

:class:`PodRunner` runs a pod's container as a local process with exactly the
command, args and env of the pod spec the operator generated: ConfigMap and
Secret references are resolved through the API. What cannot exist on this
machine is substituted, and only that:

1. cluster DNS: a Service's in-cluster name (``<svc>.<ns>.svc``) becomes
   ``127.0.0.1:<port of the local process playing that Service>``;
2. the container port (``CHROMASNAP_PORT=8000``) becomes a free loopback port, and
   ``CHROMASNAP_HOST=127.0.0.1`` (several "pods" share one host);
3. volumes: each emptyDir, Secret volume (its items as files) and the
   termination-message file become temp paths;
4. the mounted ServiceAccount token becomes ``KUBECONFIG``: a kubeconfig holding a
   TokenRequest token of the pod's ``serviceAccountName`` (so the pod's RBAC is
   what is exercised);
5. the image's own environment (``PATH`` to the chromasnap install, see
   images/Dockerfile) becomes the test virtualenv.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cluster  # hack/cluster.py
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chromasnap.operator.specs.pods import INTERNAL_PORT, TMP_DIR
from minio_server import free_port

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "chromasnap"
RELEASE = "chromasnap"
OPERATOR_NAMESPACE = "chromasnap-system"
OPERATOR_SA = "chromasnap"  # the chart's fullname for release "chromasnap"
GROUP, VERSION, PLURAL = "chromasnap.dev", "v1alpha1", "chromacollections"
VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")

_shared: dict[str, Any] = {}


# --- waiting ----------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM a running process (as the kubelet does), SIGKILL it after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0,
             interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def gone(read: Callable[[], Any]) -> bool:
    """True if ``read()`` raises 404."""
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def maybe(read: Callable[[], T]) -> T | None:
    """``read()``, or None on 404."""
    try:
        return read()
    except ApiException as e:
        if e.status == 404:
            return None
        raise


# --- identities -------------------------------------------------------------------------


def sa_token(kube_api: Any, namespace: str, sa: str, seconds: int = 3600) -> str:
    """A TokenRequest token for a ServiceAccount (what the kubelet mounts into its pods)."""
    tr: Any = client.CoreV1Api(kube_api).create_namespaced_service_account_token(
        sa, namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)),
    )
    return str(tr.status.token)


def token_kubeconfig(control_plane: Any, token: str, path: Path, user: str) -> Path:
    """A kubeconfig that authenticates with ``token`` only."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": control_plane.api_url, "certificate-authority": str(control_plane.ca_path)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "test", "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def api_as_token(kube_api: Any, token: str) -> Any:
    """An ApiClient that authenticates with a bearer token only."""
    cfg = client.Configuration()
    cfg.host = kube_api.configuration.host
    cfg.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def as_dict(kube_api: Any, obj: Any) -> dict[str, Any]:
    """A typed API object as the JSON the API serves (camelCase keys)."""
    out: dict[str, Any] = kube_api.sanitize_for_serialization(obj)
    return out


# --- the chart --------------------------------------------------------------------------


def helm(control_plane: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real helm binary against the test control plane."""
    binary = cluster.tool("helm")
    proc = subprocess.run(
        [str(binary), *args, "--kubeconfig", str(control_plane.kubeconfig_path)],
        capture_output=True, text=True, check=False, timeout=180,
        env={**os.environ, "HELM_CACHE_HOME": str(control_plane.dir / "helm-cache"),
             "HELM_CONFIG_HOME": str(control_plane.dir / "helm-config"),
             "HELM_DATA_HOME": str(control_plane.dir / "helm-data")},
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                    f"{proc.stderr}")
    return proc


@dataclass
class ChartRelease:
    """The installed chart."""

    name: str
    namespace: str
    service_account: str
    install_output: str


@pytest.fixture(scope="session")
def chart_release(control_plane: Any, kube_api: Any) -> ChartRelease:
    """``helm install chromasnap charts/chromasnap`` into the test control plane (once)."""
    if "release" in _shared:
        release: ChartRelease = _shared["release"]
        return release
    out = helm(control_plane, "install", RELEASE, str(CHART), "--namespace",
               OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "120s")
    ext = client.ApiextensionsV1Api(kube_api)

    def established() -> bool:
        crd: Any = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(c.type == "Established" and c.status == "True"
                   for c in crd.status.conditions or [])

    wait_for("the chart's CRD to be established", established, timeout=60)
    release = ChartRelease(RELEASE, OPERATOR_NAMESPACE, OPERATOR_SA, out.stdout)
    _shared["release"] = release
    return release


# --- the operator -----------------------------------------------------------------------


@dataclass
class OperatorProcess:
    """The operator, running as the chart's ServiceAccount."""

    proc: subprocess.Popen[bytes] | None
    log: Path
    liveness: str
    kubeconfig: Path
    argv: list[str]
    env: dict[str, str]

    def log_text(self) -> str:
        """Everything the operator logged so far."""
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc is not None:
            stop_process(self.proc, grace=20)

    def start(self) -> None:
        """(Re)start the process with the same command line, env and log; wait until live."""
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=fh,
                                         stderr=subprocess.STDOUT, cwd=self.log.parent,
                                         preexec_fn=cluster._die_with_parent)  # noqa: PLW1509

        def live() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"operator exited ({self.proc.returncode}):\n"
                            f"{self.log_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.liveness, timeout=1) as r:  # noqa: S310 - loopback
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("the operator's liveness endpoint", live, timeout=60)


def resolve_command(command: list[str]) -> list[str]:
    """``chromasnap`` from a pod spec is the console script installed in the venv."""
    exe = shutil.which(command[0], path=str(VENV_BIN))
    if exe is None:
        raise FileNotFoundError(f"{command[0]} not installed in {VENV_BIN}")
    return [exe, *command[1:]]


def start_operator(control_plane: Any, kube_api: Any, release: ChartRelease, workdir: Path,
                   extra_env: Mapping[str, str] | None = None) -> OperatorProcess:
    """Start the operator exactly as the chart's Deployment runs it (see module docstring)."""
    dep: Any = client.AppsV1Api(kube_api).read_namespaced_deployment(
        release.service_account, release.namespace)
    container = as_dict(kube_api, dep)["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    liveness = f"http://127.0.0.1:{port}/healthz"
    args = [a.replace("http://0.0.0.0:8080/healthz", liveness) for a in container.get("args", [])]
    argv = resolve_command(container["command"]) + args
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "tmp"
    home.mkdir(exist_ok=True)
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    pod_name = f"{release.service_account}-{uuid.uuid4().hex[:5]}"
    for e in container.get("env", []):
        if "value" in e:
            # HOME is the pod's /tmp emptyDir (read-only root filesystem): a temp dir here
            env[e["name"]] = str(home) if e["name"] == "HOME" else e["value"]
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            env[e["name"]] = {"metadata.name": pod_name,
                              "metadata.namespace": release.namespace}[path]
    token = sa_token(kube_api, release.namespace, release.service_account)
    kubeconfig = token_kubeconfig(control_plane, token, workdir / "operator.kubeconfig",
                                  release.service_account)
    env["KUBECONFIG"] = str(kubeconfig)
    # The metrics port, like the liveness port: a free one, on loopback only.
    if "CHROMASNAP_OPERATOR_METRICS_PORT" in env:
        env["CHROMASNAP_OPERATOR_METRICS_PORT"] = str(free_port())
        env["CHROMASNAP_OPERATOR_METRICS_HOST"] = "127.0.0.1"
    env.update(extra_env or {})
    op = OperatorProcess(None, workdir / "operator.log", liveness, kubeconfig, argv, env)
    op.start()
    return op


@pytest.fixture(scope="session")
def operator(control_plane: Any, kube_api: Any, chart_release: ChartRelease,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator for the whole session (tests use a namespace each)."""
    if "operator" in _shared:
        yield _shared["operator"]
        return
    op = start_operator(control_plane, kube_api, chart_release,
                        tmp_path_factory.mktemp("operator"))
    _shared["operator"] = op
    try:
        yield op
    finally:
        _shared.pop("operator", None)
        op.stop()
        errors = [line for line in op.log_text().splitlines() if '"level": "error"' in line
                  or "Traceback" in line]
        # Shown in the test log; individual tests assert on what they care about.
        if errors:
            print(f"operator logged {len(errors)} error lines, e.g. {errors[:3]}")


@pytest.fixture
def namespace(kube_api: Any) -> Iterator[str]:
    """A fresh namespace for one test (deleted afterwards, without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


# --- ChromaCollections ------------------------------------------------------------------


def collection_body(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A ChromaCollection manifest; ``spec`` entries are merged over a small default spec."""
    base: dict[str, Any] = {
        "collection": {"name": "docs", "dimension": 8},
        "storage": {"bucket": "chromasnap-test", "prefix": f"collections/{name}"},
    }
    for k, v in spec.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaCollection",
            "metadata": {"name": name, "namespace": namespace}, "spec": base}


class Collections:
    """ChromaCollection calls as the admin."""

    def __init__(self, kube_api: Any) -> None:
        self.api = client.CustomObjectsApi(kube_api)

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create; returns the stored object."""
        meta = body["metadata"]
        out: dict[str, Any] = self.api.create_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], PLURAL, dict(body))
        return out

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        """Read (raises ApiException 404)."""
        out: dict[str, Any] = self.api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name)
        return out

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the main resource."""
        out: dict[str, Any] = self.api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, dict(patch),
            _content_type="application/merge-patch+json")
        return out

    def delete(self, namespace: str, name: str) -> None:
        """Delete (background propagation, as kubectl does)."""
        self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def condition(self, namespace: str, name: str, ctype: str) -> dict[str, Any] | None:
        """One condition of the current status."""
        status = self.get(namespace, name).get("status") or {}
        for c in status.get("conditions") or []:
            if c.get("type") == ctype:
                return dict(c)
        return None

    def wait_condition(self, namespace: str, name: str, ctype: str, status: str,
                       reason: str | None = None, timeout: float = 60) -> dict[str, Any]:
        """Wait until condition ``ctype`` has ``status`` (and ``reason``)."""
        def probe() -> dict[str, Any] | None:
            c = self.condition(namespace, name, ctype)
            if c and c["status"] == status and (reason is None or c["reason"] == reason):
                return c
            return None

        return wait_for(f"{namespace}/{name} condition {ctype}={status}"
                        + (f" ({reason})" if reason else ""), probe, timeout=timeout)


def create_secret(kube_api: Any, namespace: str, name: str, data: Mapping[str, str]) -> None:
    """An Opaque Secret from plain strings."""
    client.CoreV1Api(kube_api).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=name), string_data=dict(data)))


# --- pods as processes ------------------------------------------------------------------


@dataclass
class PodProcess:
    """A pod's container running as a local process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """Its output so far."""
        return self.log.read_text(errors="replace")

    def wait_http(self, path: str, timeout: float = 90.0) -> None:
        """Poll ``path`` until 200 (fail with the log if the process exits)."""
        def ok() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.proc.returncode}):\n"
                            f"{self.log_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as r:  # noqa: S310
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(f"{self.name} to answer {path}", ok, timeout=timeout, interval=0.1)

    def wait(self, timeout: float = 180.0) -> int:
        """Wait for exit; returns the exit code."""
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM (as the kubelet does), then SIGKILL."""
        stop_process(self.proc, grace=30)


class PodRunner:
    """Runs containers of pod templates the operator generated (see module docstring)."""

    def __init__(self, control_plane: Any, kube_api: Any, namespace: str, workdir: Path) -> None:
        self.cp = control_plane
        self.kube_api = kube_api
        self.namespace = namespace
        self.workdir = workdir
        self.core = client.CoreV1Api(kube_api)
        self.procs: list[PodProcess] = []

    def _config_map(self, name: str) -> dict[str, str]:
        cm: Any = self.core.read_namespaced_config_map(name, self.namespace)
        return dict(cm.data or {})

    def _secret(self, name: str) -> dict[str, str]:
        s: Any = self.core.read_namespaced_secret(name, self.namespace)
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def environment(self, template: Mapping[str, Any], pod_name: str,
                    services: Mapping[str, str], port: int | None,
                    ) -> tuple[list[str], dict[str, str], dict[str, Path]]:
        """argv, env and local paths for the first container of ``template`` (a pod template)."""
        pod = template["spec"]
        container = pod["containers"][0]
        root = self.workdir / pod_name
        root.mkdir(parents=True, exist_ok=True)
        # 3. volumes: emptyDirs and the termination-message file become local paths
        mounts: dict[str, Path] = {}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for m in container.get("volumeMounts", []):
            vol = volumes[m["name"]]
            local = root / m["name"]
            local.mkdir(exist_ok=True)
            if "secret" in vol:
                # A Secret volume: its items as files, with the volume's mode.
                src = vol["secret"]
                data = self._secret(src["secretName"])
                for item in src.get("items") or [{"key": k, "path": k} for k in data]:
                    f = local / item["path"]
                    f.write_text(data[item["key"]])
                    f.chmod(item.get("mode", src.get("defaultMode", 0o644)))
            elif "emptyDir" not in vol:
                raise AssertionError(f"unexpected volume {vol} in {pod_name}")
            mounts[m["mountPath"]] = local
        term = container.get("terminationMessagePath", "/dev/termination-log")
        files = {"termination-log": root / "termination-log"}

        def local_path(value: str) -> str:
            if "," in value:  # a list of paths (CHROMASNAP_AUTH_TOKEN_FILE)
                return ",".join(local_path(v) for v in value.split(","))
            if value == term:
                return str(files["termination-log"])
            for mount, local in mounts.items():
                if value == mount or value.startswith(mount.rstrip("/") + "/"):
                    return str(local) + value[len(mount.rstrip("/")):]
            return value

        def dns(value: str) -> str:
            # 1. cluster DNS -> loopback: "<svc>.<ns>.svc[:port]" and URLs holding it
            for svc, local in services.items():
                host = f"{svc}.{self.namespace}.svc"
                value = value.replace(f"{host}:8000", local).replace(host, local)
            return value

        # 5. the image's environment (images/Dockerfile ENV) is the test venv's
        env: dict[str, str] = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "PYTHONUNBUFFERED": "1",
                               "HOME": str(mounts.get(TMP_DIR, root)),
                               "ANONYMIZED_TELEMETRY": "False"}
        for ef in container.get("envFrom", []):
            if "configMapRef" in ef:
                env.update(self._config_map(ef["configMapRef"]["name"]))
            elif "secretRef" in ef:
                env.update(self._secret(ef["secretRef"]["name"]))
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
                continue
            src = e["valueFrom"]
            if "fieldRef" in src:
                env[e["name"]] = {
                    "metadata.name": pod_name, "metadata.namespace": self.namespace,
                    "spec.serviceAccountName": pod.get("serviceAccountName", "default"),
                    # Every "pod" here is a local process: the others reach it on loopback.
                    "status.podIP": "127.0.0.1",
                }[src["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                env[e["name"]] = self._secret(ref["name"])[ref["key"]]
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                env[e["name"]] = self._config_map(ref["name"])[ref["key"]]
            else:
                raise AssertionError(f"unsupported env source {src}")
        env = {k: dns(local_path(v)) for k, v in env.items()}
        # 2. the container port -> a free loopback port
        ports = [p["containerPort"] for p in container.get("ports", [])]
        if ports:
            assert port is not None
            assert env.get("CHROMASNAP_PORT") == str(ports[0]), "pod env names its port"
            env["CHROMASNAP_PORT"] = str(port)
            env["CHROMASNAP_HOST"] = "127.0.0.1"
        # 4. the ServiceAccount token mount -> KUBECONFIG with that account's token
        if pod.get("automountServiceAccountToken", True):
            sa = pod.get("serviceAccountName", "default")
            token = sa_token(self.kube_api, self.namespace, sa)
            env["KUBECONFIG"] = str(token_kubeconfig(self.cp, token, root / "kubeconfig", sa))
            files["kubeconfig"] = root / "kubeconfig"
        argv = resolve_command([*container["command"], *container.get("args", [])])
        return argv, env, files

    def start(self, template: Mapping[str, Any], pod_name: str,
              services: Mapping[str, str] | None = None, serve: bool = False,
              port: int | None = None) -> PodProcess:
        """Start the container; ``serve`` gives it ``port`` or a free one (HTTP workloads)."""
        port = (port or free_port()) if serve else None
        argv, env, files = self.environment(template, pod_name, services or {}, port)
        log = self.workdir / f"{pod_name}.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=self.workdir / pod_name,
                                    preexec_fn=cluster._die_with_parent)  # noqa: PLW1509
        p = PodProcess(pod_name, argv, env, proc, log, port, files)
        self.procs.append(p)
        return p

    def run(self, template: Mapping[str, Any], pod_name: str,
            timeout: float = 240.0) -> PodProcess:
        """Run a Job's container to completion (fails the test on a timeout)."""
        p = self.start(template, pod_name)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.stop()
            pytest.fail(f"{pod_name} did not finish in {timeout:.0f}s:\n{p.log_text()[-4000:]}")
        return p

    def stop_all(self) -> None:
        """Stop every process this runner started."""
        for p in self.procs:
            p.stop()
        self.procs.clear()


def raw(kube_api: Any, method: str, url_path: str, body: Any = None,
        content_type: str = "application/json") -> dict[str, Any] | None:
    """Any REST call as plain JSON; ``None`` on 404, ``ApiException`` on other errors."""
    import json

    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    m, url, h, b, _ = kube_api.param_serialize(method, url_path, header_params=headers,
                                               body=body, auth_settings=["BearerToken"])
    resp = kube_api.call_api(m, url, h, b)
    data = resp.read()
    if resp.status == 404:
        return None
    if resp.status >= 400:
        raise ApiException(status=resp.status, reason=str(resp.reason),
                           body=data.decode(errors="replace"))
    out: dict[str, Any] = json.loads(data) if data else {}
    return out


def get_manifest(kube_api: Any, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The live object a manifest describes (``None`` if it does not exist)."""
    from chromasnap.operator.kubeapi import object_path

    return raw(kube_api, "GET", object_path(manifest))


class Runner(PodRunner):
    """``PodRunner``, plus the same substitution for the readers' internal port (the port
    writers push deltas to) that it makes for the HTTP port: ``CHROMASNAP_INTERNAL_PORT``
    becomes ``internal_port``, and ``<service>.<ns>.svc:8001`` in env becomes
    ``internal[service]`` (the local process playing that Service's internal port)."""

    def start_pod(self, template: Mapping[str, Any], pod_name: str, *,
                  services: Mapping[str, str], port: int,
                  internal: Mapping[str, str] | None = None,
                  internal_port: int | None = None) -> PodProcess:
        """Start an HTTP workload's container (see the class docstring)."""
        t = copy.deepcopy(dict(template))
        for e in t["spec"]["containers"][0].get("env", []):
            if "value" not in e:
                continue
            if e["name"] == "CHROMASNAP_INTERNAL_PORT":
                assert e["value"] == str(INTERNAL_PORT) and internal_port is not None
                e["value"] = str(internal_port)
            for svc, local in (internal or {}).items():
                e["value"] = e["value"].replace(
                    f"{svc}.{self.namespace}.svc:{INTERNAL_PORT}", local)
        return self.start(t, pod_name, services=services, serve=True, port=port)


def pod_template(kube_api: Any, kind: str, ns: str, name: str) -> dict[str, Any]:
    """The pod template of Deployment or Job ``name``, as the API server holds it."""
    if kind == "Deployment":
        obj: Any = client.AppsV1Api(kube_api).read_namespaced_deployment(name, ns)
    else:
        obj = client.BatchV1Api(kube_api).read_namespaced_job(name, ns)
    template: dict[str, Any] = as_dict(kube_api, obj)["spec"]["template"]
    return template
