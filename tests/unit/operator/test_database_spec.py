"""Unit tests of the ChromaDatabase: its CRD, the Python mirror, the pure builders and status.

Files and pure functions only; the cluster tests (tests/integration/operator/
test_database.py) run the same manifests on a real API server.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_crd import (
    RESOURCE_OF_KIND,
    _compare,
    _prune_empty,
    _validator,
    allowed,
    apply_defaults,
    chart_rules,
    walk,
)

from chromasnap import resource
from chromasnap.config import PoolSettings
from chromasnap.operator.crd import RetentionSpec, SpecError
from chromasnap.operator.database import ChromaDatabase, ChromaDatabaseSpec
from chromasnap.operator.database_status import operator_fields, ready_verdict
from chromasnap.operator.observed import DeploymentState
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.database import (
    cache_max_bytes,
    config_data,
    database_children,
    deployment,
    purge_job,
    role,
)
from chromasnap.pool import passreport

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "chromasnap.dev_chromadatabases.yaml"
CRD: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
SPEC, STATUS = SCHEMA["properties"]["spec"], SCHEMA["properties"]["status"]
MINIMAL = {"storage": {"bucket": "vectors", "prefix": "pools/team-a",
                       "credentialsSecretRef": {"name": "s3"}}}
SETTINGS = OperatorSettings(default_image="chromasnap:test")


def db(**spec: Any) -> ChromaDatabase:
    return ChromaDatabase.from_body({
        "metadata": {"name": "team-a", "namespace": "ns", "uid": "uid-1", "generation": 3},
        "spec": copy.deepcopy(MINIMAL) | spec})


# --- the CRD and its mirror -------------------------------------------------------------


def test_names_short_name_category_and_scale() -> None:
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"]) == (resource.DATABASE_KIND, resource.DATABASE_PLURAL)
    assert names["shortNames"] == ["cdb"] and names["categories"] == ["chroma"]
    assert VERSION["subresources"]["scale"] == {
        "specReplicasPath": ".spec.pool.replicas", "statusReplicasPath": ".status.pool.replicas",
        "labelSelectorPath": ".status.pool.selector"}
    chart_copy = ROOT / "charts" / "chromasnap" / "crds" / CRD_PATH.name
    assert chart_copy.read_bytes() == CRD_PATH.read_bytes()


def test_printer_columns_are_the_issue_s_and_point_at_status_fields() -> None:
    cols = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert cols == ["Ready", "Collections", "Records", "Pending", "Readers", "Age"]
    for c in VERSION["additionalPrinterColumns"]:
        field = c["jsonPath"].split("[")[0]
        if field.startswith(".status."):
            node: dict[str, Any] = SCHEMA
            for part in field.strip(".").split("."):
                node = node["properties"][part]
            assert node["type"] in ("integer", "string", "array"), c["name"]


def test_schema_is_structural_and_documented() -> None:
    for path, node in walk(SCHEMA):
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, path
        if node["type"] == "object":
            assert "properties" in node or "additionalProperties" in node or path == ".metadata"
    for path, node in walk(SPEC, ".spec"):
        if path.endswith(("{}", "[]")) or ".resources." in path or ".imagePullSecrets" in path:
            continue
        assert node.get("description"), f"{path} has no description"


def test_model_mirrors_the_schema_and_defaults_agree() -> None:
    _compare(ChromaDatabaseSpec, SPEC, "spec")
    defaulted = apply_defaults(SPEC, copy.deepcopy(MINIMAL))
    assert not list(_validator(SPEC).iter_errors(defaulted))
    modelled = db().spec.model_dump(by_alias=True, mode="json")
    assert _prune_empty(modelled) == _prune_empty(defaulted)


@pytest.mark.parametrize(("spec", "message"), [
    ({"pool": {"cacheSize": "0"}}, "spec.pool.cacheSize: '0' must be greater than zero"),
    ({"pool": {"replicas": -1}}, "spec.pool.replicas"),
    ({"compactor": {"intervalSeconds": 0}}, "spec.compactor.intervalSeconds"),
    ({"deletionPolicy": "Forever"}, "spec.deletionPolicy: Input should be 'Retain' or "
                                    "'Delete'"),
    ({"auth": {"secretRef": {"name": "t"}, "tokensKey": "a b"}}, "spec.auth.tokensKey"),
    ({"storage": {"bucket": "B", "prefix": "p"}}, "spec.storage.bucket"),
    ({"retention": {"recoveryWindow": "7 days"}}, "spec.retention.recoveryWindow: '7 days' "
                                                  "is not a duration"),
    ({"retention": {"recoveryWindow": "400d"}}, "spec.retention.recoveryWindow: '400d' is "
                                                "longer than 366d"),
    ({"retention": {"snapshotsToKeep": 0}}, "spec.retention.snapshotsToKeep"),
])
def test_bad_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace(".", r"\.").replace("'", ".")):
        db(**spec)


def test_a_name_too_long_for_its_children_is_refused() -> None:
    with pytest.raises(SpecError, match=r"metadata\.name"):
        ChromaDatabase.from_body({"metadata": {"name": "x" * 41, "namespace": "ns"},
                                  "spec": MINIMAL})


# --- the builders -----------------------------------------------------------------------


def test_children_in_apply_order_owned_by_the_database() -> None:
    children = database_children(db(), SETTINGS)
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("ConfigMap", "team-a-pool"), ("ServiceAccount", "team-a-pool"), ("Role", "team-a-pool"),
        ("RoleBinding", "team-a-pool"), ("Service", "team-a"), ("Deployment", "team-a-pool"),
        ("PodDisruptionBudget", "team-a-pool")]
    for c in children:
        (owner,) = c["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "ChromaDatabase", "uid-1", True)
        assert c["metadata"]["namespace"] == "ns"


def test_every_setting_rendered_is_one_the_pool_reads() -> None:
    data = config_data(db(auth={"secretRef": {"name": "tokens"}},
                          pool={"memoryBudget": "1Gi", "cacheSize": "10Gi"}))
    fields = {"CHROMASNAP_" + f.upper() for f in PoolSettings.model_fields}
    ours = {k for k in data if k.startswith("CHROMASNAP_")}
    assert ours <= fields, ours - fields
    assert data["CHROMASNAP_MEMORY_BUDGET_BYTES"] == str(1 << 30)
    assert data["CHROMASNAP_MAX_LOADED_BYTES"] == str(int(10 * (1 << 30) * 0.9))
    assert data["CHROMASNAP_STATUS_RESOURCE"] == "ns/team-a"
    assert data["CHROMASNAP_BUCKET_URL"] == "s3://vectors/pools/team-a"
    # the pool parses what is rendered
    settings = PoolSettings.model_validate(
        {k.removeprefix("CHROMASNAP_").lower(): v for k, v in ours_items(data)})
    assert settings.memory_budget_bytes == 1 << 30
    assert settings.auth_token_file == "/var/run/chromasnap/auth/tokens"  # noqa: S105 - a path


def test_retention_reaches_every_collection_s_compaction() -> None:
    """As a ChromaCollection's: the same fields, defaults and variables (its compactor's)."""
    assert type(db().spec.retention) is RetentionSpec
    default = config_data(db())
    assert (default["CHROMASNAP_RETAIN_SNAPSHOTS"], default["CHROMASNAP_DELTA_GRACE_SECONDS"],
            default["CHROMASNAP_RECOVERY_WINDOW_SECONDS"]) == ("3", "600", "0")
    data = config_data(db(retention={"snapshotsToKeep": 5, "deltaGracePeriodSeconds": 60,
                                     "recoveryWindow": "7d"}))
    settings = PoolSettings.model_validate(
        {k.removeprefix("CHROMASNAP_").lower(): v for k, v in ours_items(data)})
    assert (settings.retain_snapshots, settings.delta_grace_seconds,
            settings.recovery_window_seconds) == (5, 60, 7 * 86_400)
    # a new window rolls the pods (they read it at start)
    assert deployment(db(retention={"recoveryWindow": "1d"}), SETTINGS) != deployment(
        db(), SETTINGS)


def ours_items(data: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in data.items() if k.startswith("CHROMASNAP_")]


def test_pods_are_locked_down_and_take_credentials_by_reference() -> None:
    dep = deployment(db(auth={"secretRef": {"name": "tokens"}, "tokensKey": "lines"}), SETTINGS)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["chromasnap", "pool"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert all("value" not in e for e in c["env"] if e["name"].startswith("AWS_"))
    auth = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert auth["secret"]["items"] == [{"key": "lines", "path": "tokens"}]
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    assert cache["emptyDir"] == {"sizeLimit": "10Gi"}
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert cache_max_bytes(db()) < 10 * (1 << 30)


def test_a_config_change_rolls_the_pods() -> None:
    def stamp(**spec: Any) -> str:
        tpl = deployment(db(**spec), SETTINGS)["spec"]["template"]
        return str(tpl["metadata"]["annotations"]["chromasnap.dev/config-hash"])

    assert stamp() == stamp()
    assert stamp() != stamp(compactor={"intervalSeconds": 10})


def test_deletion_policy_is_retain_unless_delete_is_asked_for() -> None:
    assert db().spec.deletion_policy.value == "Retain"
    assert db(deletionPolicy="Delete").spec.deletion_policy.value == "Delete"
    assert SPEC["properties"]["deletionPolicy"]["enum"] == ["Retain", "Delete"]


def test_purge_job_runs_as_a_pool_pod_outlives_the_database_and_reports_to_it() -> None:
    d = db(auth={"secretRef": {"name": "tokens"}}, deletionPolicy="Delete",
           networkPolicy={"enabled": True})
    job = purge_job(d, SETTINGS)
    meta = job["metadata"]
    assert (meta["name"], meta["namespace"]) == ("team-a-pool-purge", "ns")
    assert "ownerReferences" not in meta  # a foreground deletion must not collect it
    assert meta["labels"]["app.kubernetes.io/component"] == "purge"
    assert meta["labels"]["app.kubernetes.io/instance"] == "team-a"
    tpl = job["spec"]["template"]
    assert tpl["metadata"] == {"labels": meta["labels"]}  # not selected by the pool's
    pod = tpl["spec"]
    assert pod["restartPolicy"] == "Never" and "topologySpreadConstraints" not in pod
    assert pod["serviceAccountName"] == "team-a-pool"
    assert pod["automountServiceAccountToken"] is True  # it patches the status
    (c,) = pod["containers"]
    assert c["command"] == ["chromasnap", "purge", "--yes"]
    assert c["image"] == "chromasnap:test"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    for serving in ("envFrom", "ports", "startupProbe", "livenessProbe", "readinessProbe"):
        assert serving not in c, serving  # the ConfigMap may be gone; it serves nothing
    env = {e["name"]: e for e in c["env"]}
    assert env["CHROMASNAP_BUCKET_URL"]["value"] == "s3://vectors/pools/team-a"
    assert env["CHROMASNAP_STATUS_RESOURCE"]["value"] == "ns/team-a"
    assert env["CHROMASNAP_STATUS_PLURAL"]["value"] == "chromadatabases"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert len(env) == len(c["env"]), "each variable once"
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]  # no cache, no tokens
    assert [m["name"] for m in c["volumeMounts"]] == ["tmp"]
    # what the purge reads and where it reports: `chromasnap purge` and the pods' Role
    from chromasnap.cli.main import build_parser

    purge = build_parser().parse_args(["purge", "--status-plural",
                                       env["CHROMASNAP_STATUS_PLURAL"]["value"]])
    assert purge.status_plural == resource.DATABASE_PLURAL
    status_rule = role(d)["rules"][0]
    assert status_rule["resources"] == ["chromadatabases/status"]
    assert status_rule["resourceNames"] == ["team-a"]
    assert {"get", "patch"} <= set(status_rule["verbs"])


def test_the_pods_may_patch_their_own_database_status_only() -> None:
    rule, read = role(db())["rules"]
    assert "resourceNames" not in read and read["verbs"] == ["get", "list", "watch"]
    assert rule == {"apiGroups": ["chromasnap.dev"], "resources": ["chromadatabases/status"],
                    "resourceNames": ["team-a"], "verbs": ["get", "patch"]}


def test_network_policy_only_when_enabled() -> None:
    assert not [c for c in database_children(db(), SETTINGS) if c["kind"] == "NetworkPolicy"]
    peer = {"podSelector": {"matchLabels": {"app": "web"}}}
    children = database_children(
        db(networkPolicy={"enabled": True, "ingressFrom": [peer]}), SETTINGS)
    (np,) = [c for c in children if c["kind"] == "NetworkPolicy"]
    assert np["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8000}],
                                      "from": [peer]}]
    # no peers: no rule, nothing admitted
    (closed,) = [c for c in database_children(db(networkPolicy={"enabled": True}), SETTINGS)
                 if c["kind"] == "NetworkPolicy"]
    assert closed["spec"]["ingress"] == []


def test_chart_rbac_covers_the_database_and_can_grant_its_role() -> None:
    rules = chart_rules()
    for verb in ("get", "list", "watch", "patch"):
        assert allowed(rules, "chromasnap.dev", "chromadatabases", verb)
    assert not allowed(rules, "chromasnap.dev", "chromadatabases", "delete")
    for c in database_children(db(networkPolicy={"enabled": True}), SETTINGS):
        group, plural = RESOURCE_OF_KIND[(c["apiVersion"], c["kind"])]
        assert allowed(rules, group, plural, "create"), plural
    # deletionPolicy: Delete: a finalizer, the pool stopped, the purge Job
    assert allowed(rules, "chromasnap.dev", "chromadatabases/finalizers", "update")
    assert allowed(rules, "apps", "deployments", "delete")
    assert allowed(rules, "", "pods", "list")
    for verb in ("create", "get", "delete"):
        assert allowed(rules, "batch", "jobs", verb)
    for group in role(db())["rules"][0]["apiGroups"]:
        for verb in ("get", "patch"):
            assert allowed(rules, group, "chromadatabases/status", verb)


# --- status -----------------------------------------------------------------------------


def _dep(ready: int, desired: int = 2) -> DeploymentState:
    return DeploymentState(name="team-a-pool", desired=desired, replicas=desired, ready=ready,
                           updated=desired, available=ready, generation=1,
                           observed_generation=1)


@pytest.mark.parametrize(("problem", "dep", "desired", "status", "reason"), [
    ("spec.pool.cacheSize: bad", _dep(2), 2, "False", "InvalidSpec"),
    (None, None, 2, "False", "Creating"),
    (None, _dep(0, 0), 0, "False", "ScaledToZero"),
    (None, _dep(0), 2, "False", "NoPodReady"),
    (None, _dep(1), 2, "True", "SomePodsReady"),
    (None, _dep(2), 2, "True", "AllPodsReady"),
])
def test_ready_says_whether_a_pod_serves(problem: str | None, dep: DeploymentState | None,
                                         desired: int, status: str, reason: str) -> None:
    v = ready_verdict(problem, dep, desired)
    assert (v.status, v.reason) == (status, reason)


def test_operator_fields_keep_the_transition_time_while_the_status_holds() -> None:
    t0, t1 = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    first = operator_fields(endpoint="http://team-a.ns.svc:8000", selector="s", dep=_dep(2),
                            desired=2, problem=None, generation=3, previous=[], now=t0)
    again = operator_fields(endpoint="http://team-a.ns.svc:8000", selector="s", dep=_dep(1),
                            desired=2, problem=None, generation=3,
                            previous=first["conditions"], now=t1)
    assert first["pool"] == {"replicas": 2, "ready": 2, "selector": "s"}
    assert again["conditions"][0]["lastTransitionTime"] == "2026-12-01T00:00:00Z"
    assert set(first) == {"observedGeneration", "endpoint", "pool", "conditions"}


def test_the_pods_status_patch_stays_small_at_10000_collections() -> None:
    from chromasnap.compactor.result import CompactionResult

    results = {f"c{i}": CompactionResult(result="failed" if i % 7 == 0 else "succeeded",
                                         reason="X", message="m", pending_deltas=i % 5)
               for i in range(10_000)}
    failures = {cid: "StorageError: down" for cid, r in results.items() if r.result == "failed"}
    summary = passreport.summary(results, failures, 12.5, datetime(2026, 12, 1, tzinfo=UTC))
    patch = passreport.database_status(summary, 10_000, 3, 123_456, identity="pod-1")["status"]
    assert patch["collections"] == 10_000 and patch["databases"] == 3
    assert patch["records"] == 123_456
    assert patch["failingCollections"] == len(failures) == 1429
    assert len(patch["failing"]) == len(patch["mostPending"]) == passreport.STATUS_LISTED
    assert patch["pendingCollections"] == 8000
    assert patch["mostPending"][0]["pendingDeltas"] == 4
    assert len(yaml.safe_dump(patch)) < 5_000
    # before any pass: totals only, the pods' other fields untouched
    assert passreport.database_status(None, 5, 1, 9, identity="p") == {
        "status": {"collections": 5, "databases": 1, "records": 9}}
    fields = set(STATUS["properties"])
    assert set(patch) <= fields and set(patch["lastPass"]) <= set(
        STATUS["properties"]["lastPass"]["properties"])


@pytest.mark.parametrize("name", ["database.yaml", "secure-database.yaml"])
def test_examples_are_valid(name: str) -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / name).read_text()) if d]
    (doc,) = [d for d in docs if d["kind"] == resource.DATABASE_KIND]
    assert doc["apiVersion"] == resource.API_VERSION
    defaulted = apply_defaults(SPEC, copy.deepcopy(doc["spec"]))
    errors = list(_validator(SPEC).iter_errors(defaulted))
    assert not errors, f"{name}: {errors[0].message}"
    children = database_children(ChromaDatabase.from_body(doc | {"metadata": doc["metadata"]
                                                                 | {"uid": "u"}}), SETTINGS)
    kinds = {c["kind"] for c in children}
    assert ("NetworkPolicy" in kinds) == (name == "secure-database.yaml")
    limit = next(c for c in children if c["kind"] == "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    budget = ChromaDatabase.from_body(doc).spec.pool.memory_budget_bytes
    assert 0 < budget < 512 * (1 << 20) and limit == "512Mi", "the budget stays under the limit"


def test_the_pods_role_names_exactly_the_declared_collections() -> None:
    rules = role(db(), ["handbook", "faq", "faq"])["rules"]
    by = {(tuple(r["resources"]), tuple(r.get("resourceNames", ()))): r["verbs"] for r in rules}
    assert by[(("chromacollections",), ())] == ["get", "list", "watch"]
    assert by[(("chromacollections/status",), ("faq", "handbook"))] == ["get", "patch"]
    assert by[(("chromacollections",), ("faq", "handbook"))] == ["patch"]
    # none declared: no rule at all (an empty resourceNames would mean every name)
    assert all(r.get("resourceNames") != [] for r in role(db())["rules"])
    assert len(role(db())["rules"]) == 2
    chart = chart_rules()
    for r in rules:
        for res in r["resources"]:
            for verb in r["verbs"]:
                assert allowed(chart, "chromasnap.dev", res, verb), (res, verb)
