"""Unit tests of :mod:`chromasnap.operator.specs.children`: the whole set of children."""

from __future__ import annotations

import json
from typing import Any

from specsupport import NS, UID, body, cc_of

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import jobs, naming
from chromasnap.operator.specs.children import CHILD_KINDS, desired_children

# --- the whole set ----------------------------------------------------------------------


def test_children_are_the_documented_set_in_apply_order(
    children: list[dict[str, Any]],
) -> None:
    kinds = [c["kind"] for c in children]
    assert kinds == [
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Lease",
        "Service",
        "Service",
        "Service",
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "CronJob",
    ]
    # Everything a pod needs exists before the first pod is created.
    first_workload = min(
        i for i, c in enumerate(children) if c["kind"] in ("Deployment", "CronJob")
    )
    for k in ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Lease"):
        assert kinds.index(k) < first_workload
    assert {(c["apiVersion"], c["kind"]) for c in children} <= set(CHILD_KINDS)


def test_every_child_is_owned_namespaced_and_labelled(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    everything = [*desired_children(cc, settings), jobs.compaction_job(cc, settings, "r1")]
    for child in everything:
        meta = child["metadata"]
        assert meta["namespace"] == NS
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "chromasnap.dev/v1alpha1",
                "kind": "ChromaCollection",
                "name": "docs",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], child["kind"]
        lab = meta["labels"]
        assert lab["app.kubernetes.io/name"] == "chromasnap"
        assert lab["app.kubernetes.io/instance"] == "docs"
        assert lab["app.kubernetes.io/managed-by"] == "chromasnap-operator"
        assert lab["app.kubernetes.io/part-of"] == "chromasnap"
        if child["kind"] not in ("ConfigMap", "ServiceAccount"):  # shared by all components
            assert lab["app.kubernetes.io/component"] in naming.COMPONENTS, child["kind"]


def test_names_fit_kubernetes_limits_for_the_longest_allowed_name(
    settings: OperatorSettings,
) -> None:
    name = "a" * 40
    cc = cc_of(body(name))
    limits = {"CronJob": 52}
    everything = [
        *desired_children(cc, settings),
        jobs.compaction_job(cc, settings, "z" * 10),
    ]
    for child in everything:
        assert len(child["metadata"]["name"]) <= limits.get(child["kind"], 63), child["kind"]
        for v in child["metadata"]["labels"].values():
            assert len(v) <= 63


def test_children_are_plain_json(children: list[dict[str, Any]]) -> None:
    # No enums, Decimals or tuples leak into what goes to the API server.
    round_tripped = json.loads(json.dumps(children))
    assert round_tripped == children


def test_builders_are_deterministic(cc: ChromaCollection, settings: OperatorSettings) -> None:
    again = cc_of(body())
    assert desired_children(cc, settings) == desired_children(again, settings)
