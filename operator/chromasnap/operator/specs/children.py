"""Everything one collection needs, in apply order, and the kinds that covers."""

from __future__ import annotations

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.access import lease, role, role_binding, service_account
from chromasnap.operator.specs.deployments import reader_deployment, writer_deployment
from chromasnap.operator.specs.environment import config_map
from chromasnap.operator.specs.jobs import compactor_cronjob
from chromasnap.operator.specs.naming import Manifest
from chromasnap.operator.specs.network import (
    network_policies,
    network_policy_names,
    reader_pdb,
    reader_service,
    readers_headless_service,
    writer_pdb,
    writer_service,
)


def desired_children(cc: ChromaCollection, settings: OperatorSettings) -> list[Manifest]:
    """Every object the collection needs, in apply order.

    Configuration and identity come before the workloads that use them (a pod
    created before its ConfigMap or ServiceAccount fails to start), Services
    before Deployments (so DNS exists when the first pod asks), NetworkPolicies
    (if enabled) before the pods they protect.
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
        *network_policies(cc),
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
    ("networking.k8s.io/v1", "NetworkPolicy"),
)


def unwanted_children(cc: ChromaCollection) -> set[tuple[str, str]]:
    """(kind, name) of optional children the spec no longer asks for, to delete.

    Only the NetworkPolicies come and go (``spec.networkPolicy.enabled``); every other
    child always exists.
    """
    if network_policies(cc):
        return set()
    return {("NetworkPolicy", name) for name in network_policy_names(cc)}
