"""Names, labels and the owner reference: the metadata every child shares.

``ChromaCollection`` names are at most 40 characters (the CRD enforces it), so
every name built here fits its kind's limit (63; 52 for the CronJob).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chromasnap.operator.crd import ChromaCollection
from chromasnap.resource import API_VERSION, KIND

Manifest = dict[str, Any]

COMPONENT_WRITER = "writer"
COMPONENT_READER = "reader"
COMPONENT_COMPACTOR = "compactor"
COMPONENTS = (COMPONENT_WRITER, COMPONENT_READER, COMPONENT_COMPACTOR)
#: The Job that deletes a collection's data (``deletionPolicy: Delete``).
COMPONENT_PURGE = "purge"

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


@dataclass(frozen=True)
class ChildNames:
    """Names of everything the operator creates for one ChromaCollection."""

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


def purge_job_name(name: str) -> str:
    """Name of the Job that deletes a collection's data (``deletionPolicy: Delete``)."""
    return f"{name}-purge"


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


def metadata(
    cc: ChromaCollection, name: str, component: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A child's ``metadata``: name, namespace, standard labels, owner; ``extra`` on top."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": cc.namespace,
        "labels": labels(cc.name, component),
        "ownerReferences": [owner_reference(cc)],
    }
    meta.update(extra)
    return meta
