"""The plugin's view of the cluster: kubeconfig and namespace, REST calls as plain JSON,
and errors that say what to do.

Objects are handled as the JSON the API serves (camelCase, what ``kubectl get -o yaml``
shows), through the ``kubernetes`` client's transport and authentication: the support
bundle stores them as they are, and nothing depends on the client's typed models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from chromasnap.resource import DATABASE_KIND, DATABASE_PLURAL, GROUP, KIND, PLURAL, VERSION

#: Field manager of the plugin's writes (the compact-now annotation, restored collections).
FIELD_MANAGER = "kubectl-chromasnap"
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# (API prefix, plural) of the kinds the plugin reads, by kind.
_PATHS = {
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Job": ("/apis/batch/v1", "jobs"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    KIND: (f"/apis/{GROUP}/{VERSION}", PLURAL),
    DATABASE_KIND: (f"/apis/{GROUP}/{VERSION}", DATABASE_PLURAL),
}


class PluginError(Exception):
    """A failure to show the user as it is: ``str()`` says what happened and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ApiFailure(PluginError):
    """The API server refused a call (``status`` is its HTTP status)."""

    def __init__(self, message: str, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(ApiFailure):
    """404: the object (or the resource type) does not exist."""


def path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    """REST path of a namespaced object (or of the list, without ``name``)."""
    prefix, plural = _PATHS[kind]
    out = f"{prefix}/namespaces/{quote(namespace, safe='')}/{plural}"
    if name is not None:
        out += f"/{quote(name, safe='')}"
    if sub is not None:
        out += f"/{sub}"
    return out


def _resource_of(url_path: str) -> tuple[str, bool]:
    """(``plural[.group][/sub]`` as RBAC names it, whether the path names one object)."""
    parts = [p for p in url_path.split("?", maxsplit=1)[0].split("/") if p]
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[parts.index("namespaces") + 2:] if "namespaces" in parts else parts[-1:]
    plural = rest[0] if rest else "?"
    resource = f"{plural}.{group}" if group else plural
    if len(rest) > 2:
        resource += "/" + rest[2].split(":")[0]
    return resource, len(rest) > 1


def _verb(method: str, named: bool) -> str:
    return {"GET": "get" if named else "list", "POST": "create", "PATCH": "patch",
            "PUT": "update", "DELETE": "delete"}.get(method, method.lower())


@dataclass
class Kube:
    """An authenticated connection and the namespace commands work in."""

    api: Any
    namespace: str
    context: str | None
    server: str

    def request(self, method: str, url_path: str, *, query: Iterable[tuple[str, str]] = (),
                body: Any = None, content_type: str = "application/json",
                timeout: float = 30.0, raw: bool = False) -> Any:
        """One REST call; parsed JSON (or the text with ``raw``). Raises :class:`ApiFailure`
        (:class:`NotFound` on 404) or :class:`PluginError` when the server is unreachable."""
        import urllib3

        headers = {"Accept": "*/*" if raw else "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            m, url, h, b, _ = self.api.param_serialize(
                method, url_path, query_params=list(query), header_params=headers, body=body,
                auth_settings=["BearerToken"])
            resp = self.api.call_api(m, url, h, b, _request_timeout=timeout)
            data: bytes = resp.read()
        except urllib3.exceptions.HTTPError as e:
            raise PluginError(
                f"cannot reach the API server at {self.server}: {e.__class__.__name__}: {e}; "
                "check the kubeconfig context (--context, --kubeconfig, KUBECONFIG)") from e
        if resp.status >= 400:
            raise self._failure(method, url_path, resp.status, data)
        if raw:
            return data.decode(errors="replace")
        return json.loads(data) if data else {}

    def get(self, url_path: str, query: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
        """GET an object or list as JSON."""
        out: dict[str, Any] = self.request("GET", url_path, query=query)
        return out

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        """Objects of ``kind`` in the namespace, optionally by label selector."""
        query = [("labelSelector", selector)] if selector else []
        items: list[dict[str, Any]] = self.get(path(kind, self.namespace), query).get(
            "items") or []
        return items

    def collection(self, name: str) -> dict[str, Any]:
        """The ChromaCollection ``name`` (a clear error when it or its CRD is missing)."""
        return self._custom(KIND, "ccol", name, "install the CRD (kubectl apply "
                            "--server-side -f crds/) and the chromasnap chart")

    def database(self, name: str) -> dict[str, Any]:
        """The ChromaDatabase ``name`` (a clear error when it or its CRD is missing)."""
        return self._custom(DATABASE_KIND, "cdb", name, "install the CRDs (kubectl apply "
                            "--server-side -f crds/) of a chromasnap version with pools")

    def _custom(self, kind: str, short: str, name: str, install: str) -> dict[str, Any]:
        try:
            return self.get(path(kind, self.namespace, name))
        except NotFound as e:
            if e.reason != "NotFound" or "could not find the requested resource" in str(e):
                raise PluginError(
                    f"the API server at {self.server} does not know {kind}s: {install}") from e
            raise PluginError(
                f"{kind} {name!r} not found in namespace {self.namespace!r}: "
                f"list them with `kubectl get {short} -n {self.namespace}` (or -A), and pass "
                "-n NAMESPACE if it lives elsewhere") from e

    def resource(self, name: str) -> tuple[str, dict[str, Any]]:
        """(kind, object) of the ChromaCollection ``name`` or, if there is none, of the
        ChromaDatabase ``name``; the ChromaCollection's error when neither exists."""
        try:
            return KIND, self.collection(name)
        except ApiFailure:
            raise  # forbidden, unreachable...: not a question of which kind
        except PluginError as missing:  # not found (the object or the CRD)
            try:
                return DATABASE_KIND, self.get(path(DATABASE_KIND, self.namespace, name))
            except NotFound:
                raise PluginError(
                    f"ChromaCollection {name!r} not found in namespace {self.namespace!r}, "
                    f"nor a ChromaDatabase of that name: list them with `kubectl get ccol,cdb "
                    f"-n {self.namespace}` (or -A), and pass -n NAMESPACE if it lives "
                    "elsewhere") from missing
            except ApiFailure:
                raise missing from None

    def _failure(self, method: str, url_path: str, status: int, data: bytes) -> ApiFailure:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = {}
        message = str(doc.get("message") or data.decode(errors="replace").strip()
                      or f"HTTP {status}")
        reason = str(doc.get("reason") or "")
        resource, named = _resource_of(url_path)
        verb = _verb(method, named)
        where = f"-n {self.namespace}"
        if status == 401:
            return ApiFailure(
                f"unauthorized: the API server at {self.server} rejected the credentials of "
                f"context {self.context or '(current)'} ({message}); log in again or pick "
                "another context with --context", status, reason)
        if status == 403:
            return ApiFailure(
                f"forbidden: {message}. This needs `{verb}` on {resource} in namespace "
                f"{self.namespace!r}: ask your cluster admin for it (check with `kubectl "
                f"auth can-i {verb} {resource} {where}`)", status, reason)
        if status == 404:
            return NotFound(f"not found: {message}", status, reason)
        return ApiFailure(f"{verb} {resource} failed: HTTP {status}"
                          + (f" {reason}" if reason else "") + f": {message}", status, reason)


def _context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=kubeconfig)
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    ns = ((chosen or {}).get("context") or {}).get("namespace")
    return str(ns) if ns else None


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Kube:
    """A connection from the kubeconfig (``KUBECONFIG``, ``~/.kube/config``) or, in a pod
    without one, the in-cluster ServiceAccount."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context)
        ns = namespace or _context_namespace(kubeconfig, context) or "default"
    except (ConfigException, OSError) as e:
        in_cluster = os.environ.get("KUBERNETES_SERVICE_HOST") and SA_NAMESPACE_FILE.exists()
        if kubeconfig or context or not in_cluster:
            raise PluginError(
                f"cannot load a kubeconfig ({e}): set KUBECONFIG or pass --kubeconfig FILE "
                "(and --context NAME)") from e
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        api = client.ApiClient(cfg)
        ns = namespace or SA_NAMESPACE_FILE.read_text().strip()
    return Kube(api=api, namespace=ns, context=context, server=str(api.configuration.host))


def condition(obj: Mapping[str, Any], ctype: str) -> dict[str, Any] | None:
    """The condition ``ctype`` of an object's status, if any."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == ctype:
            return dict(c)
    return None
