"""Pure builders: one ChromaCollection in, the Kubernetes objects it needs out.

Nothing here talks to the API server. Every function returns plain dicts (the
JSON the API takes), complete enough for server-side apply: ``apiVersion``,
``kind``, ``metadata.name``/``namespace``, labels and a controller owner
reference to the ChromaCollection, so that deleting the collection garbage-
collects its workloads.

The environment rendered into the pods is the contract of ``config.py``:
everything every component reads (bucket, collection, index settings, region)
sits in one ConfigMap whose hash is stamped on every pod template, so a change
rolls the workloads; what only one component reads is set inline on that
component's container, so changing e.g. the writers' flush window rolls only
the writers (readers keep their warm caches).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chromasnap import __version__
from chromasnap.config import ENV_PREFIX, LockKind
from chromasnap.operator.crd import (
    ChromaCollection,
    PullPolicy,
    ResourceRequirements,
    parse_quantity,
)
from chromasnap.resource import API_VERSION, KIND, PLURAL

Manifest = dict[str, Any]

COMPONENT_WRITER = "writer"
COMPONENT_READER = "reader"
COMPONENT_COMPACTOR = "compactor"
COMPONENTS = (COMPONENT_WRITER, COMPONENT_READER, COMPONENT_COMPACTOR)

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
#: Set on the writer and reader ClusterIP Services only, so that the chart's
#: ServiceMonitor scrapes every pod once (not again through the headless Service).
LABEL_METRICS = "chromasnap.dev/metrics"
#: ``scheduled`` for CronJob runs, ``manual`` for on-demand compaction Jobs.
LABEL_TRIGGER = "chromasnap.dev/trigger"
APP_NAME = "chromasnap"
MANAGED_BY = "chromasnap-operator"

#: Pod-template annotation carrying the hash of the ConfigMap's data.
CONFIG_HASH_ANNOTATION = "chromasnap.dev/config-hash"
#: Field manager the operator should use for server-side apply.
FIELD_MANAGER = "chromasnap-operator"

HTTP_PORT = 8000
HTTP_PORT_NAME = "http"
CACHE_DIR = "/var/cache/chromasnap"
TERMINATION_LOG = "/dev/termination-log"
#: A per-pod emptyDir (the root filesystem is read-only), not a shared system /tmp.
TMP_DIR = "/tmp"  # noqa: S108
RUNTIME_UID = 65532
#: Share of ``reader.cacheSize`` the readers may fill; the rest is headroom for the
#: files Chroma writes while opening a snapshot, so the kubelet never evicts a reader
#: for exceeding the emptyDir's sizeLimit.
READER_CACHE_BUDGET = Decimal("0.9")

RUN_ID_RE = re.compile(r"^[a-z0-9]{1,10}$")


class OperatorSettings(BaseSettings):
    """What the operator itself is told (by the Helm chart, through ``CHROMASNAP_*`` env)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    default_image: str = Field(
        default=f"chromasnap:{__version__}",
        description="image of the workloads when a ChromaCollection sets no spec.image",
    )
    default_image_pull_policy: PullPolicy | None = None
    cluster_domain: str | None = Field(
        default=None,
        description="e.g. cluster.local; unset: in-cluster names end in .svc and resolve "
        "through the pods' DNS search path",
    )
    log_level: str = "INFO"


@dataclass(frozen=True)
class ChildNames:
    """Names of everything the operator creates for one ChromaCollection.

    ``ChromaCollection`` names are at most 40 characters (the CRD enforces it), so
    every name here fits its kind's limit (63; 52 for the CronJob).
    """

    config: str
    service_account: str
    role: str
    role_binding: str
    lease: str
    writer: str
    reader: str
    readers_headless: str
    compactor: str

    @classmethod
    def for_collection(cls, name: str) -> ChildNames:
        """All child names of the ChromaCollection called ``name``."""
        sa = f"{name}-chromasnap"
        return cls(
            config=f"{name}-config",
            service_account=sa,
            role=sa,
            role_binding=sa,
            lease=f"{name}-compactor",
            writer=f"{name}-writer",  # Deployment, Service and PodDisruptionBudget
            reader=f"{name}-reader",  # Deployment, Service and PodDisruptionBudget
            readers_headless=f"{name}-readers-headless",
            compactor=f"{name}-compactor",  # CronJob; on-demand Jobs add "-<run id>"
        )


def names(cc: ChromaCollection) -> ChildNames:
    """Child names of ``cc``."""
    return ChildNames.for_collection(cc.name)


# --- labels, owner, hashing -------------------------------------------------------------


def selector_labels(name: str, component: str) -> dict[str, str]:
    """The labels that select one component's pods; immutable in a Deployment, never change."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name, LABEL_COMPONENT: component}


def labels(name: str, component: str | None = None) -> dict[str, str]:
    """The standard labels on every child (``component`` left out for shared objects)."""
    out = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: name,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: APP_NAME,
    }
    if component is not None:
        out[LABEL_COMPONENT] = component
    return out


def reader_selector(name: str) -> str:
    """``status.readers.selector``: the reader pods' selector in its string form (for HPAs)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(name, COMPONENT_READER).items())


def owner_reference(cc: ChromaCollection) -> dict[str, Any]:
    """Controller reference to ``cc``: the garbage collector deletes children with it.

    ``blockOwnerDeletion`` keeps a foreground deletion of the collection waiting until
    its children are gone (the operator needs ``update`` on chromacollections/finalizers
    for this where the OwnerReferencesPermissionEnforcement admission plugin is on).
    """
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": cc.name,
        "uid": cc.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(
    cc: ChromaCollection, name: str, component: str | None = None, **extra: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": cc.namespace,
        "labels": labels(cc.name, component),
        "ownerReferences": [owner_reference(cc)],
    }
    meta.update(extra)
    return meta


def config_hash(data: Mapping[str, str]) -> str:
    """Stable short hash of ConfigMap data (key order does not matter)."""
    blob = json.dumps(dict(data), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _service_host(cc: ChromaCollection, service: str, settings: OperatorSettings) -> str:
    host = f"{service}.{cc.namespace}.svc"
    return f"{host}.{settings.cluster_domain}" if settings.cluster_domain else host


# --- configuration ----------------------------------------------------------------------


def _env(field: str) -> str:
    """The variable ``config.py`` reads for settings field ``field``."""
    return ENV_PREFIX + field.upper()


def config_data(cc: ChromaCollection) -> dict[str, str]:
    """What every component reads: which bucket, which collection, which index settings.

    Never credentials: those reach the pods only as ``secretKeyRef`` env.
    """
    spec = cc.spec
    coll = spec.collection
    data = {
        _env("bucket_url"): spec.storage.bucket_url,
        _env("collection"): coll.name,
        _env("dimension"): str(coll.dimension),
        _env("space"): coll.space.value,
        _env("hnsw_m"): str(coll.hnsw.m),
        _env("hnsw_construction_ef"): str(coll.hnsw.construction_ef),
        _env("hnsw_search_ef"): str(coll.hnsw.search_ef),
        _env("log_format"): "json",
        # botocore reads AWS_DEFAULT_REGION; other AWS SDKs and tools read AWS_REGION.
        "AWS_REGION": spec.storage.region,
        "AWS_DEFAULT_REGION": spec.storage.region,
        # chromadb would otherwise try to send usage telemetry from inside the cluster.
        "ANONYMIZED_TELEMETRY": "False",
    }
    if spec.storage.endpoint:
        data[_env("s3_endpoint_url")] = spec.storage.endpoint
    return data


def config_map(cc: ChromaCollection) -> Manifest:
    """The ConfigMap the pods load with ``envFrom``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(cc, names(cc).config),
        "data": config_data(cc),
    }


# --- identity and RBAC ------------------------------------------------------------------


def service_account(cc: ChromaCollection) -> Manifest:
    """The pods' ServiceAccount, carrying the user's workload-identity annotations.

    Tokens are not mounted by default; only the compactor's pods opt in, since only
    they call the Kubernetes API (Lease, status).
    """
    meta = _metadata(cc, names(cc).service_account)
    if cc.spec.service_account.annotations:
        meta["annotations"] = dict(cc.spec.service_account.annotations)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta,
        "automountServiceAccountToken": False,
    }


def role(cc: ChromaCollection) -> Manifest:
    """What the compactor may do, and nothing more: its own Lease, its own status.

    There is no ``create`` on leases: ``create`` cannot be limited by
    ``resourceNames`` (the name is not known when a POST is authorized), so it
    would allow creating any Lease in the namespace. The operator creates the
    Lease instead (see :func:`lease`) and the compactor only takes and renews it.
    """
    n = names(cc)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(cc, n.role, COMPONENT_COMPACTOR),
        "rules": [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [n.lease],
                "verbs": ["get", "update", "patch"],
            },
            {
                "apiGroups": [API_VERSION.split("/")[0]],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [cc.name],
                "verbs": ["get", "patch"],
            },
        ],
    }


def role_binding(cc: ChromaCollection) -> Manifest:
    """Binds :func:`role` to :func:`service_account`."""
    n = names(cc)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(cc, n.role_binding, COMPONENT_COMPACTOR),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": n.role},
        "subjects": [
            {"kind": "ServiceAccount", "name": n.service_account, "namespace": cc.namespace}
        ],
    }


def lease(cc: ChromaCollection) -> Manifest:
    """The compactor's mutex, created free (no holder).

    Create it only if absent and never overwrite it: compactors own its holder and
    renew times. Server-side apply of this manifest is also safe, as it names no
    field a compactor writes except ``leaseDurationSeconds``, which they set alike.
    """
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": _metadata(cc, names(cc).lease, COMPONENT_COMPACTOR),
        "spec": {"leaseDurationSeconds": cc.spec.compactor.lease_duration_seconds},
    }


# --- pods -------------------------------------------------------------------------------


def image(cc: ChromaCollection, settings: OperatorSettings) -> str:
    """The workloads' image: the collection's own, else the operator's default."""
    return cc.spec.image or settings.default_image


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security_context() -> dict[str, Any]:
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
        # The root filesystem is read-only; libraries that write under ~ get /tmp.
        {"name": "HOME", "value": TMP_DIR},
    ]
    ref = cc.spec.storage.credentials_secret_ref
    if ref is not None:
        # By reference only: the operator never reads or copies the key pair.
        env += [
            {
                "name": "AWS_ACCESS_KEY_ID",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.access_key_id_key}},
            },
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.secret_access_key_key}},
            },
        ]
    return env


def _values(pairs: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


def writer_env(cc: ChromaCollection, settings: OperatorSettings) -> dict[str, str]:
    """Writer-only settings (``WriterSettings``), set inline on the writer container."""
    fw = cc.spec.writer.flush_window
    return {
        _env("flush_max_records"): str(fw.max_records),
        _env("flush_max_bytes"): str(fw.max_bytes),
        _env("flush_max_delay_ms"): str(fw.max_delay_ms),
        _env("notify_dns"): _service_host(cc, names(cc).readers_headless, settings),
        _env("port"): str(HTTP_PORT),
    }


def reader_cache_max_bytes(cc: ChromaCollection) -> int:
    """The readers' cache budget: :data:`READER_CACHE_BUDGET` of ``reader.cacheSize``."""
    return math.floor(parse_quantity(cc.spec.reader.cache_size) * READER_CACHE_BUDGET)


def reader_env(cc: ChromaCollection, settings: OperatorSettings) -> dict[str, str]:
    """Reader-only settings (``ReaderSettings``), set inline on the reader container."""
    r = cc.spec.reader
    writer_host = _service_host(cc, names(cc).writer, settings)
    return {
        _env("cache_dir"): CACHE_DIR,
        _env("cache_max_bytes"): str(reader_cache_max_bytes(cc)),
        _env("poll_interval_seconds"): str(r.poll_interval_seconds),
        _env("read_level"): r.read_level.value,
        _env("writer_url"): f"http://{writer_host}:{HTTP_PORT}",
        _env("port"): str(HTTP_PORT),
    }


def compactor_env(cc: ChromaCollection) -> dict[str, str]:
    """Compactor-only settings (``CompactorSettings``), set inline on its container."""
    c = cc.spec.compactor
    ret = cc.spec.retention
    return {
        _env("lock"): LockKind.KUBERNETES.value,
        _env("lease_name"): names(cc).lease,
        _env("lease_namespace"): cc.namespace,
        _env("lease_duration_seconds"): str(c.lease_duration_seconds),
        _env("cache_dir"): CACHE_DIR,
        _env("retain_snapshots"): str(ret.snapshots_to_keep),
        _env("delta_grace_seconds"): str(ret.delta_grace_period_seconds),
        _env("result_file"): TERMINATION_LOG,
        _env("status_resource"): f"{cc.namespace}/{cc.name}",
    }


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HTTP_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(
    cc: ChromaCollection,
    settings: OperatorSettings,
    component: str,
    env: Mapping[str, str],
    resources: ResourceRequirements,
    *,
    serves_http: bool,
    cache: bool,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": component,
        "image": image(cc, settings),
        # Explicit command (not just args): the tests run exactly this as a local process.
        "command": ["chromasnap", component],
        "envFrom": [{"configMapRef": {"name": names(cc).config}}],
        "env": _common_env(cc) + _values(env),
        "resources": resources.manifest(),
        "securityContext": _container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        # The compactor writes its JSON result there; otherwise show the log's tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],
    }
    pull = cc.spec.image_pull_policy or settings.default_image_pull_policy
    if pull is not None:
        container["imagePullPolicy"] = pull.value
    if cache:
        container["volumeMounts"].append({"name": "cache", "mountPath": CACHE_DIR})
    if serves_http:
        container["ports"] = [
            {"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"}
        ]
        # /healthz: the process is alive (answers while a snapshot is still loading);
        # /readyz: it can serve (reader: a verified snapshot is loaded).
        # The startup probe gives slow imports and first downloads two minutes
        # before liveness starts counting.
        container["startupProbe"] = _http_probe("/healthz", period=2, failures=60)
        container["livenessProbe"] = _http_probe("/healthz", period=10, failures=3)
        container["readinessProbe"] = _http_probe("/readyz", period=2, failures=2)
    return container


def _volumes(cache_size: str | None, cache: bool) -> list[dict[str, Any]]:
    vols: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if cache:
        empty: dict[str, Any] = {}
        if cache_size is not None:
            empty["sizeLimit"] = cache_size
        vols.append({"name": "cache", "emptyDir": empty})
    return vols


def _pod_spec(
    cc: ChromaCollection,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    *,
    api_access: bool,
    grace_seconds: int,
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "serviceAccountName": names(cc).service_account,
        # Only the compactor talks to the Kubernetes API; workload identity webhooks
        # (IRSA, EKS Pod Identity, Azure WI) project their own tokens regardless.
        "automountServiceAccountToken": api_access,
        # Service links would inject e.g. CHROMASNAP_PORT=tcp://... for a Service named
        # "chromasnap", clobbering our settings; nothing here uses them.
        "enableServiceLinks": False,
        "securityContext": _pod_security_context(),
        "terminationGracePeriodSeconds": grace_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    if cc.spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in cc.spec.image_pull_secrets]
    return pod


def _spread(name: str, component: str) -> list[dict[str, Any]]:
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


def _pod_template(
    cc: ChromaCollection, component: str, pod_spec: dict[str, Any], cfg_hash: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": labels(cc.name, component),
            "annotations": {CONFIG_HASH_ANNOTATION: cfg_hash},
        },
        "spec": pod_spec,
    }


def _deployment(
    cc: ChromaCollection,
    component: str,
    name: str,
    replicas: int,
    template: dict[str, Any],
) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(cc, name, component),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(cc.name, component)},
            # Surge first: a new pod must be ready (a reader: snapshot loaded) before an
            # old one goes, so a rollout never lowers capacity.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": template,
        },
    }


def writer_deployment(cc: ChromaCollection, settings: OperatorSettings) -> Manifest:
    """The writers: stateless, N replicas behind ``<name>-writer``."""
    n = names(cc)
    container = _container(
        cc,
        settings,
        COMPONENT_WRITER,
        writer_env(cc, settings),
        cc.spec.writer.resources,
        serves_http=True,
        cache=False,
    )
    pod = _pod_spec(
        cc,
        container,
        _volumes(None, cache=False),
        api_access=False,
        # Time to finish the open flush window and its upload (with retries) after
        # SIGTERM, so that accepted writes are acknowledged, not dropped.
        grace_seconds=60,
    )
    pod["topologySpreadConstraints"] = _spread(cc.name, COMPONENT_WRITER)
    template = _pod_template(cc, COMPONENT_WRITER, pod, config_hash(config_data(cc)))
    return _deployment(cc, COMPONENT_WRITER, n.writer, cc.spec.writer.replicas, template)


def reader_deployment(cc: ChromaCollection, settings: OperatorSettings) -> Manifest:
    """The readers: N replicas with an emptyDir snapshot cache, behind ``<name>-reader``."""
    n = names(cc)
    container = _container(
        cc,
        settings,
        COMPONENT_READER,
        reader_env(cc, settings),
        cc.spec.reader.resources,
        serves_http=True,
        cache=True,
    )
    pod = _pod_spec(
        cc,
        container,
        _volumes(cc.spec.reader.cache_size, cache=True),
        api_access=False,
        grace_seconds=30,
    )
    pod["topologySpreadConstraints"] = _spread(cc.name, COMPONENT_READER)
    template = _pod_template(cc, COMPONENT_READER, pod, config_hash(config_data(cc)))
    return _deployment(cc, COMPONENT_READER, n.reader, cc.spec.reader.replicas, template)


# --- services and disruption budgets ----------------------------------------------------


def _service_port() -> dict[str, Any]:
    return {
        "name": HTTP_PORT_NAME,
        "port": HTTP_PORT,
        "targetPort": HTTP_PORT_NAME,
        "protocol": "TCP",
        "appProtocol": "http",
    }


def _client_service(cc: ChromaCollection, name: str, component: str) -> Manifest:
    meta = _metadata(cc, name, component)
    meta["labels"][LABEL_METRICS] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cc.name, component),
            "ports": [_service_port()],
        },
    }


def writer_service(cc: ChromaCollection) -> Manifest:
    """``<name>-writer``: where clients send writes (Chroma HTTP API)."""
    return _client_service(cc, names(cc).writer, COMPONENT_WRITER)


def reader_service(cc: ChromaCollection) -> Manifest:
    """``<name>-reader``: where clients send queries; only ready readers get traffic."""
    return _client_service(cc, names(cc).reader, COMPONENT_READER)


def readers_headless_service(cc: ChromaCollection) -> Manifest:
    """``<name>-readers-headless``: one DNS A record per ready reader.

    Writers resolve it (``CHROMASNAP_NOTIFY_DNS``) to tell every reader about new
    deltas. Not-ready readers are left out: they load a snapshot and catch up anyway.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cc, names(cc).readers_headless, COMPONENT_READER),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": selector_labels(cc.name, COMPONENT_READER),
            "ports": [_service_port()],
        },
    }


def _pdb(cc: ChromaCollection, component: str, name: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(cc, name, component),
        "spec": {
            # maxUnavailable (not minAvailable) is right for any replica count: it
            # follows HPA scaling and never blocks a node drain at one replica.
            "maxUnavailable": 1,
            # A pod that is not ready (e.g. a reader stuck on a bad download) protects
            # nothing; let drains evict it.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": selector_labels(cc.name, component)},
        },
    }


def reader_pdb(cc: ChromaCollection) -> Manifest:
    """Voluntary disruptions (drains) take at most one reader at a time."""
    return _pdb(cc, COMPONENT_READER, names(cc).reader)


def writer_pdb(cc: ChromaCollection) -> Manifest:
    """Voluntary disruptions take at most one writer at a time."""
    return _pdb(cc, COMPONENT_WRITER, names(cc).writer)


# --- compactor --------------------------------------------------------------------------


def _compactor_job_spec(cc: ChromaCollection, settings: OperatorSettings) -> dict[str, Any]:
    c = cc.spec.compactor
    container = _container(
        cc,
        settings,
        COMPONENT_COMPACTOR,
        compactor_env(cc),
        c.resources,
        serves_http=False,
        cache=True,
    )
    pod = _pod_spec(
        cc,
        container,
        _volumes(c.cache_size, cache=True),
        api_access=True,
        # A stopped compactor discards its work (the pointer is never half-written);
        # a short grace only lets it release the Lease.
        grace_seconds=30,
    )
    # Never: a failed run leaves its pod (and termination message) for inspection;
    # the Job starts a fresh pod, a fresh identity, for the retry.
    pod["restartPolicy"] = "Never"
    return {
        # Retries cover transient S3 or API errors; the next scheduled run covers the rest.
        "backoffLimit": 2,
        # Runs never overlap (Forbid), so a hung run would block the schedule forever.
        "activeDeadlineSeconds": c.active_deadline_seconds,
        # Finished Jobs go after an hour: the result is in the collection's status.
        "ttlSecondsAfterFinished": 3600,
        "template": _pod_template(cc, COMPONENT_COMPACTOR, pod, config_hash(config_data(cc))),
    }


def compactor_cronjob(cc: ChromaCollection, settings: OperatorSettings) -> Manifest:
    """``<name>-compactor``: scheduled compaction, one run at a time."""
    c = cc.spec.compactor
    job_labels = labels(cc.name, COMPONENT_COMPACTOR) | {LABEL_TRIGGER: "scheduled"}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(cc, names(cc).compactor, COMPONENT_COMPACTOR),
        "spec": {
            "schedule": c.schedule,
            "suspend": c.suspend,
            # The Lease already keeps two runs from working at once; Forbid also keeps
            # the controller from piling up pods that would only find the Lease taken.
            "concurrencyPolicy": "Forbid",
            # A run missed by more than this (controller down) is skipped, not started
            # late; without a deadline the controller gives up after 100 misses.
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": job_labels},
                "spec": _compactor_job_spec(cc, settings),
            },
        },
    }


def compaction_job(cc: ChromaCollection, settings: OperatorSettings, run_id: str) -> Manifest:
    """An on-demand compaction run, ``<name>-compactor-<run_id>``, from the CronJob's template.

    ``run_id`` (1-10 of [a-z0-9]) makes the name deterministic, so a retried request
    creates the Job at most once (409 Conflict means it exists). The Job is owned by
    the ChromaCollection rather than the CronJob: the CronJob controller warns about
    Jobs it owns but did not create. It does not count against ``concurrencyPolicy``;
    the Lease keeps it from overlapping a scheduled run.
    """
    if not RUN_ID_RE.match(run_id):
        raise ValueError(f"run id {run_id!r} must be 1-10 characters of [a-z0-9]")
    template = compactor_cronjob(cc, settings)["spec"]["jobTemplate"]
    job_labels = dict(template["metadata"]["labels"]) | {LABEL_TRIGGER: "manual"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(
            cc, f"{names(cc).compactor}-{run_id}", COMPONENT_COMPACTOR, labels=job_labels
        ),
        "spec": copy.deepcopy(template["spec"]),
    }


# --- everything -------------------------------------------------------------------------


def desired_children(cc: ChromaCollection, settings: OperatorSettings) -> list[Manifest]:
    """Every object the collection needs, in apply order.

    Configuration and identity come before the workloads that use them (a pod
    created before its ConfigMap or ServiceAccount fails to start), Services
    before Deployments (so DNS exists when the first pod asks).
    """
    return [
        config_map(cc),
        service_account(cc),
        role(cc),
        role_binding(cc),
        lease(cc),
        writer_service(cc),
        reader_service(cc),
        readers_headless_service(cc),
        writer_deployment(cc, settings),
        reader_deployment(cc, settings),
        writer_pdb(cc),
        reader_pdb(cc),
        compactor_cronjob(cc, settings),
    ]


#: (apiVersion, kind) of everything :func:`desired_children` returns, for RBAC and cleanup.
CHILD_KINDS = (
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("coordination.k8s.io/v1", "Lease"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("batch/v1", "CronJob"),
    ("batch/v1", "Job"),
)
