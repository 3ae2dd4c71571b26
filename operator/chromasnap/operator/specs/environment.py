"""The environment rendered into the pods: the contract of ``chromasnap.config``.

Everything every component reads (bucket, collection, index settings, region)
sits in one ConfigMap whose hash is stamped on every pod template, so a change
rolls the workloads; what only one component reads is set inline on that
component's container, so changing e.g. the writers' flush window rolls only
the writers (readers keep their warm caches).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from decimal import Decimal

from chromasnap.config import ENV_PREFIX, LockKind
from chromasnap.operator.crd import ChromaCollection, StorageSpec, parse_quantity
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.auth import auth_env
from chromasnap.operator.specs.naming import (
    COMPONENT_READER,
    COMPONENT_WRITER,
    Manifest,
    metadata,
    names,
)
from chromasnap.operator.specs.pods import CACHE_DIR, HTTP_PORT, INTERNAL_PORT, TERMINATION_LOG

#: Share of ``reader.cacheSize`` the readers may fill; the rest is headroom for the
#: files Chroma writes while opening a snapshot, so the kubelet never evicts a reader
#: for exceeding the emptyDir's sizeLimit.
READER_CACHE_BUDGET = Decimal("0.9")


def _env(field: str) -> str:
    """The variable ``config.py`` reads for settings field ``field``."""
    return ENV_PREFIX + field.upper()


def _service_host(cc: ChromaCollection, service: str, settings: OperatorSettings) -> str:
    host = f"{service}.{cc.namespace}.svc"
    return f"{host}.{settings.cluster_domain}" if settings.cluster_domain else host


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
    }
    return data | storage_env(spec.storage)


def storage_env(storage: StorageSpec) -> dict[str, str]:
    """Where the bucket is (never credentials: those go by ``secretKeyRef``)."""
    data = {
        # botocore reads AWS_DEFAULT_REGION; other AWS SDKs and tools read AWS_REGION.
        "AWS_REGION": storage.region,
        "AWS_DEFAULT_REGION": storage.region,
        # chromadb would otherwise try to send usage telemetry from inside the cluster.
        "ANONYMIZED_TELEMETRY": "False",
    }
    if storage.endpoint:
        data[_env("s3_endpoint_url")] = storage.endpoint
    return data


def config_hash(data: Mapping[str, str]) -> str:
    """Stable short hash of ConfigMap data (key order does not matter)."""
    blob = json.dumps(dict(data), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def config_map(cc: ChromaCollection) -> Manifest:
    """The ConfigMap the pods load with ``envFrom``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(cc, names(cc).config),
        "data": config_data(cc),
    }


#: Seconds a writer or reader keeps answering after SIGTERM (not ready, closing each
#: connection after its response) so that Services and clients move off it without a
#: failed request; well within the pods' terminationGracePeriodSeconds.
DRAIN_SECONDS = 5


def writer_env(cc: ChromaCollection, settings: OperatorSettings) -> dict[str, str]:
    """Writer-only settings (``WriterSettings``), set inline on the writer container.

    Writers push new deltas to every ready reader's internal port, found through the
    headless reader Service (``host:port``). With ``spec.auth``, the token file paths.
    """
    fw = cc.spec.writer.flush_window
    headless = _service_host(cc, names(cc).readers_headless, settings)
    return {
        _env("flush_max_records"): str(fw.max_records),
        _env("flush_max_bytes"): str(fw.max_bytes),
        _env("flush_max_delay_ms"): str(fw.max_delay_ms),
        _env("notify_dns"): f"{headless}:{INTERNAL_PORT}",
        _env("port"): str(HTTP_PORT),
        _env("drain_seconds"): str(DRAIN_SECONDS),
    } | auth_env(cc, COMPONENT_WRITER)


def reader_cache_max_bytes(cc: ChromaCollection) -> int:
    """The readers' cache budget: :data:`READER_CACHE_BUDGET` of ``reader.cacheSize``."""
    return math.floor(parse_quantity(cc.spec.reader.cache_size) * READER_CACHE_BUDGET)


def reader_env(cc: ChromaCollection, settings: OperatorSettings) -> dict[str, str]:
    """Reader-only settings (``ReaderSettings``), set inline on the reader container.

    The internal port takes writers' delta pushes (and only those); with ``spec.auth``,
    the token file paths.
    """
    r = cc.spec.reader
    writer_host = _service_host(cc, names(cc).writer, settings)
    return {
        _env("cache_dir"): CACHE_DIR,
        _env("cache_max_bytes"): str(reader_cache_max_bytes(cc)),
        _env("poll_interval_seconds"): str(r.poll_interval_seconds),
        _env("read_level"): r.read_level.value,
        _env("writer_url"): f"http://{writer_host}:{HTTP_PORT}",
        _env("port"): str(HTTP_PORT),
        _env("internal_port"): str(INTERNAL_PORT),
        _env("drain_seconds"): str(DRAIN_SECONDS),
    } | auth_env(cc, COMPONENT_READER)


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
        _env("recovery_window_seconds"): str(ret.recovery_window_seconds),
        _env("result_file"): TERMINATION_LOG,
        _env("status_resource"): f"{cc.namespace}/{cc.name}",
    } | bootstrap_env(cc)


def bootstrap_env(cc: ChromaCollection) -> dict[str, str]:
    """Where the first run starts from (``spec.bootstrap.from``); credentials go by
    reference (``pods.bootstrap_credentials``)."""
    if cc.spec.bootstrap is None:
        return {}
    src = cc.spec.bootstrap.from_
    out = {_env("bootstrap_url"): src.bucket_url, _env("bootstrap_region"): src.region}
    if src.endpoint:
        out[_env("bootstrap_s3_endpoint_url")] = src.endpoint
    if src.version:
        out[_env("bootstrap_version")] = src.version
    if src.at:
        out[_env("bootstrap_at")] = src.at.isoformat()
    return out
