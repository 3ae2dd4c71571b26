"""Unit tests of :mod:`chromasnap.operator.specs.auth`: token files by Secret reference.

Each role mounts only the keys it needs, read-only, and gets file paths in env,
never a token; the compactor gets nothing; changing the Secret's name or keys
rolls exactly the pods that mount it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from specsupport import body, cc_of, pod_specs

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import auth, deployments, jobs
from chromasnap.operator.specs.children import desired_children

AUTH = {"secretRef": {"name": "docs-tokens"}}
# Stand-ins for token values: the operator never sees them, so no manifest may hold them.
TOKEN_DECOY = "tok-3f9a-must-never-appear"  # noqa: S105 - a decoy


@pytest.fixture
def secured() -> ChromaCollection:
    return cc_of(body(auth=AUTH))


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod["containers"]
    return c


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in _container(pod)["env"]}


def _volume(pod: dict[str, Any], name: str = "auth") -> dict[str, Any] | None:
    return next((v for v in pod["volumes"] if v["name"] == name), None)


def test_no_auth_means_no_volume_and_no_env(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    for component, pod in pod_specs(cc, settings):
        assert _volume(pod) is None, component
        assert all(m["name"] != "auth" for m in _container(pod)["volumeMounts"])
        env = _env(pod)
        assert "CHROMASNAP_AUTH_TOKEN_FILE" not in env and "CHROMASNAP_PUSH_TOKEN_FILE" not in env
        assert "CHROMASNAP_AUTH_TOKEN" not in env


def test_writers_mount_write_and_push(
    secured: ChromaCollection, settings: OperatorSettings
) -> None:
    pod = deployments.writer_deployment(secured, settings)["spec"]["template"]["spec"]
    assert _volume(pod) == {
        "name": "auth",
        "secret": {
            "secretName": "docs-tokens",
            "defaultMode": 0o440,
            "items": [{"key": "write", "path": "write"}, {"key": "push", "path": "push"}],
        },
    }
    assert {"name": "auth", "mountPath": "/var/run/chromasnap/auth", "readOnly": True} in (
        _container(pod)["volumeMounts"])
    env = _env(pod)
    assert env["CHROMASNAP_AUTH_TOKEN_FILE"] == {
        "name": "CHROMASNAP_AUTH_TOKEN_FILE", "value": "/var/run/chromasnap/auth/write"}
    assert env["CHROMASNAP_PUSH_TOKEN_FILE"] == {
        "name": "CHROMASNAP_PUSH_TOKEN_FILE", "value": "/var/run/chromasnap/auth/push"}


def test_readers_mount_read_write_and_push(
    secured: ChromaCollection, settings: OperatorSettings
) -> None:
    pod = deployments.reader_deployment(secured, settings)["spec"]["template"]["spec"]
    vol = _volume(pod)
    assert vol is not None
    assert vol["secret"]["items"] == [
        {"key": "read", "path": "read"},
        {"key": "write", "path": "write"},
        {"key": "push", "path": "push"},
    ]
    assert vol["secret"]["defaultMode"] == 0o440  # 288 in the JSON
    mounts = [m for m in _container(pod)["volumeMounts"] if m["name"] == "auth"]
    assert mounts == [{"name": "auth", "mountPath": "/var/run/chromasnap/auth", "readOnly": True}]
    env = _env(pod)
    # a comma-separated list of files: read and write tokens are both accepted
    assert env["CHROMASNAP_AUTH_TOKEN_FILE"]["value"] == (
        "/var/run/chromasnap/auth/read,/var/run/chromasnap/auth/write")
    assert env["CHROMASNAP_PUSH_TOKEN_FILE"]["value"] == "/var/run/chromasnap/auth/push"
    # the cache volume is still there, next to the tokens
    assert _volume(pod, "cache") is not None


def test_the_compactor_and_purge_get_nothing(
    secured: ChromaCollection, settings: OperatorSettings
) -> None:
    pods = [pod for component, pod in pod_specs(secured, settings) if component == "compactor"]
    pods.append(jobs.purge_job(secured, settings)["spec"]["template"]["spec"])
    for pod in pods:
        assert _volume(pod) is None
        assert all(m["name"] != "auth" for m in _container(pod)["volumeMounts"])
        names = {e["name"] for e in _container(pod)["env"]}
        assert not {"CHROMASNAP_AUTH_TOKEN_FILE", "CHROMASNAP_PUSH_TOKEN_FILE"} & names


def test_custom_key_names_select_the_items_but_not_the_paths(
    settings: OperatorSettings,
) -> None:
    cc = cc_of(body(auth={"secretRef": {"name": "t"}, "readTokensKey": "ro",
                          "writeTokensKey": "rw", "pushTokenKey": "internal.push"}))
    reader = deployments.reader_deployment(cc, settings)["spec"]["template"]["spec"]
    vol = _volume(reader)
    assert vol is not None
    assert vol["secret"]["items"] == [
        {"key": "ro", "path": "read"},
        {"key": "rw", "path": "write"},
        {"key": "internal.push", "path": "push"},
    ]
    # file names, hence the env, do not depend on the key names
    assert _env(reader)["CHROMASNAP_AUTH_TOKEN_FILE"]["value"] == (
        f"{auth.AUTH_DIR}/read,{auth.AUTH_DIR}/write")


def test_tokens_are_files_by_reference_never_values(
    secured: ChromaCollection, settings: OperatorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even a token in the operator's own environment goes nowhere.
    monkeypatch.setenv("CHROMASNAP_AUTH_TOKEN", TOKEN_DECOY)
    out = [*desired_children(secured, OperatorSettings()),
           jobs.compaction_job(secured, settings, "x")]
    dumped = json.dumps(out)
    assert TOKEN_DECOY not in dumped
    assert not [c for c in out if c["kind"] == "Secret"]
    for _, pod in pod_specs(secured, settings):
        for e in _container(pod)["env"]:
            if "TOKEN" in e["name"]:
                assert e["name"].endswith("_FILE") and e["value"].startswith(auth.AUTH_DIR)
        for v in pod["volumes"]:
            if "secret" in v:
                # only the role's keys, read-only for the runtime user's group at most
                assert v["secret"]["defaultMode"] & 0o137 == 0
                assert v["secret"]["items"]


def _templates(cc: ChromaCollection, s: OperatorSettings) -> dict[str, Any]:
    return {
        "writer": deployments.writer_deployment(cc, s)["spec"]["template"],
        "reader": deployments.reader_deployment(cc, s)["spec"]["template"],
        "compactor": jobs.compactor_cronjob(cc, s)["spec"]["jobTemplate"]["spec"]["template"],
    }


@pytest.mark.parametrize("change", [
    {"secretRef": {"name": "docs-tokens-v2"}},
    {"secretRef": {"name": "docs-tokens"}, "pushTokenKey": "push2"},
    None,  # auth turned off
])
def test_changing_the_secret_or_keys_rolls_writers_and_readers_only(
    change: dict[str, Any] | None, secured: ChromaCollection, settings: OperatorSettings,
) -> None:
    changed = cc_of(body(auth=change) if change is not None else body())
    before, after = _templates(secured, settings), _templates(changed, settings)
    assert before["writer"] != after["writer"]
    assert before["reader"] != after["reader"]
    assert before["compactor"] == after["compactor"]  # it holds no token


def test_turning_auth_on_changes_no_config_hash(
    cc: ChromaCollection, secured: ChromaCollection, settings: OperatorSettings
) -> None:
    # The tokens are per-component, inline: the shared ConfigMap stays the same.
    before, after = _templates(cc, settings), _templates(secured, settings)
    for component in ("writer", "reader", "compactor"):
        assert before[component]["metadata"] == after[component]["metadata"], component
