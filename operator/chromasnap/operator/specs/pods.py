"""Containers and pod templates: what every workload's pods have in common.

All three components run the same image under the same restricted security
context, with a read-only root filesystem (so a writable ``/tmp``), credentials
only by Secret reference, and the shared settings from the collection's
ConfigMap; the builders here take what differs (env, resources, probes, cache)
as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chromasnap.config import ENV_PREFIX
from chromasnap.operator.crd import ChromaCollection, CredentialsSecretRef, ResourceRequirements
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.naming import (
    COMPONENT_COMPACTOR,
    CONFIG_HASH_ANNOTATION,
    labels,
    names,
    selector_labels,
)

HTTP_PORT = 8000
HTTP_PORT_NAME = "http"
#: Readers take writers' delta pushes on this port only, so that a NetworkPolicy can
#: admit it from the collection's writers alone (``CHROMASNAP_INTERNAL_PORT``).
INTERNAL_PORT = 8001
INTERNAL_PORT_NAME = "internal"
CACHE_DIR = "/var/cache/chromasnap"
TERMINATION_LOG = "/dev/termination-log"
#: A per-pod emptyDir (the root filesystem is read-only), not a shared system /tmp.
TMP_DIR = "/tmp"  # noqa: S108
RUNTIME_UID = 65532


def image(cc: ChromaCollection, settings: OperatorSettings) -> str:
    """The workloads' image: the collection's own, else the operator's default."""
    return cc.spec.image or settings.default_image


def pod_security_context() -> dict[str, Any]:
    """Every pod runs as the image's non-root user under the runtime's seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """No privileges, no capabilities, a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _common_env(cc: ChromaCollection) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        # Where the other pods reach this one: writers and readers exchange freshness leases
        # and delta pushes pod to pod (writer/fanout.py, reader/freshness.py).
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        # The root filesystem is read-only; libraries that write under ~ get /tmp.
        {"name": "HOME", "value": TMP_DIR},
    ]
    return env + credentials_env(cc.spec.storage.credentials_secret_ref)


def credentials_env(ref: CredentialsSecretRef | None) -> list[dict[str, Any]]:
    """The S3 key pair as ``secretKeyRef`` env (none without a Secret: workload identity).

    By reference only: the operator never reads or copies the key pair.
    """
    if ref is None:
        return []
    return [
        {"name": "AWS_ACCESS_KEY_ID",
         "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.access_key_id_key}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.secret_access_key_key}}},
    ]


def bootstrap_credentials(cc: ChromaCollection) -> list[dict[str, Any]]:
    """The bootstrap source's key pair, by reference, for the compactor (which alone reads it)."""
    ref = cc.spec.bootstrap.from_.credentials_secret_ref if cc.spec.bootstrap else None
    if ref is None:
        return []
    return [
        {"name": f"{ENV_PREFIX}BOOTSTRAP_AWS_ACCESS_KEY_ID",
         "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.access_key_id_key}}},
        {"name": f"{ENV_PREFIX}BOOTSTRAP_AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.secret_access_key_key}}},
    ]


def env_values(pairs: Mapping[str, str]) -> list[dict[str, Any]]:
    """Plain ``env`` entries from a name -> value mapping."""
    return [{"name": k, "value": v} for k, v in pairs.items()]


def http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    """An HTTP probe of ``path`` on the named HTTP port."""
    return {
        "httpGet": {"path": path, "port": HTTP_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def container(
    cc: ChromaCollection,
    settings: OperatorSettings,
    component: str,
    env: Mapping[str, str],
    resources: ResourceRequirements,
    *,
    serves_http: bool,
    cache: bool,
    internal_port: bool = False,
    mounts: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The one container of a ``component`` pod, with its own ``env`` on top of the shared.

    ``internal_port`` adds the readers' push port; ``mounts`` are extra volume mounts
    (the token files of ``spec.auth``).
    """
    out: dict[str, Any] = {
        "name": component,
        "image": image(cc, settings),
        # Explicit command (not just args): the tests run exactly this as a local process.
        "command": ["chromasnap", component],
        "envFrom": [{"configMapRef": {"name": names(cc).config}}],
        "env": _common_env(cc) + env_values(env)
        + (bootstrap_credentials(cc) if component == COMPONENT_COMPACTOR else []),
        "resources": resources.manifest(),
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        # The compactor writes its JSON result there; otherwise show the log's tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],
    }
    pull = cc.spec.image_pull_policy or settings.default_image_pull_policy
    if pull is not None:
        out["imagePullPolicy"] = pull.value
    if cache:
        out["volumeMounts"].append({"name": "cache", "mountPath": CACHE_DIR})
    out["volumeMounts"] += [dict(m) for m in mounts]
    if serves_http:
        # The HTTP port stays first: probes, Services and the tests' runner name it.
        out["ports"] = [
            {"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"}
        ]
        if internal_port:
            out["ports"].append(
                {"name": INTERNAL_PORT_NAME, "containerPort": INTERNAL_PORT, "protocol": "TCP"}
            )
        # /healthz: the process is alive (answers while a snapshot is still loading);
        # /readyz: it can serve (reader: a verified snapshot is loaded).
        # The startup probe gives slow imports and first downloads two minutes
        # before liveness starts counting.
        out["startupProbe"] = http_probe("/healthz", period=2, failures=60)
        out["livenessProbe"] = http_probe("/healthz", period=10, failures=3)
        out["readinessProbe"] = http_probe("/readyz", period=2, failures=2)
    return out


def volumes(cache_size: str | None, cache: bool) -> list[dict[str, Any]]:
    """The scratch ``/tmp`` and, with ``cache``, a cache emptyDir (bounded by ``cache_size``)."""
    vols: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if cache:
        empty: dict[str, Any] = {}
        if cache_size is not None:
            empty["sizeLimit"] = cache_size
        vols.append({"name": "cache", "emptyDir": empty})
    return vols


def pod_spec(
    cc: ChromaCollection,
    main: dict[str, Any],
    pod_volumes: list[dict[str, Any]],
    *,
    api_access: bool,
    grace_seconds: int,
) -> dict[str, Any]:
    """A pod running ``main`` as the collection's ServiceAccount."""
    pod: dict[str, Any] = {
        "serviceAccountName": names(cc).service_account,
        # Only the compactor talks to the Kubernetes API; workload identity webhooks
        # (IRSA, EKS Pod Identity, Azure WI) project their own tokens regardless.
        "automountServiceAccountToken": api_access,
        # Service links would inject e.g. CHROMASNAP_PORT=tcp://... for a Service named
        # "chromasnap", clobbering our settings; nothing here uses them.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": grace_seconds,
        "containers": [main],
        "volumes": pod_volumes,
    }
    if cc.spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in cc.spec.image_pull_secrets]
    return pod


def spread(name: str, component: str) -> list[dict[str, Any]]:
    """Topology spread constraints for one component's pods."""
    # Prefer different nodes so one node loss does not take all replicas; never
    # block scheduling for it.
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(name, component)},
        }
    ]


def pod_template(
    cc: ChromaCollection, component: str, spec: dict[str, Any], cfg_hash: str
) -> dict[str, Any]:
    """A pod template stamped with the config hash, so a config change rolls the pods."""
    return {
        "metadata": {
            "labels": labels(cc.name, component),
            "annotations": {CONFIG_HASH_ANNOTATION: cfg_hash},
        },
        "spec": spec,
    }
