"""The long-running workloads: writer and reader Deployments.

Both are stateless (everything durable is in S3), so plain Deployments with a
surge-first rollout; readers get a sized emptyDir for their snapshot cache.
"""

from __future__ import annotations

from typing import Any

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.auth import auth_mounts, auth_volumes
from chromasnap.operator.specs.environment import config_data, config_hash, reader_env, writer_env
from chromasnap.operator.specs.naming import (
    COMPONENT_READER,
    COMPONENT_WRITER,
    Manifest,
    metadata,
    names,
    selector_labels,
)
from chromasnap.operator.specs.pods import container, pod_spec, pod_template, spread, volumes


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
        "metadata": metadata(cc, name, component),
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
    main = container(
        cc,
        settings,
        COMPONENT_WRITER,
        writer_env(cc, settings),
        cc.spec.writer.resources,
        serves_http=True,
        cache=False,
        mounts=auth_mounts(cc, COMPONENT_WRITER),
    )
    pod = pod_spec(
        cc,
        main,
        volumes(None, cache=False) + auth_volumes(cc, COMPONENT_WRITER),
        api_access=False,
        # Time to finish the open flush window and its upload (with retries) after
        # SIGTERM, so that accepted writes are acknowledged, not dropped.
        grace_seconds=60,
    )
    pod["topologySpreadConstraints"] = spread(cc.name, COMPONENT_WRITER)
    template = pod_template(cc, COMPONENT_WRITER, pod, config_hash(config_data(cc)))
    return _deployment(cc, COMPONENT_WRITER, n.writer, cc.spec.writer.replicas, template)


def reader_deployment(cc: ChromaCollection, settings: OperatorSettings) -> Manifest:
    """The readers: N replicas with an emptyDir snapshot cache, behind ``<name>-reader``.

    Besides the HTTP port they listen on the internal port for writers' delta pushes.
    """
    n = names(cc)
    main = container(
        cc,
        settings,
        COMPONENT_READER,
        reader_env(cc, settings),
        cc.spec.reader.resources,
        serves_http=True,
        cache=True,
        internal_port=True,
        mounts=auth_mounts(cc, COMPONENT_READER),
    )
    pod = pod_spec(
        cc,
        main,
        volumes(cc.spec.reader.cache_size, cache=True) + auth_volumes(cc, COMPONENT_READER),
        api_access=False,
        grace_seconds=30,
    )
    pod["topologySpreadConstraints"] = spread(cc.name, COMPONENT_READER)
    template = pod_template(cc, COMPONENT_READER, pod, config_hash(config_data(cc)))
    return _deployment(cc, COMPONENT_READER, n.reader, cc.spec.reader.replicas, template)
