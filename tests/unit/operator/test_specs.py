"""Unit tests of the pure spec builders (operator/chromasnap/specs.py) and crd.parse_spec.

No servers: these check the manifests themselves. That the API server accepts
them and that the pods do their jobs is for the cluster tests.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from chromasnap import config
from chromasnap.operator import specs
from chromasnap.operator.crd import ChromaCollection, SpecError, parse_quantity, parse_spec

NS = "team-a"
UID = "7f6c1a52-0d7e-4c1b-9a57-6c1f1f0e2a10"

# Stand-ins for real credentials: they must never reach any manifest.
FAKE_KEY_ID = "AKIAFAKEFAKEFAKE0000"
FAKE_SECRET = "s3cr3t/FAKE+value/that-must-not-leak"  # noqa: S105 - a decoy


def body(name: str = "docs", **spec_overrides: Any) -> dict[str, Any]:
    """A ChromaCollection as the API would hand it to a handler (defaults not filled)."""
    spec: dict[str, Any] = {
        "collection": {"name": "docs-v1", "dimension": 384},
        "storage": {
            "bucket": "vectors",
            "prefix": "collections/docs",
            "endpoint": "http://minio.minio.svc:9000",
            "credentialsSecretRef": {"name": "s3-creds"},
        },
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "chromasnap.dev/v1alpha1",
        "kind": "ChromaCollection",
        "metadata": {"name": name, "namespace": NS, "uid": UID, "generation": 1},
        "spec": spec,
    }


def cc_of(b: dict[str, Any]) -> ChromaCollection:
    return ChromaCollection.from_body(b)


@pytest.fixture
def settings() -> specs.OperatorSettings:
    return specs.OperatorSettings(default_image="registry.example/chromasnap:1.2.3")


@pytest.fixture
def cc() -> ChromaCollection:
    return cc_of(body())


@pytest.fixture
def children(cc: ChromaCollection, settings: specs.OperatorSettings) -> list[dict[str, Any]]:
    return specs.desired_children(cc, settings)


def by_kind(children: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c for c in children if c["kind"] == kind]


def one(children: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [c for c in children if c["kind"] == kind and c["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(component, pod spec) of every pod the collection can run, on-demand Jobs included."""
    yield "writer", specs.writer_deployment(cc, settings)["spec"]["template"]["spec"]
    yield "reader", specs.reader_deployment(cc, settings)["spec"]["template"]["spec"]
    cron = specs.compactor_cronjob(cc, settings)
    yield "compactor", cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    job = specs.compaction_job(cc, settings, "abc123")
    yield "compactor", job["spec"]["template"]["spec"]


def container_env(
    cc: ChromaCollection, settings: specs.OperatorSettings, component: str
) -> dict[str, str]:
    """The environment a pod of ``component`` would see (ConfigMap + plain env + downward API)."""
    pod = dict(pod_specs(cc, settings))[component]
    (container,) = pod["containers"]
    env = dict(specs.config_data(cc))
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e["valueFrom"]:
            env[e["name"]] = f"{component}-pod-0"
    return env


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
    assert {(c["apiVersion"], c["kind"]) for c in children} <= set(specs.CHILD_KINDS)


def test_every_child_is_owned_namespaced_and_labelled(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    everything = [*specs.desired_children(cc, settings), specs.compaction_job(cc, settings, "r1")]
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
            assert lab["app.kubernetes.io/component"] in specs.COMPONENTS, child["kind"]


def test_names_fit_kubernetes_limits_for_the_longest_allowed_name(
    settings: specs.OperatorSettings,
) -> None:
    name = "a" * 40
    cc = cc_of(body(name))
    limits = {"CronJob": 52}
    everything = [
        *specs.desired_children(cc, settings),
        specs.compaction_job(cc, settings, "z" * 10),
    ]
    for child in everything:
        assert len(child["metadata"]["name"]) <= limits.get(child["kind"], 63), child["kind"]
        for v in child["metadata"]["labels"].values():
            assert len(v) <= 63


@pytest.mark.parametrize("name", ["a" * 41, "Docs", "1docs", "docs-", "do_cs", ""])
def test_unusable_collection_names_are_refused(name: str) -> None:
    with pytest.raises(SpecError, match=r"metadata\.name"):
        cc_of(body(name))


def test_children_are_plain_json(children: list[dict[str, Any]]) -> None:
    # No enums, Decimals or tuples leak into what goes to the API server.
    round_tripped = json.loads(json.dumps(children))
    assert round_tripped == children


def test_builders_are_deterministic(cc: ChromaCollection, settings: specs.OperatorSettings) -> None:
    again = cc_of(body())
    assert specs.desired_children(cc, settings) == specs.desired_children(again, settings)


# --- pods: security, probes, volumes ----------------------------------------------------


def test_pods_run_restricted(cc: ChromaCollection, settings: specs.OperatorSettings) -> None:
    for component, pod in pod_specs(cc, settings):
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["runAsUser"] == 65532
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["enableServiceLinks"] is False
        assert pod["serviceAccountName"] == "docs-chromasnap"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, component
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["privileged"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            # A read-only root needs a writable /tmp.
            assert {"name": "tmp", "mountPath": specs.TMP_DIR} in c["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_only_the_compactor_gets_an_api_token(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    sa = specs.service_account(cc)
    assert sa["automountServiceAccountToken"] is False
    for component, pod in pod_specs(cc, settings):
        assert pod["automountServiceAccountToken"] is (component == "compactor"), component


def test_http_workloads_probe_healthz_and_readyz(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    for component, pod in pod_specs(cc, settings):
        (c,) = pod["containers"]
        assert c["command"] == ["chromasnap", component]
        if component == "compactor":
            assert "ports" not in c
            assert "livenessProbe" not in c
            continue
        assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_reader_cache_is_a_sized_emptydir(settings: specs.OperatorSettings) -> None:
    cc = cc_of(body(reader={"cacheSize": "20Gi"}))
    pod = specs.reader_deployment(cc, settings)["spec"]["template"]["spec"]
    assert {"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}} in pod["volumes"]
    (c,) = pod["containers"]
    assert {"name": "cache", "mountPath": specs.CACHE_DIR} in c["volumeMounts"]
    env = container_env(cc, settings, "reader")
    assert int(env["CHROMASNAP_CACHE_MAX_BYTES"]) == int(20 * 2**30 * 0.9)
    assert env["CHROMASNAP_CACHE_DIR"] == specs.CACHE_DIR


def test_default_reader_cache_is_10gi(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    pod = specs.reader_deployment(cc, settings)["spec"]["template"]["spec"]
    assert {"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}} in pod["volumes"]


def test_compactor_cache_size_is_optional(settings: specs.OperatorSettings) -> None:
    unlimited = specs.compactor_cronjob(cc_of(body()), settings)
    sized = specs.compactor_cronjob(cc_of(body(compactor={"cacheSize": "50Gi"})), settings)

    def cache(cron: dict[str, Any]) -> dict[str, Any]:
        vols = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
        return next(v for v in vols if v["name"] == "cache")

    assert cache(unlimited) == {"name": "cache", "emptyDir": {}}
    assert cache(sized) == {"name": "cache", "emptyDir": {"sizeLimit": "50Gi"}}


def test_resources_come_from_the_spec(settings: specs.OperatorSettings) -> None:
    res = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    cc = cc_of(body(writer={"resources": res}, reader={"resources": res}))
    for component, pod in pod_specs(cc, settings):
        (c,) = pod["containers"]
        assert c["resources"] == ({} if component == "compactor" else res), component


def test_image_and_pull_policy(cc: ChromaCollection) -> None:
    s = specs.OperatorSettings(default_image="op/img:9", default_image_pull_policy="Always")
    for _, pod in pod_specs(cc, s):
        (c,) = pod["containers"]
        assert c["image"] == "op/img:9"
        assert c["imagePullPolicy"] == "Always"
    own = cc_of(
        body(image="mine/img:2", imagePullPolicy="Never", imagePullSecrets=[{"name": "regcred"}])
    )
    for _, pod in pod_specs(own, s):
        (c,) = pod["containers"]
        assert c["image"] == "mine/img:2"
        assert c["imagePullPolicy"] == "Never"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]


# --- configuration contract with config.py ----------------------------------------------


def _settings_fields(cls: type[config.CommonSettings]) -> set[str]:
    return {config.ENV_PREFIX + f.upper() for f in cls.model_fields}


@pytest.mark.parametrize(
    ("component", "cls"),
    [
        ("writer", config.WriterSettings),
        ("reader", config.ReaderSettings),
        ("compactor", config.CompactorSettings),
    ],
)
def test_rendered_env_is_what_config_py_reads(
    component: str,
    cls: type[config.CommonSettings],
    cc: ChromaCollection,
    settings: specs.OperatorSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = container_env(cc, settings, component)
    # Every CHROMASNAP_ variable we render is one this component reads: a typo would
    # be silently ignored by pydantic-settings (extra="ignore") otherwise.
    ours = {k for k in env if k.startswith(config.ENV_PREFIX)}
    assert ours <= _settings_fields(cls), ours - _settings_fields(cls)
    for k in list(os.environ):
        if k.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    parsed = cls()  # type: ignore[call-arg]  # filled from the environment
    assert parsed.bucket_url == "s3://vectors/collections/docs"
    assert parsed.s3_endpoint_url == "http://minio.minio.svc:9000"
    assert parsed.collection == "docs-v1"
    assert parsed.dimension == 384
    assert parsed.space is config.Space.COSINE
    assert (parsed.hnsw_m, parsed.hnsw_construction_ef, parsed.hnsw_search_ef) == (16, 100, 100)
    if isinstance(parsed, config.WriterSettings):
        assert parsed.writer_id == "writer-pod-0"
        assert (parsed.flush_max_records, parsed.flush_max_bytes) == (10_000, 32 << 20)
        assert parsed.flush_max_delay_ms == 50
        assert parsed.notify_dns == "docs-readers-headless.team-a.svc"
        assert parsed.port == 8000
    elif isinstance(parsed, config.ReaderSettings):
        assert parsed.read_level is config.ReadLevel.FRESH
        assert parsed.poll_interval_seconds == 5
        assert parsed.writer_url == "http://docs-writer.team-a.svc:8000"
        assert parsed.cache_max_bytes == int(10 * 2**30 * 0.9)
        assert parsed.port == 8000
    elif isinstance(parsed, config.CompactorSettings):
        assert parsed.identity == "compactor-pod-0"
        assert parsed.lock is config.LockKind.KUBERNETES
        assert (parsed.lease_name, parsed.lease_namespace) == ("docs-compactor", NS)
        assert parsed.lease_duration_seconds == 60
        assert parsed.retain_snapshots == 3
        assert parsed.delta_grace_seconds == 600
        assert parsed.result_file == "/dev/termination-log"
        assert parsed.status_resource == f"{NS}/docs"


def test_config_map_holds_only_shared_settings(cc: ChromaCollection) -> None:
    cm = specs.config_map(cc)
    assert cm["metadata"]["name"] == "docs-config"
    keys = {k for k in cm["data"] if k.startswith(config.ENV_PREFIX)}
    assert keys <= _settings_fields(config.CommonSettings)
    assert all(isinstance(v, str) for v in cm["data"].values())
    assert cm["data"]["AWS_REGION"] == cm["data"]["AWS_DEFAULT_REGION"] == "us-east-1"


def test_env_names_are_unique_per_container(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    for component, pod in pod_specs(cc, settings):
        (c,) = pod["containers"]
        env_names = [e["name"] for e in c["env"]]
        assert len(env_names) == len(set(env_names)), component
        assert c["envFrom"] == [{"configMapRef": {"name": "docs-config"}}]


def test_no_endpoint_means_aws_default(settings: specs.OperatorSettings) -> None:
    cc = cc_of(body(storage={"bucket": "vectors", "prefix": "p", "region": "eu-west-1"}))
    data = specs.config_data(cc)
    assert "CHROMASNAP_S3_ENDPOINT_URL" not in data
    assert data["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_cluster_domain_makes_service_names_fully_qualified(cc: ChromaCollection) -> None:
    s = specs.OperatorSettings(cluster_domain="cluster.local")
    assert specs.writer_env(cc, s)["CHROMASNAP_NOTIFY_DNS"] == (
        "docs-readers-headless.team-a.svc.cluster.local"
    )
    assert specs.reader_env(cc, s)["CHROMASNAP_WRITER_URL"] == (
        "http://docs-writer.team-a.svc.cluster.local:8000"
    )


# --- config hash: rolls exactly what changed --------------------------------------------


def _hash(manifest: dict[str, Any]) -> str:
    spec = manifest["spec"]
    tmpl = spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
    return str(tmpl["metadata"]["annotations"][specs.CONFIG_HASH_ANNOTATION])


def _templates(cc: ChromaCollection, s: specs.OperatorSettings) -> dict[str, Any]:
    return {
        "writer": specs.writer_deployment(cc, s)["spec"]["template"],
        "reader": specs.reader_deployment(cc, s)["spec"]["template"],
        "compactor": specs.compactor_cronjob(cc, s)["spec"]["jobTemplate"]["spec"]["template"],
    }


def test_config_hash_is_stamped_on_every_pod_template(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    expected = specs.config_hash(specs.config_data(cc))
    assert len(expected) == 16
    for m in (
        specs.writer_deployment(cc, settings),
        specs.reader_deployment(cc, settings),
        specs.compactor_cronjob(cc, settings),
    ):
        assert _hash(m) == expected


def test_config_hash_ignores_key_order() -> None:
    assert specs.config_hash({"A": "1", "B": "2"}) == specs.config_hash({"B": "2", "A": "1"})
    assert specs.config_hash({"A": "1"}) != specs.config_hash({"A": "2"})


def test_shared_setting_change_rolls_every_workload(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    b = body()
    b["spec"]["collection"]["hnsw"] = {"searchEf": 200}
    changed = cc_of(b)
    before, after = _templates(cc, settings), _templates(changed, settings)
    for component in specs.COMPONENTS:
        assert before[component] != after[component], component
        old = before[component]["metadata"]["annotations"][specs.CONFIG_HASH_ANNOTATION]
        new = after[component]["metadata"]["annotations"][specs.CONFIG_HASH_ANNOTATION]
        assert old != new, component


def test_scaling_rolls_nothing(cc: ChromaCollection, settings: specs.OperatorSettings) -> None:
    scaled = cc_of(body(writer={"replicas": 7}, reader={"replicas": 9}))
    assert _templates(cc, settings) == _templates(scaled, settings)
    assert specs.reader_deployment(scaled, settings)["spec"]["replicas"] == 9
    assert specs.writer_deployment(scaled, settings)["spec"]["replicas"] == 7


def test_writer_only_change_rolls_only_writers(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    changed = cc_of(body(writer={"flushWindow": {"maxDelayMs": 200}}))
    before, after = _templates(cc, settings), _templates(changed, settings)
    assert before["writer"] != after["writer"]
    assert before["reader"] == after["reader"]  # readers keep their warm caches
    assert before["compactor"] == after["compactor"]


def test_credentials_secret_change_rolls_every_workload(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    b = body()
    b["spec"]["storage"]["credentialsSecretRef"] = {"name": "s3-creds-v2"}
    before, after = _templates(cc, settings), _templates(cc_of(b), settings)
    for component in specs.COMPONENTS:
        assert before[component] != after[component]


# --- credentials ------------------------------------------------------------------------


def test_credentials_only_by_secret_reference(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    for component, pod in pod_specs(cc, settings):
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["AWS_ACCESS_KEY_ID"] == {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}},
        }, component
        assert env["AWS_SECRET_ACCESS_KEY"] == {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}},
        }


def test_custom_secret_keys_are_honoured(settings: specs.OperatorSettings) -> None:
    ref = {"name": "minio", "accessKeyIdKey": "rootUser", "secretAccessKeyKey": "rootPassword"}
    cc = cc_of(body(storage={"bucket": "vectors", "prefix": "p", "credentialsSecretRef": ref}))
    (c,) = specs.writer_deployment(cc, settings)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio",
        "key": "rootUser",
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio",
        "key": "rootPassword",
    }


def test_no_credential_values_anywhere(
    cc: ChromaCollection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even with real-looking credentials in the operator's own environment, nothing
    # carries a value: no Secret is created, no env var holds a key.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("CHROMASNAP_AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    settings = specs.OperatorSettings()
    out = [*specs.desired_children(cc, settings), specs.compaction_job(cc, settings, "x")]
    dumped = json.dumps(out)
    assert FAKE_KEY_ID not in dumped
    assert FAKE_SECRET not in dumped
    assert not by_kind(out, "Secret")
    for _, pod in pod_specs(cc, settings):
        for e in pod["containers"][0]["env"]:
            if e["name"].startswith("AWS_") and "KEY" in e["name"]:
                assert "value" not in e


def test_workload_identity_uses_no_keys_and_annotates_the_service_account(
    settings: specs.OperatorSettings,
) -> None:
    arn = "arn:aws:iam::123456789012:role/chromasnap-docs"
    cc = cc_of(
        body(
            storage={"bucket": "vectors", "prefix": "docs", "region": "eu-central-1"},
            serviceAccount={"annotations": {"eks.amazonaws.com/role-arn": arn}},
        )
    )
    sa = specs.service_account(cc)
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": arn}
    for _, pod in pod_specs(cc, settings):
        env_names = {e["name"] for e in pod["containers"][0]["env"]}
        assert "AWS_ACCESS_KEY_ID" not in env_names
        assert "AWS_SECRET_ACCESS_KEY" not in env_names
        assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_service_account_without_annotations_has_none(cc: ChromaCollection) -> None:
    assert "annotations" not in specs.service_account(cc)["metadata"]


# --- RBAC -------------------------------------------------------------------------------


def test_role_is_restricted_to_its_own_lease_and_status(cc: ChromaCollection) -> None:
    role = specs.role(cc)
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
    rb = specs.role_binding(cc)
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": specs.role(cc)["metadata"]["name"],
    }
    assert rb["subjects"] == [
        {"kind": "ServiceAccount", "name": "docs-chromasnap", "namespace": NS}
    ]


def test_lease_is_precreated_free(cc: ChromaCollection) -> None:
    lease = specs.lease(cc)
    assert lease["metadata"]["name"] == "docs-compactor"
    assert lease["spec"] == {"leaseDurationSeconds": 60}  # no holder: free to take


# --- services, PDBs, scale --------------------------------------------------------------


def test_services_select_their_deployments_pods(
    children: list[dict[str, Any]],
) -> None:
    writer = one(children, "Deployment", "docs-writer")
    reader = one(children, "Deployment", "docs-reader")
    for d in (writer, reader):
        sel = d["spec"]["selector"]["matchLabels"]
        tmpl_labels = d["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= tmpl_labels.items()
    w_svc = one(children, "Service", "docs-writer")
    r_svc = one(children, "Service", "docs-reader")
    h_svc = one(children, "Service", "docs-readers-headless")
    assert w_svc["spec"]["selector"] == writer["spec"]["selector"]["matchLabels"]
    assert r_svc["spec"]["selector"] == reader["spec"]["selector"]["matchLabels"]
    assert h_svc["spec"]["selector"] == reader["spec"]["selector"]["matchLabels"]
    assert h_svc["spec"]["clusterIP"] == "None"
    assert h_svc["spec"]["publishNotReadyAddresses"] is False
    for svc in (w_svc, r_svc, h_svc):
        assert svc["spec"]["ports"][0]["port"] == 8000
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    # The metrics label marks exactly one Service per pod, so nothing is scraped twice.
    labelled = [
        s["metadata"]["name"]
        for s in by_kind(children, "Service")
        if s["metadata"]["labels"].get(specs.LABEL_METRICS) == "true"
    ]
    assert sorted(labelled) == ["docs-reader", "docs-writer"]


def test_disruption_budgets_allow_one_at_a_time(children: list[dict[str, Any]]) -> None:
    for comp in ("writer", "reader"):
        pdb = one(children, "PodDisruptionBudget", f"docs-{comp}")
        dep = one(children, "Deployment", f"docs-{comp}")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in pdb["spec"]
        assert pdb["spec"]["selector"] == dep["spec"]["selector"]


def test_reader_selector_matches_the_reader_pods(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    sel = specs.reader_selector(cc.name)
    parsed = dict(kv.split("=", 1) for kv in sel.split(","))
    dep = specs.reader_deployment(cc, settings)
    assert parsed == dep["spec"]["selector"]["matchLabels"]


def test_rollouts_never_lower_capacity(children: list[dict[str, Any]]) -> None:
    for d in by_kind(children, "Deployment"):
        assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_zero_replicas_is_allowed(settings: specs.OperatorSettings) -> None:
    cc = cc_of(body(writer={"replicas": 0}, reader={"replicas": 0}))
    assert specs.writer_deployment(cc, settings)["spec"]["replicas"] == 0
    assert specs.reader_deployment(cc, settings)["spec"]["replicas"] == 0


# --- compactor --------------------------------------------------------------------------


def test_cronjob_forbids_overlap(cc: ChromaCollection, settings: specs.OperatorSettings) -> None:
    cron = specs.compactor_cronjob(cc, settings)
    spec = cron["spec"]
    assert cron["metadata"]["name"] == "docs-compactor"
    assert spec["schedule"] == "*/5 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    assert spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 0
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["activeDeadlineSeconds"] == 3600
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_cronjob_follows_schedule_and_suspend(settings: specs.OperatorSettings) -> None:
    cc = cc_of(body(compactor={"schedule": "@hourly", "suspend": True}))
    spec = specs.compactor_cronjob(cc, settings)["spec"]
    assert spec["schedule"] == "@hourly"
    assert spec["suspend"] is True


def test_on_demand_job_is_the_cronjobs_template(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    cron = specs.compactor_cronjob(cc, settings)
    job = specs.compaction_job(cc, settings, "20240101")
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "docs-compactor-20240101"
    assert job["spec"] == cron["spec"]["jobTemplate"]["spec"]
    assert job["metadata"]["labels"][specs.LABEL_TRIGGER] == "manual"
    assert cron["spec"]["jobTemplate"]["metadata"]["labels"][specs.LABEL_TRIGGER] == "scheduled"
    # Building the Job must not alias the CronJob's dicts.
    job["spec"]["template"]["spec"]["containers"][0]["env"].clear()
    assert specs.compactor_cronjob(cc, settings) == cron


@pytest.mark.parametrize("run_id", ["", "UPPER", "has-dash", "x" * 11])
def test_on_demand_job_run_id_is_checked(
    cc: ChromaCollection, settings: specs.OperatorSettings, run_id: str
) -> None:
    with pytest.raises(ValueError, match="run id"):
        specs.compaction_job(cc, settings, run_id)


# --- parse_spec -------------------------------------------------------------------------


def test_parse_spec_fills_defaults() -> None:
    spec = parse_spec(body())
    assert spec.writer.replicas == 2 and spec.reader.replicas == 2
    assert spec.reader.cache_size == "10Gi"
    assert spec.reader.read_level is config.ReadLevel.FRESH
    assert spec.compactor.schedule == "*/5 * * * *"
    assert spec.retention.snapshots_to_keep == 3
    assert spec.deletion_policy.value == "Retain"
    assert spec.storage.credentials_secret_ref is not None
    assert spec.storage.credentials_secret_ref.access_key_id_key == "AWS_ACCESS_KEY_ID"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"collection": {"name": "x", "dimension": 3}}, r"spec\.collection\.name"),
        ({"collection": {"name": "a..b", "dimension": 3}}, r"spec\.collection\.name"),
        ({"collection": {"name": "docs", "dimension": 0}}, r"spec\.collection\.dimension"),
        (
            {
                "collection": {
                    "name": "docs",
                    "dimension": 3,
                    "hnsw": {"m": 64, "constructionEf": 32},
                }
            },
            r"constructionEf \(32\) must be at least m \(64\)",
        ),
        ({"storage": {"bucket": "Bad_Bucket", "prefix": "p"}}, r"spec\.storage\.bucket"),
        ({"storage": {"bucket": "vectors", "prefix": "/abs"}}, r"spec\.storage\.prefix"),
        ({"storage": {"bucket": "vectors", "prefix": "a/../b"}}, r"spec\.storage\.prefix"),
        (
            {"storage": {"bucket": "vectors", "prefix": "p", "endpoint": "minio:9000"}},
            r"spec\.storage\.endpoint",
        ),
        ({"reader": {"cacheSize": "0"}}, r"spec\.reader\.cacheSize: '0' must be greater than zero"),
        ({"reader": {"cacheSize": "lots"}}, r"spec\.reader\.cacheSize"),
        ({"reader": {"readLevel": "eventual"}}, r"spec\.reader\.readLevel"),
        ({"writer": {"replicas": 101}}, r"spec\.writer\.replicas"),
        ({"compactor": {"schedule": "every five minutes"}}, r"spec\.compactor\.schedule"),
        (
            {"reader": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}},
            r"requests\.memory \(2Gi\) is greater than limits\.memory \(1Gi\)",
        ),
        (
            {"reader": {"pollIntervalSeconds": 60}, "retention": {"deltaGracePeriodSeconds": 30}},
            r"deltaGracePeriodSeconds \(30\) must be at least reader\.pollIntervalSeconds",
        ),
        ({"deletionPolicy": "Purge"}, r"spec\.deletionPolicy"),
        ({"imagePullSecrets": [{"name": ""}]}, r"spec\.imagePullSecrets\[0\]\.name"),
    ],
)
def test_parse_spec_names_the_bad_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(body(**overrides))


def test_snapshot_read_level_needs_no_grace(settings: specs.OperatorSettings) -> None:
    spec = parse_spec(
        body(
            reader={"readLevel": "snapshot", "pollIntervalSeconds": 60},
            retention={"deltaGracePeriodSeconds": 0},
        )
    )
    assert spec.retention.delta_grace_period_seconds == 0


def test_parse_spec_refuses_a_missing_spec() -> None:
    b = body()
    del b["spec"]
    with pytest.raises(SpecError, match="spec"):
        parse_spec(b)


def test_parse_spec_does_not_mutate_its_input() -> None:
    b = body()
    before = copy.deepcopy(b)
    parse_spec(b)
    assert b == before


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10Gi", 10 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1G", 10**9),
        ("250m", 0.25),
        ("1.5", 1.5),
        ("2e3", 2000),
        (1073741824, 2**30),
    ],
)
def test_parse_quantity(text: str | int, value: float) -> None:
    assert float(parse_quantity(text)) == value


@pytest.mark.parametrize("text", ["", "Gi", "10GB", "ten", "1.2.3"])
def test_parse_quantity_refuses_junk(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_operator_settings_come_from_the_charts_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMASNAP_DEFAULT_IMAGE", "reg/chromasnap:7")
    monkeypatch.setenv("CHROMASNAP_DEFAULT_IMAGE_PULL_POLICY", "IfNotPresent")
    monkeypatch.setenv("CHROMASNAP_CLUSTER_DOMAIN", "cluster.local")
    monkeypatch.setenv("CHROMASNAP_LOG_LEVEL", "DEBUG")
    s = specs.OperatorSettings()
    assert s.default_image == "reg/chromasnap:7"
    assert s.default_image_pull_policy is not None
    assert s.default_image_pull_policy.value == "IfNotPresent"
    assert s.cluster_domain == "cluster.local"
    assert s.log_level == "DEBUG"
