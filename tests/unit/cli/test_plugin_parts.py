"""``kubectl chromasnap``'s pure parts: restore manifests, reader metrics, redaction,
error messages and the argument parser. The commands themselves run against a real
API server in ``tests/integration/cli/test_kubectl_plugin.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from chromasnap.cli.plugin import bucket, status
from chromasnap.cli.plugin.compact import job_name
from chromasnap.cli.plugin.kube import Kube, NotFound, PluginError, _resource_of
from chromasnap.cli.plugin.main import build_parser
from chromasnap.cli.plugin.report import REDACTED, redact, scrub
from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.jobs import compaction_job
from chromasnap.reader import metrics

UID = "0b5c3a52-0d7e-4c1b-9a57-6c1f1f0e2a10"


def source() -> dict[str, Any]:
    return {
        "apiVersion": "chromasnap.dev/v1alpha1", "kind": "ChromaCollection",
        "metadata": {"name": "docs", "namespace": "search", "uid": UID, "generation": 4,
                     "resourceVersion": "991"},
        "spec": {"collection": {"name": "docs", "dimension": 8},
                 "storage": {"bucket": "vectors", "prefix": "prod/docs",
                             "endpoint": "http://minio.minio.svc:9000",
                             "credentialsSecretRef": {"name": "s3"}},
                 "reader": {"replicas": 3}},
        "status": {"snapshot": {"version": "0000000002-aa"}},
    }


def test_restore_manifest_copies_the_spec_into_a_new_prefix() -> None:
    m = bucket.restore_manifest(source(), "docs-restored", version="0000000002-aabbccdd")
    assert m["metadata"] == {"name": "docs-restored", "namespace": "search",
                             "labels": {"chromasnap.dev/restored-from": "docs"}}
    assert "status" not in m
    spec = m["spec"]
    assert spec["storage"]["prefix"] == "prod/docs-restored"
    assert spec["reader"] == {"replicas": 3}
    assert spec["bootstrap"] == {"from": {
        "bucket": "vectors", "prefix": "prod/docs", "endpoint": "http://minio.minio.svc:9000",
        "credentialsSecretRef": {"name": "s3"}, "version": "0000000002-aabbccdd"}}
    # the new collection is valid for the operator, bootstrap included
    parsed = ChromaCollection.from_body(m).spec
    assert parsed.storage.prefix == "prod/docs-restored"
    assert parsed.bootstrap is not None and parsed.bootstrap.from_.version == "0000000002-aabbccdd"
    # the source is only read
    assert source()["spec"]["storage"]["prefix"] == "prod/docs"


def test_restore_manifest_nested_storage_and_time() -> None:
    m = bucket.restore_manifest(source(), "old", at="2026-05-01T10:00:00Z",
                                prefix="restores/old", nested_storage=True)
    assert m["spec"]["storage"]["prefix"] == "restores/old"
    frm = m["spec"]["bootstrap"]["from"]
    assert frm["at"] == "2026-05-01T10:00:00Z" and "version" not in frm
    assert frm["storage"]["prefix"] == "prod/docs"


@pytest.mark.parametrize("prefix", ["prod/docs", "prod/docs/x", "prod"])
def test_restore_refuses_a_prefix_overlapping_the_source(prefix: str) -> None:
    with pytest.raises(PluginError, match="overlaps"):
        bucket.restore_manifest(source(), "new", prefix=prefix)


def test_reader_metrics_from_a_real_exposition() -> None:
    metrics.READER_SNAPSHOT_VERSION_SEQ.set(7)
    metrics.READER_TAIL_DELTAS.set(3)
    metrics.READER_REFRESH_FAILING.set(0)
    got = status.parse_reader_metrics(generate_latest().decode())
    assert got["snapshotSeq"] == 7 and got["tailDeltas"] == 3
    assert got["refreshFailing"] == 0 and "rejectedSnapshots" in got


def test_version_seq() -> None:
    assert status.version_seq("0000000007-1a2b3c4d") == 7
    assert status.version_seq(None) is None and status.version_seq("x") is None


def test_render_shows_each_reader_against_the_current_version() -> None:
    page = {"name": "docs", "namespace": "search", "generation": 2, "observedGeneration": 2,
            "bucketUrl": "s3://vectors/prod/docs", "conditions": [],
            "snapshot": {"version": "0000000007-aa", "seq": 7}, "pendingDeltas": 1,
            "writers": {}, "readers": {}, "lastCompaction": {}, "pods": [], "recentJobs": [],
            "readerPods": [
                {"name": "r1", "phase": "Running", "ready": True, "restarts": 0,
                 "snapshotSeq": 7.0, "behind": 0, "tailDeltas": 1.0},
                {"name": "r2", "phase": "Running", "ready": True, "restarts": 2,
                 "snapshotSeq": 6.0, "behind": 1},
                {"name": "r3", "phase": "Pending", "ready": False, "restarts": 0,
                 "metricsError": "not found"}]}
    text = status.render(page)
    assert "r1  Running, ready, 0 restarts; snapshot seq 7 (current), 1 tail deltas" in text
    assert "snapshot seq 6 (1 behind)" in text
    assert "r3  Pending, 0 restarts; loaded version unknown (not found)" in text


def test_compaction_job_name_matches_the_operator() -> None:
    cc = ChromaCollection.from_body(source())
    job = compaction_job(cc, OperatorSettings(default_image="x"), "0")
    assert job["metadata"]["name"] == "docs-compactor-0"
    from chromasnap.operator.schedule import compaction_run_id

    assert job_name("docs", UID, "v1") == f"docs-compactor-{compaction_run_id(UID, 'v1')}"


def test_redact_drops_managed_fields_and_secret_looking_values() -> None:
    pod = {"metadata": {"name": "p", "managedFields": [{"manager": "x"}]},
           "spec": {"containers": [{"env": [
               {"name": "CHROMASNAP_AUTH_TOKEN", "value": "tok"},
               {"name": "AWS_SECRET_ACCESS_KEY", "value": "sk"},
               {"name": "CHROMASNAP_AUTH_TOKEN_FILE", "value": "/var/run/x"},
               {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
                   "name": "s3", "key": "secretKey"}}},
               {"name": "CHROMASNAP_COLLECTION", "value": "docs"}]}]}}
    out = redact(pod)
    env = out["spec"]["containers"][0]["env"]
    assert "managedFields" not in out["metadata"]
    assert [e.get("value") for e in env] == [REDACTED, REDACTED, "/var/run/x", None, "docs"]
    assert env[3]["valueFrom"]["secretKeyRef"]["key"] == "secretKey"


def test_scrub_replaces_known_values_everywhere(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "log.txt").write_text("key=hunter22 and again hunter22\n")
    (tmp_path / "b.json").write_text(json.dumps({"x": "nothing"}))
    scrub(tmp_path, ["hunter22", ""])
    assert (tmp_path / "a" / "log.txt").read_text() == f"key={REDACTED} and again {REDACTED}\n"
    assert "nothing" in (tmp_path / "b.json").read_text()


def test_forbidden_and_not_found_say_what_to_do() -> None:
    kube = Kube(api=None, namespace="search", context="dev", server="https://k8s:6443")
    body = json.dumps({"kind": "Status", "reason": "Forbidden", "message":
                       'secrets "s3" is forbidden: User "bob" cannot get resource'}).encode()
    err = kube._failure("GET", "/api/v1/namespaces/search/secrets/s3", 403, body)
    assert 'User "bob" cannot get' in str(err)
    assert "`kubectl auth can-i get secrets -n search`" in str(err)
    err = kube._failure("GET", "/apis/chromasnap.dev/v1alpha1/namespaces/search/"
                        "chromacollections", 403, b"{}")
    assert "can-i list chromacollections.chromasnap.dev -n search" in str(err)
    err = kube._failure("PATCH", "/apis/chromasnap.dev/v1alpha1/namespaces/s/"
                        "chromacollections/docs", 401, b"")
    assert "log in again" in str(err)
    assert isinstance(kube._failure("GET", "/api/v1/namespaces/s/pods/p", 404, b""), NotFound)


def test_resource_names_for_rbac() -> None:
    assert _resource_of("/api/v1/namespaces/s/pods/p:8000/proxy/metrics") == (
        "pods/proxy", True)
    assert _resource_of("/api/v1/namespaces/s/pods/p/log") == ("pods/log", True)
    assert _resource_of("/apis/batch/v1/namespaces/s/jobs") == ("jobs.batch", False)


def test_connection_flags_work_before_and_after_the_command() -> None:
    p = build_parser()
    a = p.parse_args(["-n", "search", "--context", "dev", "status", "docs"])
    assert (a.namespace, a.context, a.name) == ("search", "dev", "docs")
    a = p.parse_args(["logs", "docs", "--role", "reader", "-n", "other"])
    assert (a.namespace, a.role, a.context) == ("other", "reader", None)
    with pytest.raises(SystemExit):
        p.parse_args(["export", "docs", "out", "--at", "t", "--version", "v"])


def test_at_support_follows_chromasnap_export() -> None:
    from chromasnap.cli.main import build_parser as chromasnap_parser

    help_text = chromasnap_parser().format_help()
    assert "export" in help_text
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        chromasnap_parser().parse_args(["export", "--help"])
    assert bucket.export_supports_at() == ("--at" in buf.getvalue())
