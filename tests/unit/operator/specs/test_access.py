"""Unit tests of :mod:`chromasnap.operator.specs.access`: identity, RBAC, the Lease."""

from __future__ import annotations

from specsupport import NS, body, cc_of, pod_specs

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import access

# --- identity -------------------------------------------------------------------------


def test_workload_identity_uses_no_keys_and_annotates_the_service_account(
    settings: OperatorSettings,
) -> None:
    arn = "arn:aws:iam::123456789012:role/chromasnap-docs"
    cc = cc_of(
        body(
            storage={"bucket": "vectors", "prefix": "docs", "region": "eu-central-1"},
            serviceAccount={"annotations": {"eks.amazonaws.com/role-arn": arn}},
        )
    )
    sa = access.service_account(cc)
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": arn}
    for _, pod in pod_specs(cc, settings):
        env_names = {e["name"] for e in pod["containers"][0]["env"]}
        assert "AWS_ACCESS_KEY_ID" not in env_names
        assert "AWS_SECRET_ACCESS_KEY" not in env_names
        assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_service_account_without_annotations_has_none(cc: ChromaCollection) -> None:
    assert "annotations" not in access.service_account(cc)["metadata"]


# --- RBAC -------------------------------------------------------------------------------


def test_role_is_restricted_to_its_own_lease_and_status(cc: ChromaCollection) -> None:
    role = access.role(cc)
    assert role["metadata"]["name"] == "docs-chromasnap"
    rules = role["rules"]
    for rule in rules:
        # Every rule names its objects; nothing that lists, watches, creates or deletes.
        assert rule["resourceNames"], rule
        assert set(rule["verbs"]) <= {"get", "update", "patch"}, rule
        assert "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    by_resource = {(r["apiGroups"][0], r["resources"][0]): r for r in rules}
    assert set(by_resource) == {
        ("coordination.k8s.io", "leases"),
        ("chromasnap.dev", "chromacollections/status"),
    }
    lease_rule = by_resource[("coordination.k8s.io", "leases")]
    assert lease_rule["resourceNames"] == ["docs-compactor"]
    assert lease_rule["verbs"] == ["get", "update", "patch"]
    status_rule = by_resource[("chromasnap.dev", "chromacollections/status")]
    assert status_rule["resourceNames"] == ["docs"]
    assert status_rule["verbs"] == ["get", "patch"]


def test_role_binding_binds_the_role_to_the_service_account(cc: ChromaCollection) -> None:
    rb = access.role_binding(cc)
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": access.role(cc)["metadata"]["name"],
    }
    assert rb["subjects"] == [
        {"kind": "ServiceAccount", "name": "docs-chromasnap", "namespace": NS}
    ]


def test_lease_is_precreated_free(cc: ChromaCollection) -> None:
    lease = access.lease(cc)
    assert lease["metadata"]["name"] == "docs-compactor"
    assert lease["spec"] == {"leaseDurationSeconds": 60}  # no holder: free to take
