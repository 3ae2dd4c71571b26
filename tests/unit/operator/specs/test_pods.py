"""Unit tests of :mod:`chromasnap.operator.specs.pods`: security, probes, volumes, credentials."""

from __future__ import annotations

import json
from typing import Any

import pytest
from specsupport import FAKE_KEY_ID, FAKE_SECRET, body, by_kind, cc_of, container_env, pod_specs

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import access, deployments, jobs, pods
from chromasnap.operator.specs.children import desired_children

# --- pods: security, probes, volumes ----------------------------------------------------


def test_pods_run_restricted(cc: ChromaCollection, settings: OperatorSettings) -> None:
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
            assert {"name": "tmp", "mountPath": pods.TMP_DIR} in c["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_only_the_compactor_gets_an_api_token(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    sa = access.service_account(cc)
    assert sa["automountServiceAccountToken"] is False
    for component, pod in pod_specs(cc, settings):
        assert pod["automountServiceAccountToken"] is (component == "compactor"), component


def test_http_workloads_probe_healthz_and_readyz(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    for component, pod in pod_specs(cc, settings):
        (c,) = pod["containers"]
        assert c["command"] == ["chromasnap", component]
        if component == "compactor":
            assert "ports" not in c
            assert "livenessProbe" not in c
            continue
        http = {"name": "http", "containerPort": 8000, "protocol": "TCP"}
        internal = {"name": "internal", "containerPort": 8001, "protocol": "TCP"}
        # readers also take writers' delta pushes, on a port of their own
        assert c["ports"] == ([http, internal] if component == "reader" else [http])
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_reader_cache_is_a_sized_emptydir(settings: OperatorSettings) -> None:
    cc = cc_of(body(reader={"cacheSize": "20Gi"}))
    pod = deployments.reader_deployment(cc, settings)["spec"]["template"]["spec"]
    assert {"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}} in pod["volumes"]
    (c,) = pod["containers"]
    assert {"name": "cache", "mountPath": pods.CACHE_DIR} in c["volumeMounts"]
    env = container_env(cc, settings, "reader")
    assert int(env["CHROMASNAP_CACHE_MAX_BYTES"]) == int(20 * 2**30 * 0.9)
    assert env["CHROMASNAP_CACHE_DIR"] == pods.CACHE_DIR


def test_default_reader_cache_is_10gi(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    pod = deployments.reader_deployment(cc, settings)["spec"]["template"]["spec"]
    assert {"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}} in pod["volumes"]


def test_compactor_cache_size_is_optional(settings: OperatorSettings) -> None:
    unlimited = jobs.compactor_cronjob(cc_of(body()), settings)
    sized = jobs.compactor_cronjob(cc_of(body(compactor={"cacheSize": "50Gi"})), settings)

    def cache(cron: dict[str, Any]) -> dict[str, Any]:
        vols = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
        return next(v for v in vols if v["name"] == "cache")

    assert cache(unlimited) == {"name": "cache", "emptyDir": {}}
    assert cache(sized) == {"name": "cache", "emptyDir": {"sizeLimit": "50Gi"}}


def test_resources_come_from_the_spec(settings: OperatorSettings) -> None:
    res = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    cc = cc_of(body(writer={"resources": res}, reader={"resources": res}))
    for component, pod in pod_specs(cc, settings):
        (c,) = pod["containers"]
        assert c["resources"] == ({} if component == "compactor" else res), component


def test_image_and_pull_policy(cc: ChromaCollection) -> None:
    s = OperatorSettings(default_image="op/img:9", default_image_pull_policy="Always")
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


# --- credentials ------------------------------------------------------------------------


def test_credentials_only_by_secret_reference(
    cc: ChromaCollection, settings: OperatorSettings
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


def test_custom_secret_keys_are_honoured(settings: OperatorSettings) -> None:
    ref = {"name": "minio", "accessKeyIdKey": "rootUser", "secretAccessKeyKey": "rootPassword"}
    cc = cc_of(body(storage={"bucket": "vectors", "prefix": "p", "credentialsSecretRef": ref}))
    (c,) = deployments.writer_deployment(cc, settings)["spec"]["template"]["spec"]["containers"]
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
    settings = OperatorSettings()
    out = [*desired_children(cc, settings), jobs.compaction_job(cc, settings, "x")]
    dumped = json.dumps(out)
    assert FAKE_KEY_ID not in dumped
    assert FAKE_SECRET not in dumped
    assert not by_kind(out, "Secret")
    for _, pod in pod_specs(cc, settings):
        for e in pod["containers"][0]["env"]:
            if e["name"].startswith("AWS_") and "KEY" in e["name"]:
                assert "value" not in e
