"""Helpers for the spec-builder tests: a ChromaCollection body and ways to look into
the manifests built from it. (Fixtures are in ``conftest.py``.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import deployments, environment, jobs

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


def by_kind(children: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c for c in children if c["kind"] == kind]


def one(children: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [c for c in children if c["kind"] == kind and c["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(
    cc: ChromaCollection, settings: OperatorSettings
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(component, pod spec) of every pod the collection can run, on-demand Jobs included."""
    yield "writer", deployments.writer_deployment(cc, settings)["spec"]["template"]["spec"]
    yield "reader", deployments.reader_deployment(cc, settings)["spec"]["template"]["spec"]
    cron = jobs.compactor_cronjob(cc, settings)
    yield "compactor", cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    job = jobs.compaction_job(cc, settings, "abc123")
    yield "compactor", job["spec"]["template"]["spec"]


def container_env(
    cc: ChromaCollection, settings: OperatorSettings, component: str
) -> dict[str, str]:
    """The environment a pod of ``component`` would see (ConfigMap + plain env + downward API)."""
    pod = dict(pod_specs(cc, settings))[component]
    (container,) = pod["containers"]
    env = dict(environment.config_data(cc))
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e["valueFrom"]:
            env[e["name"]] = f"{component}-pod-0"
    return env
