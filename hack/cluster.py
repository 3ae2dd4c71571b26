#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, for tests and local runs.

Starts, on 127.0.0.1 and free ports:

- ``etcd``;
- ``kube-apiserver`` with ``--authorization-mode=Node,RBAC``, client-certificate
  authentication (the admin identity is a client cert in ``system:masters``) and
  service-account token issuing (a generated signing keypair);
- ``kube-controller-manager`` with all default controllers (deployments,
  replicasets, jobs, cronjobs, garbage collector, namespace, serviceaccount,
  serviceaccount-token, ...) and ``--use-service-account-credentials``;
- ``kube-scheduler``, because nothing else gives pods a ``nodeName`` (kwok only
  plays the kubelet's part for pods already bound to its nodes);
- the ``kwok`` controller with kwok's own default stages, managing one fake
  Node, so scheduled pods are reported Running (and Job pods Succeeded).

The binaries come from ``hack/build-tools.sh`` (``${CHROMASNAP_CACHE:-~/.cache/
chromasnap}/bin``). Certificates are made with the ``openssl`` command.

Library use::

    with ControlPlane() as cp:
        cp.kubeconfig_path, cp.api_url

CLI::

    python hack/cluster.py up --dir DIR     # prints the kubeconfig path, leaves it running
    python hack/cluster.py down --dir DIR   # stops every process ``up`` started
    python hack/cluster.py status --dir DIR

Everything lives in DIR: ``kubeconfig`` (admin), ``pki/``, ``logs/<server>.log``,
``etcd-data/`` and ``state.json`` (pids, ports, URLs).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

#: binaries the control plane needs, in start order
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

NODE_NAME = "kwok-node-0"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
POD_CIDR = "10.244.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "chromasnap-admin"
STATE_FILE = "state.json"


class ClusterError(RuntimeError):
    """The control plane could not be started (the message names the server and its log)."""


# ---------------------------------------------------------------------------------
# where things are


def cache_dir() -> Path:
    """``${CHROMASNAP_CACHE:-$HOME/.cache/chromasnap}``, where build-tools.sh builds."""
    env = os.environ.get("CHROMASNAP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "chromasnap"


def bin_dir() -> Path:
    """Directory holding the built binaries."""
    return cache_dir() / "bin"


def build_running() -> bool:
    """True while a ``hack/build-tools.sh`` holds the cache's build lock (``make test``
    runs one in the background while the first tests run)."""
    lock = cache_dir() / ".build.lock"
    if not lock.exists():
        return False
    with lock.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def _stderr_line(msg: str) -> None:
    sys.stderr.write(msg + "\n")


#: Where progress lines go; pytest's conftest points it at the terminal reporter (the
#: tests' own stderr is captured).
say: Callable[[str], None] = _stderr_line


def await_tools(*names: str, timeout: float = 3600.0) -> None:
    """Wait while a background build is making any of ``names`` (no-op when none runs)."""
    stamps = [bin_dir() / ".stamps" / n for n in names]
    if all(s.is_file() for s in stamps) or not build_running():
        return
    log = os.environ.get("CHROMASNAP_TOOLS_LOG", "")
    say(f"==> waiting for the background build of {', '.join(names)}"
        f"{f' (progress: {log})' if log else ''}")
    start = time.monotonic()
    while not all(s.is_file() for s in stamps) and build_running():
        if time.monotonic() - start > timeout:
            raise ClusterError(f"{', '.join(names)} not built after waiting {timeout:.0f}s")
        time.sleep(1)  # polling another process's progress: no event to wait on
    say(f"==> {', '.join(names)}: waited {time.monotonic() - start:.0f}s")


def tool(name: str) -> Path:
    """The built binary ``name``, after waiting for a background build that is making it.

    Raises :class:`ClusterError` when it is not built and no build is running, or the
    build ended without it (the message quotes the build log's last lines).
    """
    await_tools(name)
    path = bin_dir() / name
    if os.access(path, os.X_OK):
        return path
    hint = "run `hack/build-tools.sh test` (make test builds it)"
    log = os.environ.get("CHROMASNAP_TOOLS_LOG")
    if log and Path(log).is_file():
        tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-30:])
        hint += f"; the background build's last lines ({log}):\n{tail}"
    raise ClusterError(f"{name} is not built at {path}: {hint}")


def pinned_version(tool: str, bins: Path | None = None) -> str | None:
    """The version build-tools.sh recorded for ``tool`` (``None`` if not built)."""
    stamp = (bins or bin_dir()) / ".stamps" / tool
    try:
        words = stamp.read_text().split()
    except OSError:
        return None
    if len(words) < 2 or "@" not in words[1]:
        return None
    return words[1].rsplit("@", 1)[1]


def kwok_stages_file(bins: Path | None = None) -> Path | None:
    """kwok's default stages, published by build-tools.sh next to the kwok binary."""
    version = pinned_version("kwok", bins)
    if version is None:
        return None
    root = (bins or bin_dir()).parent
    path = root / "share" / f"kwok-{version}" / "stages.yaml"
    return path if path.is_file() else None


def missing_binaries(bins: Path | None = None) -> list[str]:
    """Names of the needed binaries (and kwok's stage file) that are not built yet."""
    if bins is None:
        await_tools(*BINARIES)
    where = bins or bin_dir()
    missing = [b for b in BINARIES if not os.access(where / b, os.X_OK)]
    if "kwok" not in missing and kwok_stages_file(where) is None:
        missing.append("kwok stages (share/kwok-*/stages.yaml)")
    return missing


def free_port() -> int:
    """A loopback port that was free a moment ago (start-up retries if it loses a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------
# certificates (openssl CLI: the venv has no `cryptography`)

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
"""


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OPENSSL_CONF": str(cwd / "openssl.cnf")},
    )
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class Pki:
    """Paths of the generated key material."""

    dir: Path

    def crt(self, name: str) -> Path:
        """Certificate file of ``name``."""
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        """Private key file of ``name``."""
        return self.dir / f"{name}.key"

    @property
    def ca(self) -> Path:
        """The cluster CA certificate (also the client CA)."""
        return self.crt("ca")

    @property
    def sa_key(self) -> Path:
        """Service-account token signing key (private)."""
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        """Service-account token verification key (public)."""
        return self.dir / "sa.pub"


def make_pki(directory: Path) -> Pki:
    """A CA, serving certs for the servers, client certs per identity, an SA keypair."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "openssl.cnf").write_text(_OPENSSL_CNF)
    pki = Pki(directory)
    ec = ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")

    _openssl("genpkey", *ec, "-out", "ca.key", cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=chromasnap-test-ca",
        "-days", "3650", "-out", "ca.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=directory,
    )  # fmt: skip

    def issue(name: str, subject: str, usage: str, sans: Sequence[str] = ()) -> None:
        ext = [
            "[ext]",
            "basicConstraints = critical,CA:FALSE",
            "keyUsage = critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage = {usage}",
        ]
        if sans:
            ext.append("subjectAltName = " + ",".join(sans))
        (directory / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _openssl("genpkey", *ec, "-out", f"{name}.key", cwd=directory)
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject,
                 "-out", f"{name}.csr", cwd=directory)  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(secrets.randbits(63)), "-days", "365",
            "-extfile", f"{name}.ext", "-extensions", "ext", "-out", f"{name}.crt",
            cwd=directory,
        )  # fmt: skip

    loopback_sans = ["IP:127.0.0.1", "DNS:localhost"]
    issue(
        "apiserver",
        "/CN=kube-apiserver",
        "serverAuth",
        [
            *loopback_sans,
            f"IP:{SERVICE_IP}",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ],
    )
    issue("serving", "/CN=chromasnap-components", "serverAuth", loopback_sans)
    issue("admin", f"/O=system:masters/CN={ADMIN_USER}", "clientAuth")
    issue("controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
    issue("scheduler", "/CN=system:kube-scheduler", "clientAuth")
    # the aggregation layer's identity (kubeadm uses a separate CA; one CA is enough
    # here because --requestheader-allowed-names pins the CN)
    issue("front-proxy-client", "/CN=front-proxy-client", "clientAuth")
    # RSA for service-account tokens (RS256, what every JWT consumer accepts)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", "sa.key", cwd=directory)  # fmt: skip
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    for f in directory.iterdir():
        if f.suffix in {".csr", ".ext", ".srl"}:
            f.unlink()
        elif f.suffix == ".key":
            f.chmod(0o600)
    return pki


def write_kubeconfig(path: Path, server: str, pki: Pki, user: str, context: str) -> None:
    """A kubeconfig authenticating with ``user``'s client certificate."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "chromasnap",
                "cluster": {"server": server, "certificate-authority": str(pki.ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki.crt(user)),
                    "client-key": str(pki.key(user)),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": "chromasnap", "user": user}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)


# ---------------------------------------------------------------------------------
# processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """preexec_fn: SIGKILL the child if the parent (test runner) dies."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class Server:
    """One started process."""

    name: str
    binary: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0

    def alive(self) -> bool:
        """Whether the process still runs (works for ``down`` from another process too)."""
        if self.proc is not None:
            return self.proc.poll() is None
        return _pid_runs_binary(self.pid, self.binary)

    def log_tail(self, lines: int = 25) -> str:
        """Last lines of the server's log, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _pid_runs_binary(pid: int, binary: Path) -> bool:
    """True if ``pid`` is alive and runs ``binary`` (guards against reused pids)."""
    if pid <= 0:
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # a zombie (state Z) is gone for our purposes
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    exe = exe.removesuffix(" (deleted)")
    return state != "Z" and Path(exe) == binary.resolve()


def _terminate(servers: Sequence[Server], timeout: float = 15.0) -> None:
    """SIGTERM each server (in the given order), then SIGKILL whatever outlives ``timeout``."""
    for s in servers:
        if not s.alive():
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(s.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while s.alive() and time.monotonic() < deadline:
            if s.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    s.proc.wait(timeout=0.2)
            else:
                time.sleep(0.1)
        if s.alive():
            _log(f"{s.name} (pid {s.pid}) ignored SIGTERM for {timeout:.0f}s; killing")
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.pid, signal.SIGKILL)
            if s.proc is not None:
                s.proc.wait(timeout=10)
            else:
                deadline = time.monotonic() + 10
                while s.alive() and time.monotonic() < deadline:
                    time.sleep(0.1)
        elif s.proc is not None:
            s.proc.wait(timeout=10)


# ---------------------------------------------------------------------------------
# HTTP helpers


def _get(url: str, ctx: ssl.SSLContext | None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method="GET")  # noqa: S310 - fixed loopback URLs
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:  # noqa: S310
            status: int = resp.status
            return status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------------------------
# the control plane


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on loopback.

    ``start()`` returns once the API server is ready, the controllers and the
    scheduler report healthy, the kwok node is Ready and schedulable, and the
    ``default`` ServiceAccount exists (so pods can be created). ``stop()`` ends
    every process it started. Use as a context manager for both.
    """

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        bins: Path | None = None,
        startup_timeout: float = 180.0,
        die_with_parent: bool = True,
        keep_dir: bool | None = None,
    ) -> None:
        """Configure; nothing runs until ``start``.

        ``directory`` holds certs, kubeconfig, logs and etcd data (a temp dir if
        omitted, removed on ``stop`` unless ``keep_dir``). ``die_with_parent``
        makes the servers die with this process (the CLI ``up`` turns it off).
        """
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="chromasnap-cluster-")).resolve()
        self.bins = (bins or bin_dir()).resolve()
        self.startup_timeout = startup_timeout
        self.die_with_parent = die_with_parent
        self.keep_dir = (not self._own_dir) if keep_dir is None else keep_dir
        self.servers: list[Server] = []
        self.ports: dict[str, int] = {}
        self._pki: Pki | None = None
        self._ctx: ssl.SSLContext | None = None

    # -- public surface -------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        """Admin kubeconfig (client cert in ``system:masters``)."""
        return self.dir / "kubeconfig"

    @property
    def api_url(self) -> str:
        """``https://127.0.0.1:<port>`` of the API server."""
        if "apiserver" not in self.ports:
            raise ClusterError("control plane not started")
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def ca_path(self) -> Path:
        """CA certificate the API server's serving cert chains to."""
        return self.dir / "pki" / "ca.crt"

    @property
    def logs_dir(self) -> Path:
        """Where each server's log goes (``<name>.log``)."""
        return self.dir / "logs"

    def start(self) -> ControlPlane:
        """Start everything and wait until it is usable; on failure stop what started."""
        missing = missing_binaries(self.bins)
        if missing:
            raise ClusterError(
                f"missing in {self.bins}: {', '.join(missing)} (run hack/build-tools.sh k8s)"
            )
        t0 = time.monotonic()
        try:
            self._prepare_dir()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            self._create_node()
            self._start_kwok()
            self._wait_usable()
        except BaseException:
            self.stop()
            raise
        _log(f"control plane ready in {time.monotonic() - t0:.1f}s at {self.api_url}")
        return self

    def stop(self) -> None:
        """Stop every server this object started (reverse order); remove a temp dir."""
        _terminate(list(reversed(self.servers)))
        self.servers = []
        if not self.keep_dir and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        """Start."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()

    def api(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """A raw API call as the admin identity; returns (status, decoded JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - the loopback API server
            self.api_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._tls()) as resp:  # noqa: S310
                status: int = resp.status
                raw: bytes = resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def state(self) -> dict[str, Any]:
        """What ``down``/``status`` need to find the processes again."""
        return {
            "api_url": self.api_url,
            "kubeconfig": str(self.kubeconfig_path),
            "ports": self.ports,
            "processes": [
                {"name": s.name, "pid": s.pid, "binary": str(s.binary), "log": str(s.log)}
                for s in self.servers
            ],
        }

    # -- steps ------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        # a fresh cluster every start: new keys, empty etcd
        for sub in ("pki", "etcd-data"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._pki = make_pki(self.dir / "pki")

    @property
    def pki(self) -> Pki:
        """The generated key material."""
        if self._pki is None:
            raise ClusterError("control plane not started")
        return self._pki

    def _tls(self) -> ssl.SSLContext:
        """TLS as the admin: verify against our CA, present the admin client cert."""
        if self._ctx is None:
            ctx = ssl.create_default_context(cafile=str(self.pki.ca))
            ctx.load_cert_chain(str(self.pki.crt("admin")), str(self.pki.key("admin")))
            self._ctx = ctx
        return self._ctx

    def _spawn(self, name: str, args: Sequence[str]) -> Server:
        binary = self.bins / name
        log = self.logs_dir / f"{name}.log"
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%FT%T')} {binary} {' '.join(args)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [str(binary), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        server = Server(name=name, binary=binary, log=log, proc=proc, pid=proc.pid)
        self.servers.append(server)
        return server

    def _start_waiting(
        self,
        name: str,
        make_args: Callable[[], list[str]],
        ready: Callable[[], bool],
        attempts: int = 3,
    ) -> None:
        """Start ``name`` and poll ``ready``; retry with fresh ports if a port was taken."""
        for attempt in range(1, attempts + 1):
            t0 = time.monotonic()
            server = self._spawn(name, make_args())
            deadline = t0 + self.startup_timeout
            while time.monotonic() < deadline:
                if not server.alive():
                    break
                with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                    if ready():
                        _log(f"{name} ready in {time.monotonic() - t0:.1f}s (pid {server.pid})")
                        return
                time.sleep(0.2)
            tail = server.log_tail()
            if not server.alive() and "address already in use" in tail and attempt < attempts:
                _log(f"{name}: a port was taken meanwhile; retrying with new ports")
                self.servers.remove(server)
                continue
            state = "exited" if not server.alive() else "not ready in time"
            raise ClusterError(f"{name} {state}; log {server.log}:\n{tail}")

    def _start_etcd(self) -> None:
        data = self.dir / "etcd-data"

        def args() -> list[str]:
            self.ports["etcd"] = client = free_port()
            self.ports["etcd-peer"] = peer = free_port()
            return [
                "--name=chromasnap",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=chromasnap=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # throwaway test data: skip fsync, save the disk
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ]

        def ready() -> bool:
            status, body = _get(f"http://127.0.0.1:{self.ports['etcd']}/health", None)
            return status == 200 and json.loads(body).get("health") == "true"

        self._start_waiting("etcd", args, ready)

    def _start_apiserver(self) -> None:
        pki = self.pki

        def args() -> list[str]:
            self.ports["apiserver"] = port = free_port()
            return [
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.crt('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca}",
                "--authorization-mode=Node,RBAC",
                f"--requestheader-client-ca-file={pki.ca}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.crt('front-proxy-client')}",
                f"--proxy-client-key-file={pki.key('front-proxy-client')}",
                "--anonymous-auth=false",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # no kubelet on this machine publishes the `kubernetes` Service endpoint
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ]

        def ready() -> bool:
            status, body = _get(f"{self.api_url}/readyz", self._tls())
            return status == 200 and body.strip() == b"ok"

        self._start_waiting("kube-apiserver", args, ready)
        write_kubeconfig(self.kubeconfig_path, self.api_url, pki, "admin", "chromasnap")
        for ident in ("controller-manager", "scheduler"):
            write_kubeconfig(
                self.dir / f"{ident}.kubeconfig", self.api_url, pki, ident, "chromasnap"
            )

    def _healthz(self, key: str) -> Callable[[], bool]:
        serving = ssl.create_default_context(cafile=str(self.pki.ca))

        def ready() -> bool:
            status, body = _get(f"https://127.0.0.1:{self.ports[key]}/healthz", serving)
            return status == 200 and body.strip() == b"ok"

        return ready

    def _component_args(self, key: str, kubeconfig: Path) -> list[str]:
        self.ports[key] = port = free_port()
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={self.pki.crt('serving')}",
            f"--tls-private-key-file={self.pki.key('serving')}",
            "--leader-elect=false",
        ]

    def _start_controller_manager(self) -> None:
        pki = self.pki

        def args() -> list[str]:
            return [
                *self._component_args(
                    "controller-manager", self.dir / "controller-manager.kubeconfig"
                ),
                # every default controller: deployment, replicaset, job, cronjob,
                # garbagecollector, namespace, serviceaccount, serviceaccount-token, ...
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca}",
                f"--cluster-signing-cert-file={pki.ca}",
                f"--cluster-signing-key-file={pki.key('ca')}",
                "--cluster-name=chromasnap",
                "--profiling=false",
            ]

        self._start_waiting("kube-controller-manager", args, self._healthz("controller-manager"))

    def _start_scheduler(self) -> None:
        def args() -> list[str]:
            return [
                *self._component_args("scheduler", self.dir / "scheduler.kubeconfig"),
                "--profiling=false",
            ]

        self._start_waiting("kube-scheduler", args, self._healthz("scheduler"))

    def _create_node(self) -> None:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {
                    KWOK_NODE_ANNOTATION: "fake",
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": arch,
                    "type": "kwok",
                },
            },
            "status": {"allocatable": resources, "capacity": resources},
        }
        status, body = self.api("POST", "/api/v1/nodes", node)
        if status != 201:
            raise ClusterError(f"creating node {NODE_NAME}: HTTP {status}: {body}")

    def _start_kwok(self) -> None:
        stages = kwok_stages_file(self.bins)
        if stages is None:
            raise ClusterError("kwok stages missing (run hack/build-tools.sh kwok)")

        def args() -> list[str]:
            self.ports["kwok"] = port = free_port()
            return [
                f"--kubeconfig={self.kubeconfig_path}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{port}",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
            ]

        def ready() -> bool:
            status, _ = _get(f"http://127.0.0.1:{self.ports['kwok']}/healthz", None)
            return status == 200

        self._start_waiting("kwok", args, ready)

    def _wait_usable(self) -> None:
        """Node Ready and schedulable; `default` ServiceAccount present."""
        deadline = time.monotonic() + self.startup_timeout
        t0 = time.monotonic()
        waiting_for = "node"
        while time.monotonic() < deadline:
            for s in self.servers:
                if not s.alive():
                    raise ClusterError(f"{s.name} exited; log {s.log}:\n{s.log_tail()}")
            if waiting_for == "node":
                _, node = self.api("GET", f"/api/v1/nodes/{NODE_NAME}")
                if isinstance(node, dict) and _node_schedulable(node):
                    _log(f"node {NODE_NAME} Ready in {time.monotonic() - t0:.1f}s")
                    waiting_for = "serviceaccount"
                    continue
            else:
                status, _ = self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
                if status == 200:
                    return
            time.sleep(0.2)
        raise ClusterError(f"timed out waiting for the {waiting_for} (logs in {self.logs_dir})")


def _node_schedulable(node: dict[str, Any]) -> bool:
    status = node.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    blocking = [
        t
        for t in (node.get("spec") or {}).get("taints") or []
        if t.get("effect") in {"NoSchedule", "NoExecute"}
    ]
    return ready and not blocking and not (node.get("spec") or {}).get("unschedulable")


# ---------------------------------------------------------------------------------
# CLI


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


def _servers_from_state(state: dict[str, Any]) -> list[Server]:
    return [
        Server(name=p["name"], binary=Path(p["binary"]), log=Path(p["log"]), pid=int(p["pid"]))
        for p in state.get("processes", [])
    ]


def cmd_up(directory: Path, timeout: float) -> int:
    """Start a control plane in ``directory`` and leave it running."""
    directory = directory.resolve()
    old = _read_state(directory)
    if old and any(s.alive() for s in _servers_from_state(old)):
        _log(f"a control plane from {directory} is still running; run `down --dir` first")
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(directory, startup_timeout=timeout, die_with_parent=False, keep_dir=True)
    try:
        cp.start()
    except ClusterError as e:
        _log(str(e))
        return 1
    (directory / STATE_FILE).write_text(json.dumps(cp.state(), indent=2) + "\n")
    (directory / "pids").write_text("".join(f"{s.pid} {s.name}\n" for s in cp.servers))
    print(cp.kubeconfig_path)
    return 0


def cmd_down(directory: Path) -> int:
    """Stop every process ``up`` started in ``directory``."""
    directory = directory.resolve()
    state = _read_state(directory)
    if state is None:
        _log(f"no {STATE_FILE} in {directory}; nothing to stop")
        return 0
    servers = _servers_from_state(state)
    _terminate(list(reversed(servers)))
    still = [s for s in servers if s.alive()]
    if still:
        _log("still running: " + ", ".join(f"{s.name} ({s.pid})" for s in still))
        return 1
    (directory / STATE_FILE).unlink(missing_ok=True)
    (directory / "pids").unlink(missing_ok=True)
    _log(f"stopped {len(servers)} processes; logs kept in {directory / 'logs'}")
    return 0


def cmd_status(directory: Path) -> int:
    """Print which servers of ``directory`` run."""
    state = _read_state(directory.resolve())
    if state is None:
        print("not running")
        return 1
    servers = _servers_from_state(state)
    for s in servers:
        print(f"{s.name:26} pid {s.pid:<8} {'running' if s.alive() else 'NOT running'}")
    print(f"api {state['api_url']}  kubeconfig {state['kubeconfig']}")
    return 0 if all(s.alive() for s in servers) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python hack/cluster.py``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start and leave running; prints the kubeconfig path")
    up.add_argument("--dir", type=Path, required=True)
    up.add_argument("--timeout", type=float, default=180.0, help="per-server start timeout (s)")
    down = sub.add_parser("down", help="stop what `up` started")
    down.add_argument("--dir", type=Path, required=True)
    status = sub.add_parser("status", help="show whether the servers run")
    status.add_argument("--dir", type=Path, required=True)
    sub.add_parser("missing", help="list binaries not built yet (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.command == "up":
        return cmd_up(args.dir, args.timeout)
    if args.command == "down":
        return cmd_down(args.dir)
    if args.command == "status":
        return cmd_status(args.dir)
    missing = missing_binaries()
    for m in missing:
        print(m)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
