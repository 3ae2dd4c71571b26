"""A small asyncio Kubernetes REST client for the operator, on kopf's own aiohttp.

Why not the ``kubernetes`` package's API classes: they are synchronous (every
call would need a thread) and loading their generated models costs tens of MB
per process, while the operator only needs a handful of verbs on plain JSON:
server-side apply, get, create, delete, status patches and Events. Credentials
are loaded the standard way (in-cluster service account, else ``KUBECONFIG``)
through ``kubernetes.config``, so the operator and kopf authenticate alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger("chromasnap.kubeapi")

#: Plural (URL) names of the kinds the operator touches.
PLURALS = {
    "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts",
    "Secret": "secrets",
    "Pod": "pods",
    "Service": "services",
    "Event": "events",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Lease": "leases",
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "CronJob": "cronjobs",
    "Job": "jobs",
    "NetworkPolicy": "networkpolicies",
    "ChromaCollection": "chromacollections",
    "ChromaDatabase": "chromadatabases",
}
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A failed API call: HTTP ``status`` (0 when the server could not be reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Whether retrying later may succeed (throttling, server or network trouble)."""
        return self.status == 0 or self.status in RETRY_STATUSES


@dataclass
class Connection:
    """Where the API server is and how to authenticate, as ``kubernetes.config`` loaded it."""

    server: str
    ca_path: str | None
    insecure: bool
    cert_path: str | None
    key_path: str | None
    _config: Any

    def authorization(self) -> str | None:
        """The ``Authorization`` header value, refreshed by the loader when it expires.

        In a pod the projected token is rotated on disk; the in-cluster loader's hook
        re-reads it, so every call gets a current one.
        """
        cfg = self._config
        value = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
            "authorization"
        )
        return str(value) if value else None

    def token(self) -> str | None:
        """The bearer token alone (for kopf's ConnectionInfo)."""
        header = self.authorization()
        if not header:
            return None
        return header.split(" ", 1)[1] if " " in header else header

    def ssl_context(self) -> ssl.SSLContext:
        """TLS settings for aiohttp: the cluster CA, a client certificate if any."""
        ctx = ssl.create_default_context(cafile=self.ca_path)
        if self.cert_path and self.key_path:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def load_connection() -> Connection:
    """In-cluster service account in a pod, else the kubeconfig (``KUBECONFIG``)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return Connection(
        server=str(cfg.host).rstrip("/"),
        ca_path=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        cert_path=cfg.cert_file or None,
        key_path=cfg.key_file or None,
        _config=cfg,
    )


def path(
    api_version: str,
    kind: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """REST path of a kind (collection), object, or subresource."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    out = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{PLURALS[kind]}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def object_path(obj: Mapping[str, Any], subresource: str | None = None) -> str:
    """REST path of the object a manifest describes."""
    meta = obj["metadata"]
    return path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], subresource)


class Kube:
    """The verbs the operator uses, with bounded retries of transient failures.

    Create inside the running event loop (aiohttp sessions are bound to one).
    """

    def __init__(
        self,
        conn: Connection,
        field_manager: str,
        *,
        timeout_s: float = 30.0,
        attempts: int = 4,
    ) -> None:
        self.conn = conn
        self.field_manager = field_manager
        self.attempts = attempts
        self._ssl = conn.ssl_context()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s, connect=10),
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
        )

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._session.close()

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One call; retries 429/5xx and connection errors with a short backoff."""
        headers = {"Accept": "application/json"}
        auth = self.conn.authorization()
        if auth:
            headers["Authorization"] = auth
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"))
            headers["Content-Type"] = content_type
        delay = 0.2
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._session.request(
                    method, self.conn.server + url_path, data=data, params=params,
                    headers=headers,
                ) as resp:
                    text = await resp.text()
                    if resp.status < 300:
                        out: dict[str, Any] = json.loads(text) if text else {}
                        return out
                    err = _error(resp.status, text)
            except (aiohttp.ClientError, TimeoutError) as e:
                err = ApiError(0, type(e).__name__, str(e) or "connection failed")
            if not err.transient or attempt == self.attempts:
                raise err
            log.debug("retrying API call", extra={"fields": {
                "method": method, "path": url_path, "status": err.status, "attempt": attempt}})
            await asyncio.sleep(delay)
            delay = min(delay * 2.5, 3.0)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, url_path: str) -> dict[str, Any] | None:
        """GET; ``None`` when the object does not exist."""
        try:
            return await self.request("GET", url_path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def apply(self, manifest: Mapping[str, Any], *, force: bool = True,
                    field_manager: str | None = None) -> dict[str, Any]:
        """Server-side apply: create, or update exactly the fields the manifest sets."""
        params = {"fieldManager": field_manager or self.field_manager}
        if force:
            params["force"] = "true"
        return await self.request(
            "PATCH", object_path(manifest), body=manifest, params=params,
            content_type="application/apply-patch+yaml",
        )

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new object (``ApiError`` 409 if it exists)."""
        meta = manifest["metadata"]
        return await self.request(
            "POST", path(manifest["apiVersion"], manifest["kind"], meta.get("namespace")),
            body=manifest, params={"fieldManager": self.field_manager},
        )

    async def delete(self, url_path: str, propagation: str = "Background",
                     uid: str | None = None) -> bool:
        """DELETE; ``False`` if it was already gone (or, with ``uid``, replaced since)."""
        options: dict[str, Any] = {
            "apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        if uid:
            # Only that very object: not one re-created under the same name meanwhile.
            options["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", url_path, body=options)
        except ApiError as e:
            if e.status == 404 or (uid and e.status == 409):
                return False
            raise
        return True

    async def merge_patch(self, url_path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch (RFC 7386), e.g. of a ``/status`` subresource."""
        return await self.request(
            "PATCH", url_path, body=patch, params={"fieldManager": self.field_manager},
            content_type="application/merge-patch+json",
        )


def _error(status: int, text: str) -> ApiError:
    try:
        doc = json.loads(text)
        return ApiError(status, str(doc.get("reason") or ""), str(doc.get("message") or text))
    except (ValueError, AttributeError):
        return ApiError(status, "", text[:500])
