"""The chart's alerts and dashboard, checked with the real tools.

- ``promtool check rules`` on the rule file rendered by the real helm;
- ``promtool test rules`` (alerts.test.yaml): every alert firing and not firing;
- every series an alert or a dashboard panel reads is one chromasnap exports;
- every alert links its section of docs/runbooks.md and is listed in observability.md;
- the PrometheusRule and the dashboard ConfigMap are off by default and render as the
  Prometheus Operator and Grafana's sidecar expect when on.

A real Prometheus evaluating all of it against live processes: test_prometheus.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from obssupport import (
    HERE,
    OBSERVABILITY,
    RUNBOOKS,
    alerts,
    binary,
    dashboard,
    dashboard_queries,
    helm_template,
    known_series,
    rule_groups,
    series_in,
    write_rule_file,
)

ON = "prometheusRule.enabled=true"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return helm_template(tmp_path_factory.mktemp("helm"), ON)


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary("promtool")), *args], capture_output=True, text=True,
                          check=False, timeout=300, cwd=cwd)


def test_rule_file_passes_promtool_check_rules(rendered: list[dict[str, Any]],
                                               tmp_path: Path) -> None:
    rules = write_rule_file(rendered, tmp_path / "chromasnap-rules.yaml")
    proc = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 14 rules found" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    # and lint-clean (promtool's duplicate-rule check)
    proc = promtool("check", "rules", "--lint=duplicate-rules", "--lint-fatal", str(rules),
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests(
        rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    write_rule_file(rendered, tmp_path / "chromasnap-rules.yaml")
    tests = shutil.copy(HERE / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    proc = promtool("test", "rules", str(tests), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr

    # Each alert has a case where it fires and one where it does not.
    doc = yaml.safe_load((HERE / "alerts.test.yaml").read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in doc["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in alerts(rule_groups(rendered))}
    assert firing == names, names ^ firing
    assert quiet == names, names ^ quiet


def test_a_broken_expectation_fails_promtool(rendered: list[dict[str, Any]],
                                             tmp_path: Path) -> None:
    """The unit tests are not vacuous: expecting an alert where none fires fails."""
    write_rule_file(rendered, tmp_path / "chromasnap-rules.yaml")
    doc = yaml.safe_load((HERE / "alerts.test.yaml").read_text())
    case = doc["tests"][0]["alert_rule_test"][0]
    assert case["exp_alerts"] == []
    case["exp_alerts"] = [{"exp_labels": {"severity": "warning", "namespace": "search",
                                          "collection": "docs"}}]
    (tmp_path / "broken.test.yaml").write_text(yaml.safe_dump(doc))
    proc = promtool("test", "rules", "broken.test.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "ChromasnapCompactionFailing" in proc.stdout + proc.stderr


def test_alerts_read_only_series_chromasnap_exports(rendered: list[dict[str, Any]]) -> None:
    known = known_series()
    for a in alerts(rule_groups(rendered)):
        used = series_in(a["expr"])
        assert used, a["alert"]
        assert used <= known, (a["alert"], used - known)


def test_dashboard_reads_only_series_chromasnap_exports() -> None:
    known = known_series()
    queries = dashboard_queries(dashboard())
    assert len(queries) >= 30
    for title, expr in queries:
        used = series_in(expr)
        assert used and used <= known, (title, expr, used - known)


def test_every_alert_has_a_runbook_and_is_documented(rendered: list[dict[str, Any]]) -> None:
    headings = {m.lower() for m in re.findall(r"^## (\S+)$", RUNBOOKS.read_text(), re.M)}
    listed = OBSERVABILITY.read_text()
    values = yaml.safe_load((HERE.parents[2] / "charts/chromasnap/values.yaml").read_text())
    base = values["prometheusRule"]["runbookUrl"]
    for a in alerts(rule_groups(rendered)):
        name = a["alert"]
        url = a["annotations"]["runbook_url"]
        assert url == f"{base}#{name.lower()}", url
        assert name.lower() in headings, f"docs/runbooks.md has no section {name}"
        assert f"[{name}](runbooks.md#{name.lower()})" in listed, name
        assert a["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= set(a["annotations"])
    # and no runbook for an alert that does not exist
    assert headings == {a["alert"].lower() for a in alerts(rule_groups(rendered))}


def test_the_four_design_metrics_are_named_in_the_docs() -> None:
    text = OBSERVABILITY.read_text()
    for design, series in (
        ("lock acquisition failures", "chromasnap_collection_lock_acquisition_failures_total"),
        ("delta queue depth", "chromasnap_collection_pending_deltas"),
        ("compaction duration", "chromasnap_collection_last_compaction_duration_seconds"),
        ("snapshot size", "chromasnap_collection_snapshot_bytes"),
    ):
        row = next((line for line in text.splitlines() if line.startswith(f"| {design}")), "")
        assert f"`{series}`" in row, design
    for series in known_series():
        if series.startswith("chromasnap_collection_"):
            base = re.sub(r"_(bucket|sum|count)$", "", series)
            assert base in text, f"{series} is not documented in docs/observability.md"


def test_pool_alerts_and_panels_read_bounded_pool_series(tmp_path: Path) -> None:
    """Pool alerts and panels read only the pool pods' own series (component="pool"),
    which have no per-collection label: the same series at any number of collections."""
    from prometheus_client import REGISTRY

    import chromasnap.pool.metrics  # noqa: F401 - register them

    pool_series = {s.name for fam in REGISTRY.collect() if fam.name.startswith(
        "chromasnap_pool_") for s in fam.samples}
    assert "chromasnap_pool_pending_collections" in pool_series
    for fam in REGISTRY.collect():
        if fam.name.startswith("chromasnap_pool_"):
            assert all(not s.labels for s in fam.samples), fam.name
    docs = helm_template(tmp_path, ON, "prometheusRule.poolUnloadsPerSecond=2",
                         "prometheusRule.poolPendingCollectionsThreshold=7",
                         "prometheusRule.poolCompactionFailingFor=1h")
    pools = next(g for g in rule_groups(docs) if g["name"] == "chromasnap.pools")["rules"]
    assert {a["alert"] for a in pools} == {"ChromasnapPoolCompactionFailing",
                                            "ChromasnapPoolCacheThrashing",
                                            "ChromasnapPoolPendingGrowing"}
    by_name = {a["alert"]: a for a in pools}
    assert by_name["ChromasnapPoolCompactionFailing"]["for"] == "1h"
    assert by_name["ChromasnapPoolCacheThrashing"]["expr"].rstrip().endswith("[10m])) > 2")
    assert by_name["ChromasnapPoolPendingGrowing"]["expr"].splitlines()[0].endswith("> 7")
    for a in pools:
        used = series_in(a["expr"])
        assert used and all(n.startswith("chromasnap_pool_") for n in used), a["alert"]
        assert 'component="pool"' in a["expr"] and "by (namespace, collection)" in a["expr"]
    panels = [(t, e) for t, e in dashboard_queries(dashboard()) if "chromasnap_pool_" in e]
    read = set().union(*(series_in(e) for _, e in panels))
    assert read == {"chromasnap_pool_loaded_collections", "chromasnap_pool_writers",
                    "chromasnap_pool_loads_total", "chromasnap_pool_unloads_total",
                    "chromasnap_pool_compaction_failing_collections",
                    "chromasnap_pool_pending_collections", "chromasnap_pool_batches_total",
                    "chromasnap_pool_batch_deltas_total"}
    assert all('component="pool"' in e for _, e in panels)


def test_off_by_default_and_shaped_for_their_consumers(tmp_path: Path) -> None:
    kinds = [d["kind"] for d in helm_template(tmp_path)]
    assert "PrometheusRule" not in kinds and "ConfigMap" not in kinds
    assert "ServiceMonitor" not in kinds and "Service" not in kinds

    docs = helm_template(tmp_path, ON, "grafanaDashboard.enabled=true",
                         "grafanaDashboard.namespace=monitoring",
                         "grafanaDashboard.folder=Search",
                         "serviceMonitor.enabled=true",
                         "prometheusRule.labels.release=kube-prometheus-stack",
                         "prometheusRule.additionalAlertLabels.team=search",
                         "prometheusRule.leaseContentionPerHour=5")
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    lease = next(a for a in alerts(rule["spec"]["groups"]) if a["alert"] ==
                 "ChromasnapLeaseContention")
    assert lease["expr"].rstrip().endswith(">= 5")
    assert all(a["labels"]["team"] == "search" for a in alerts(rule["spec"]["groups"]))

    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Search"}
    assert json.loads(cm["data"]["chromasnap.json"]) == dashboard()

    # the operator's metrics: a port on its pod, a Service and a ServiceMonitor that keeps
    # the collections' own namespace label
    dep = next(d for d in docs if d["kind"] == "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CHROMASNAP_OPERATOR_METRICS_PORT"] == "8081"
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    op = monitors["chromasnap-operator"]["spec"]
    assert op["endpoints"][0]["honorLabels"] is True and op["endpoints"][0]["port"] == "metrics"
    svc = next(d for d in docs if d["kind"] == "Service")
    assert svc["spec"]["selector"] == op["selector"]["matchLabels"]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"][
        "labels"].items()
    workloads = monitors["chromasnap-workloads"]["spec"]["endpoints"][0]["relabelings"]
    assert {r["targetLabel"] for r in workloads} == {"collection", "component"}

    off = helm_template(tmp_path, "metrics.enabled=false", "serviceMonitor.enabled=true")
    dep = next(d for d in off if d["kind"] == "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert {e["name"]: e.get("value") for e in container["env"]}[
        "CHROMASNAP_OPERATOR_METRICS_PORT"] == "0"
    assert [d["metadata"]["name"] for d in off if d["kind"] == "ServiceMonitor"] == [
        "chromasnap-workloads"]


def test_values_schema_checks_the_new_values(tmp_path: Path) -> None:
    helm = str(binary("helm"))
    from obssupport import CHART

    for bad, field in (("prometheusRule.runbookUrl=docs/runbooks.md", "runbookUrl"),
                       ("prometheusRule.compactionFailingFor=soon", "compactionFailingFor"),
                       ("metrics.port=0", "port"),
                       ("prometheusRule.poolCompactionFailingFor=soon",
                        "poolCompactionFailingFor"),
                       ("prometheusRule.poolUnloadsPerSecond=0", "poolUnloadsPerSecond"),
                       ("prometheusRule.poolPendingCollectionsThreshold=-1",
                        "poolPendingCollectionsThreshold"),
                       ("grafanaDashboard.enabled=yes", "enabled")):
        proc = subprocess.run([helm, "template", "x", str(CHART), "--set", bad],
                              capture_output=True, text=True, check=False, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        assert proc.returncode != 0, bad
        assert field in proc.stderr, (bad, proc.stderr)
