"""Identity and RBAC: the pods' ServiceAccount, the compactor's Role and its Lease.

The Role is least privilege by name: the compactor may take its own Lease and
patch its own collection's status, nothing else.
"""

from __future__ import annotations

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.specs.naming import COMPONENT_COMPACTOR, Manifest, metadata, names
from chromasnap.resource import API_VERSION, PLURAL


def service_account(cc: ChromaCollection) -> Manifest:
    """The pods' ServiceAccount, carrying the user's workload-identity annotations.

    Tokens are not mounted by default; only the compactor's pods opt in, since only
    they call the Kubernetes API (Lease, status).
    """
    meta = metadata(cc, names(cc).service_account)
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
        "metadata": metadata(cc, n.role, COMPONENT_COMPACTOR),
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
        "metadata": metadata(cc, n.role_binding, COMPONENT_COMPACTOR),
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
        "metadata": metadata(cc, names(cc).lease, COMPONENT_COMPACTOR),
        "spec": {"leaseDurationSeconds": cc.spec.compactor.lease_duration_seconds},
    }
