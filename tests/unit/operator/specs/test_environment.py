"""Unit tests of :mod:`chromasnap.operator.specs.environment`: the contract with
``config.py``, and the config hash that rolls exactly what changed.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from specsupport import NS, body, cc_of, container_env, pod_specs

from chromasnap import config
from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import deployments, environment, jobs, naming

# --- configuration contract with config.py ----------------------------------------------


#: Where the token files are mounted (spec.auth).
AUTH_DIR = "/var/run/chromasnap/auth"


def _settings_fields(cls: type[config.CommonSettings]) -> set[str]:
    return {config.ENV_PREFIX + f.upper() for f in cls.model_fields}


@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "auth"])
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
    auth: bool,
    settings: OperatorSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cc = cc_of(body(auth={"secretRef": {"name": "tokens"}}) if auth else body())
    env = container_env(cc, settings, component)
    # Every CHROMASNAP_ variable we render is one this component reads: a typo would
    # be silently ignored by pydantic-settings (extra="ignore") otherwise.
    ours = {k for k in env if k.startswith(config.ENV_PREFIX)}
    known = _settings_fields(cls)
    assert ours <= known, ours - known
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
    assert parsed.space is config.Space.L2  # the spec names none: Chroma's default
    assert (parsed.hnsw_m, parsed.hnsw_construction_ef, parsed.hnsw_search_ef) == (16, 100, 100)
    if isinstance(parsed, config.WriterSettings):
        assert parsed.writer_id == "writer-pod-0"
        assert (parsed.flush_max_records, parsed.flush_max_bytes) == (10_000, 32 << 20)
        assert parsed.flush_max_delay_ms == 50
        # writers push to the readers' internal port, not their HTTP port
        assert parsed.notify_dns == "docs-readers-headless.team-a.svc:8001"
        assert parsed.port == 8000
        if auth:
            assert parsed.auth_token_file == f"{AUTH_DIR}/write"
    elif isinstance(parsed, config.ReaderSettings):
        assert parsed.read_level is config.ReadLevel.FRESH
        assert parsed.poll_interval_seconds == 5
        assert parsed.writer_url == "http://docs-writer.team-a.svc:8000"
        assert parsed.cache_max_bytes == int(10 * 2**30 * 0.9)
        assert parsed.port == 8000
        assert env["CHROMASNAP_INTERNAL_PORT"] == "8001"
        if "internal_port" in cls.model_fields:
            assert getattr(parsed, "internal_port") == 8001  # noqa: B009 - not yet typed
        if auth:
            assert parsed.auth_token_file == f"{AUTH_DIR}/read,{AUTH_DIR}/write"
    if auth and component != "compactor":
        assert env["CHROMASNAP_PUSH_TOKEN_FILE"] == f"{AUTH_DIR}/push"
        if "push_token_file" in cls.model_fields:
            assert getattr(parsed, "push_token_file") == env[  # noqa: B009 - not yet typed
                "CHROMASNAP_PUSH_TOKEN_FILE"]
    if isinstance(parsed, config.CompactorSettings):
        assert parsed.identity == "compactor-pod-0"
        assert parsed.lock is config.LockKind.KUBERNETES
        assert (parsed.lease_name, parsed.lease_namespace) == ("docs-compactor", NS)
        assert parsed.lease_duration_seconds == 60
        assert parsed.retain_snapshots == 3
        assert parsed.delta_grace_seconds == 600
        assert parsed.result_file == "/dev/termination-log"
        assert parsed.status_resource == f"{NS}/docs"
        assert parsed.auth_token_file is None  # the compactor serves nothing


def test_config_map_holds_only_shared_settings(cc: ChromaCollection) -> None:
    cm = environment.config_map(cc)
    assert cm["metadata"]["name"] == "docs-config"
    keys = {k for k in cm["data"] if k.startswith(config.ENV_PREFIX)}
    assert keys <= _settings_fields(config.CommonSettings)
    assert all(isinstance(v, str) for v in cm["data"].values())
    assert cm["data"]["AWS_REGION"] == cm["data"]["AWS_DEFAULT_REGION"] == "us-east-1"


def test_env_names_are_unique_per_container(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    for component, pod in pod_specs(cc, settings):
        (c,) = pod["containers"]
        env_names = [e["name"] for e in c["env"]]
        assert len(env_names) == len(set(env_names)), component
        assert c["envFrom"] == [{"configMapRef": {"name": "docs-config"}}]


def test_no_endpoint_means_aws_default(settings: OperatorSettings) -> None:
    cc = cc_of(body(storage={"bucket": "vectors", "prefix": "p", "region": "eu-west-1"}))
    data = environment.config_data(cc)
    assert "CHROMASNAP_S3_ENDPOINT_URL" not in data
    assert data["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_cluster_domain_makes_service_names_fully_qualified(cc: ChromaCollection) -> None:
    s = OperatorSettings(cluster_domain="cluster.local")
    assert environment.writer_env(cc, s)["CHROMASNAP_NOTIFY_DNS"] == (
        "docs-readers-headless.team-a.svc.cluster.local:8001"
    )
    assert environment.reader_env(cc, s)["CHROMASNAP_WRITER_URL"] == (
        "http://docs-writer.team-a.svc.cluster.local:8000"
    )


# --- config hash: rolls exactly what changed --------------------------------------------


def _hash(manifest: dict[str, Any]) -> str:
    spec = manifest["spec"]
    tmpl = spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
    return str(tmpl["metadata"]["annotations"][naming.CONFIG_HASH_ANNOTATION])


def _templates(cc: ChromaCollection, s: OperatorSettings) -> dict[str, Any]:
    return {
        "writer": deployments.writer_deployment(cc, s)["spec"]["template"],
        "reader": deployments.reader_deployment(cc, s)["spec"]["template"],
        "compactor": jobs.compactor_cronjob(cc, s)["spec"]["jobTemplate"]["spec"]["template"],
    }


def test_config_hash_is_stamped_on_every_pod_template(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    expected = environment.config_hash(environment.config_data(cc))
    assert len(expected) == 16
    for m in (
        deployments.writer_deployment(cc, settings),
        deployments.reader_deployment(cc, settings),
        jobs.compactor_cronjob(cc, settings),
    ):
        assert _hash(m) == expected


def test_config_hash_ignores_key_order() -> None:
    config_hash = environment.config_hash
    assert config_hash({"A": "1", "B": "2"}) == config_hash({"B": "2", "A": "1"})
    assert config_hash({"A": "1"}) != config_hash({"A": "2"})


def test_shared_setting_change_rolls_every_workload(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    b = body()
    b["spec"]["collection"]["hnsw"] = {"searchEf": 200}
    changed = cc_of(b)
    before, after = _templates(cc, settings), _templates(changed, settings)
    for component in naming.COMPONENTS:
        assert before[component] != after[component], component
        old = before[component]["metadata"]["annotations"][naming.CONFIG_HASH_ANNOTATION]
        new = after[component]["metadata"]["annotations"][naming.CONFIG_HASH_ANNOTATION]
        assert old != new, component


def test_scaling_rolls_nothing(cc: ChromaCollection, settings: OperatorSettings) -> None:
    scaled = cc_of(body(writer={"replicas": 7}, reader={"replicas": 9}))
    assert _templates(cc, settings) == _templates(scaled, settings)
    assert deployments.reader_deployment(scaled, settings)["spec"]["replicas"] == 9
    assert deployments.writer_deployment(scaled, settings)["spec"]["replicas"] == 7


def test_writer_only_change_rolls_only_writers(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    changed = cc_of(body(writer={"flushWindow": {"maxDelayMs": 200}}))
    before, after = _templates(cc, settings), _templates(changed, settings)
    assert before["writer"] != after["writer"]
    assert before["reader"] == after["reader"]  # readers keep their warm caches
    assert before["compactor"] == after["compactor"]


def test_credentials_secret_change_rolls_every_workload(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    b = body()
    b["spec"]["storage"]["credentialsSecretRef"] = {"name": "s3-creds-v2"}
    before, after = _templates(cc, settings), _templates(cc_of(b), settings)
    for component in naming.COMPONENTS:
        assert before[component] != after[component]


def test_recovery_window_and_bootstrap_reach_only_the_compactor(
    settings: OperatorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    cc = cc_of(body(retention={"recoveryWindow": "7d"}, bootstrap={"from": {
        "bucket": "vectors", "prefix": "collections/old", "endpoint": "http://minio:9000",
        "credentialsSecretRef": {"name": "old-keys"}, "at": "2026-11-30T12:00:00Z"}}))
    env = container_env(cc, settings, "compactor")
    for k in list(os.environ):
        if k.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    parsed = config.CompactorSettings()  # type: ignore[call-arg]
    assert parsed.recovery_window_seconds == 7 * 86_400
    assert parsed.bootstrap_url == "s3://vectors/collections/old"
    assert parsed.bootstrap_s3_endpoint_url == "http://minio:9000"
    assert parsed.bootstrap_at is not None and parsed.bootstrap_at.isoformat().startswith(
        "2026-11-30T12:00:00")
    # The source's keys by reference only, and to the compactor alone.
    pods = dict(pod_specs(cc, settings))
    (compactor,) = pods["compactor"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in compactor["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs["CHROMASNAP_BOOTSTRAP_AWS_ACCESS_KEY_ID"] == {
        "name": "old-keys", "key": "AWS_ACCESS_KEY_ID"}
    for component in ("writer", "reader"):
        (c,) = pods[component]["containers"]
        assert not [e for e in c["env"] if "BOOTSTRAP" in e["name"]]
        assert "CHROMASNAP_BOOTSTRAP_URL" not in container_env(cc, settings, component)


@pytest.mark.parametrize(("spec", "message"), [
    ({"retention": {"recoveryWindow": "7 days"}}, "is not a duration"),
    ({"retention": {"recoveryWindow": "400d"}}, "longer than 366d"),
    ({"bootstrap": {"from": {"bucket": "vectors", "prefix": "collections/docs"}}},
     "overlaps this collection's storage"),
    ({"bootstrap": {"from": {"bucket": "vectors", "prefix": "old", "version": "0000000002-aabbccdd",
                             "at": "2026-11-30T12:00:00Z"}}}, "either version or at"),
    ({"bootstrap": {"from": {"bucket": "vectors", "prefix": "old/../x"}}}, "usable key prefix"),
])
def test_bad_recovery_and_bootstrap_specs_are_explained(spec: dict[str, Any], message: str) -> None:
    from chromasnap.operator.crd import SpecError

    with pytest.raises(SpecError, match=message):
        cc_of(body(**spec))
