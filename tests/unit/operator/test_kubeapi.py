"""Unit tests of :mod:`chromasnap.operator.kubeapi` that need no server: REST paths."""

from __future__ import annotations

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.children import desired_children


def test_rest_paths_of_the_kinds_the_operator_touches(cc: ChromaCollection,
                                                      settings: OperatorSettings) -> None:
    from chromasnap.operator.kubeapi import object_path, path

    got = {m["kind"]: object_path(m) for m in desired_children(cc, settings)}
    assert got["ConfigMap"] == "/api/v1/namespaces/team-a/configmaps/docs-config"
    assert got["Deployment"] == "/apis/apps/v1/namespaces/team-a/deployments/docs-reader"
    assert got["Role"] == \
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/docs-chromasnap"
    assert got["Lease"] == "/apis/coordination.k8s.io/v1/namespaces/team-a/leases/docs-compactor"
    assert path("chromasnap.dev/v1alpha1", "ChromaCollection", "team-a", "docs", "status") == \
        "/apis/chromasnap.dev/v1alpha1/namespaces/team-a/chromacollections/docs/status"
    assert path("v1", "Event", "team-a") == "/api/v1/namespaces/team-a/events"
