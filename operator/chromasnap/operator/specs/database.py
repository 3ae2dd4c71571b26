"""Everything one ChromaDatabase (a pool of collections) needs, in apply order.

A pool is one Deployment of ``chromasnap pool`` pods behind one Service: every
pod serves Chroma's whole API over the pool's bucket root (writes, reads,
compaction passes), so there is no writer/reader split and no CronJob. The
pods' ServiceAccount may patch the database's own status and nothing else: the
pods report the pool's totals there after each compaction pass.

Names: the Service is ``<name>`` (clients connect to ``http://<name>.<ns>:8000``),
every other child ``<name>-pool``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from chromasnap.config import ENV_PREFIX
from chromasnap.operator.crd import parse_quantity
from chromasnap.operator.database import ChromaDatabase
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.auth import AUTH_DIR, AUTH_FILE_MODE, AUTH_VOLUME
from chromasnap.operator.specs.environment import DRAIN_SECONDS, config_hash, storage_env
from chromasnap.operator.specs.jobs import STATUS_PLURAL_ENV, STATUS_RESOURCE_ENV, purge_job_from
from chromasnap.operator.specs.naming import (
    CONFIG_HASH_ANNOTATION,
    LABEL_METRICS,
    Manifest,
    labels,
    purge_job_name,
    selector_labels,
)
from chromasnap.operator.specs.network import service_port
from chromasnap.operator.specs.pods import (
    CACHE_DIR,
    HTTP_PORT,
    HTTP_PORT_NAME,
    TMP_DIR,
    container_security_context,
    credentials_env,
    http_probe,
    pod_security_context,
    spread,
    volumes,
)
from chromasnap.resource import API_VERSION, DATABASE_KIND, DATABASE_PLURAL, PLURAL

COMPONENT_POOL = "pool"
#: Share of ``pool.cacheSize`` the loaded collections may fill (as for readers): the
#: rest is headroom for files chromadb writes while opening one.
POOL_CACHE_BUDGET = Decimal("0.9")
#: The auth Secret's key is mounted as this file.
TOKENS_FILE = "tokens"


def pool_name(db: ChromaDatabase) -> str:
    """The name of every child but the Service."""
    return f"{db.name}-pool"


def owner_reference(db: ChromaDatabase) -> dict[str, Any]:
    """Controller reference to ``db``: the garbage collector deletes children with it."""
    return {"apiVersion": API_VERSION, "kind": DATABASE_KIND, "name": db.name, "uid": db.uid,
            "controller": True, "blockOwnerDeletion": True}


def _metadata(db: ChromaDatabase, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": db.namespace,
            "labels": labels(db.name, COMPONENT_POOL),
            "ownerReferences": [owner_reference(db)]}


def _env(field: str) -> str:
    return ENV_PREFIX + field.upper()


def cache_max_bytes(db: ChromaDatabase) -> int:
    """Bytes of loaded collections a pod keeps: :data:`POOL_CACHE_BUDGET` of the cache."""
    return math.floor(parse_quantity(db.spec.pool.cache_size) * POOL_CACHE_BUDGET)


def config_data(db: ChromaDatabase) -> dict[str, str]:
    """What ``chromasnap pool`` reads (``PoolSettings``); never credentials."""
    spec, pool = db.spec, db.spec.pool
    fw = pool.flush_window
    data = {
        _env("bucket_url"): spec.storage.bucket_url,
        _env("cache_dir"): CACHE_DIR,
        _env("max_loaded"): str(pool.max_loaded_collections),
        _env("max_loaded_bytes"): str(cache_max_bytes(db)),
        _env("memory_budget_bytes"): str(pool.memory_budget_bytes),
        _env("compaction_concurrency"): str(spec.compactor.concurrency),
        _env("compact_every_seconds"): str(spec.compactor.interval_seconds),
        _env("delta_grace_seconds"): str(spec.retention.delta_grace_period_seconds),
        _env("retain_snapshots"): str(spec.retention.snapshots_to_keep),
        _env("recovery_window_seconds"): str(spec.retention.recovery_window_seconds),
        _env("flush_max_records"): str(fw.max_records),
        _env("flush_max_bytes"): str(fw.max_bytes),
        _env("flush_max_delay_ms"): str(fw.max_delay_ms),
        _env("port"): str(HTTP_PORT),
        _env("drain_seconds"): str(DRAIN_SECONDS),
        _env("status_resource"): f"{db.namespace}/{db.name}",
        _env("log_format"): "json",
    } | storage_env(spec.storage)
    if spec.auth is not None:
        data[_env("auth_token_file")] = f"{AUTH_DIR}/{TOKENS_FILE}"
    return data


def config_map(db: ChromaDatabase) -> Manifest:
    """The ConfigMap the pool's pods load with ``envFrom``."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _metadata(db, pool_name(db)), "data": config_data(db)}


def service_account(db: ChromaDatabase) -> Manifest:
    """The pods' identity, with the user's workload-identity annotations (IRSA, …)."""
    meta = _metadata(db, pool_name(db))
    if db.spec.service_account.annotations:
        meta["annotations"] = dict(db.spec.service_account.annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta,
            "automountServiceAccountToken": False}


def role(db: ChromaDatabase, members: Sequence[str] = ()) -> Manifest:
    """What the pods may do in the API: patch this database's status; read the
    namespace's ChromaCollections (to find the ones declared in this pool); and, for
    exactly the declared ``members``, patch their status and remove the pool's
    finalizer. RBAC cannot limit ``list`` by name, hence the read of all of them (specs
    hold no secrets: credentials are only referenced)."""
    group = API_VERSION.split("/")[0]
    rules: list[dict[str, Any]] = [
        {"apiGroups": [group], "resources": [f"{DATABASE_PLURAL}/status"],
         "resourceNames": [db.name], "verbs": ["get", "patch"]},
        {"apiGroups": [group], "resources": [PLURAL], "verbs": ["get", "list", "watch"]},
    ]
    if members:  # an empty resourceNames would mean every name
        names = sorted(set(members))
        rules += [
            {"apiGroups": [group], "resources": [f"{PLURAL}/status"],
             "resourceNames": names, "verbs": ["get", "patch"]},
            {"apiGroups": [group], "resources": [PLURAL], "resourceNames": names,
             "verbs": ["patch"]},
        ]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": _metadata(db, pool_name(db)), "rules": rules,
    }


def role_binding(db: ChromaDatabase) -> Manifest:
    """Binds :func:`role` to :func:`service_account`."""
    name = pool_name(db)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": _metadata(db, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": db.namespace}],
    }


def service(db: ChromaDatabase) -> Manifest:
    """``<name>``: the endpoint ``chromadb.HttpClient`` connects to.

    Client-IP affinity keeps one client on one pod, so it reads its own writes at once;
    another pod sees them within its poll interval (a second).
    """
    meta = _metadata(db, db.name)
    meta["labels"][LABEL_METRICS] = "true"
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"type": "ClusterIP", "selector": selector_labels(db.name, COMPONENT_POOL),
                 "sessionAffinity": "ClientIP", "ports": [service_port()]},
    }


def _auth_volume(db: ChromaDatabase) -> list[dict[str, Any]]:
    auth = db.spec.auth
    if auth is None:
        return []
    return [{"name": AUTH_VOLUME, "secret": {
        "secretName": auth.secret_ref.name, "defaultMode": AUTH_FILE_MODE,
        "items": [{"key": auth.tokens_key, "path": TOKENS_FILE}]}}]


def _container(db: ChromaDatabase, settings: OperatorSettings) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        # The pod's name is its identity in the bucket (write batches, compaction fences).
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "HOME", "value": TMP_DIR},
    ]
    env += credentials_env(db.spec.storage.credentials_secret_ref)
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP_DIR},
                                    {"name": "cache", "mountPath": CACHE_DIR}]
    if db.spec.auth is not None:
        mounts.append({"name": AUTH_VOLUME, "mountPath": AUTH_DIR, "readOnly": True})
    out: dict[str, Any] = {
        "name": COMPONENT_POOL,
        "image": db.spec.image or settings.default_image,
        "command": ["chromasnap", "pool"],
        "envFrom": [{"configMapRef": {"name": pool_name(db)}}],
        "env": env,
        "resources": db.spec.pool.resources.manifest(),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "startupProbe": http_probe("/healthz", period=2, failures=60),
        "livenessProbe": http_probe("/healthz", period=10, failures=3),
        "readinessProbe": http_probe("/readyz", period=2, failures=2),
    }
    pull = db.spec.image_pull_policy or settings.default_image_pull_policy
    if pull is not None:
        out["imagePullPolicy"] = pull.value
    return out


def deployment(db: ChromaDatabase, settings: OperatorSettings) -> Manifest:
    """The pool's pods: N replicas, each with an emptyDir of loaded collections."""
    pod: dict[str, Any] = {
        "serviceAccountName": pool_name(db),
        # The token is needed: the pods patch the database's status after each pass.
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        # Time to store the open flush window after SIGTERM (writes are acknowledged only
        # once stored) and to finish a compaction pass.
        "terminationGracePeriodSeconds": 60,
        "containers": [_container(db, settings)],
        "volumes": volumes(db.spec.pool.cache_size, cache=True) + _auth_volume(db),
        "topologySpreadConstraints": spread(db.name, COMPONENT_POOL),
    }
    if db.spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in db.spec.image_pull_secrets]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _metadata(db, pool_name(db)),
        "spec": {
            "replicas": db.spec.pool.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(db.name, COMPONENT_POOL)},
            # Surge first: a rollout never lowers the capacity serving queries.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(db.name, COMPONENT_POOL),
                             "annotations": {CONFIG_HASH_ANNOTATION:
                                             config_hash(config_data(db))}},
                "spec": pod,
            },
        },
    }


def pdb(db: ChromaDatabase) -> Manifest:
    """Node drains take one pool pod at a time."""
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _metadata(db, pool_name(db)),
        "spec": {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                 "selector": {"matchLabels": selector_labels(db.name, COMPONENT_POOL)}},
    }


def network_policy(db: ChromaDatabase) -> Manifest | None:
    """With ``networkPolicy.enabled``: the HTTP port only from ``ingressFrom`` and
    ``metricsFrom`` (no peers: nothing may connect). Egress (S3, DNS, API) is left alone."""
    np = db.spec.network_policy
    if np is None or not np.enabled:
        return None
    rules = [{"ports": [{"protocol": "TCP", "port": HTTP_PORT}],
              "from": [p.manifest() for p in peers]}
             for peers in (np.ingress_from, np.metrics_from) if peers]
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _metadata(db, pool_name(db)),
        "spec": {"podSelector": {"matchLabels": selector_labels(db.name, COMPONENT_POOL)},
                 "policyTypes": ["Ingress"], "ingress": rules},
    }


def purge_job(db: ChromaDatabase, settings: OperatorSettings) -> Manifest:
    """``<name>-pool-purge``: empties the pool's root when the database is deleted with
    ``deletionPolicy: Delete``; the pool pod bent as a collection's purge Job bends its
    compactor (:func:`.jobs.purge_job_from`), reporting to the ChromaDatabase."""
    template = deployment(db, settings)["spec"]["template"]
    report = {STATUS_RESOURCE_ENV: f"{db.namespace}/{db.name}",
              STATUS_PLURAL_ENV: DATABASE_PLURAL}
    return purge_job_from(template, instance=db.name, namespace=db.namespace,
                          job_name=purge_job_name(pool_name(db)),
                          env=config_data(db) | report)


def database_children(db: ChromaDatabase, settings: OperatorSettings,
                      members: Sequence[str] = ()) -> list[Manifest]:
    """Every object the pool needs, in apply order (what pods refer to first);
    ``members``: the ChromaCollections declared in it (for its Role)."""
    np = network_policy(db)
    return [
        config_map(db),
        service_account(db),
        role(db, members),
        role_binding(db),
        service(db),
        *([np] if np is not None else []),
        deployment(db, settings),
        pdb(db),
    ]
