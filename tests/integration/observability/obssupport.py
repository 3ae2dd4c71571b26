"""Helpers of the observability tests: the chart's rules and dashboard as the real helm
renders them, the real promtool and prometheus binaries, and the series chromasnap
exports (to check that every alert and panel asks for series that exist)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cluster  # hack/cluster.py
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "chromasnap"
DASHBOARD = CHART / "dashboards" / "chromasnap.json"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
OBSERVABILITY = ROOT / "docs" / "observability.md"
HERE = Path(__file__).resolve().parent
SERIES_RE = re.compile(r"\b(chromasnap_[a-z0-9_]+)\b")


#: Tools from Debian's packages (hack/system-packages.sh), not Go-built.
DEBIAN_TOOLS = {"prometheus": Path("/usr/bin/prometheus"), "promtool": Path("/usr/bin/promtool")}


def binary(name: str) -> Path:
    """A tool the tests run: helm built by hack/build-tools.sh, or promtool and
    prometheus from Debian's prometheus package."""
    if name in DEBIAN_TOOLS:
        path = DEBIAN_TOOLS[name]
        if not path.exists():
            pytest.fail(f"{name} not installed at {path}: run `hack/system-packages.sh` "
                        "(Debian's prometheus package)", pytrace=False)
        return path
    try:
        return cluster.tool(name)
    except cluster.ClusterError as e:
        pytest.fail(str(e), pytrace=False)


def helm_template(tmp: Path, *values: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``--set`` values; the rendered documents."""
    args = [str(binary("helm")), "template", "chromasnap", str(CHART),
            "--namespace", "chromasnap-system"]
    for v in values:
        args += ["--set", v]
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp / "helm-cache"),
           "HELM_CONFIG_HOME": str(tmp / "helm-config"), "HELM_DATA_HOME": str(tmp / "helm-data")}
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120, env=env)
    if proc.returncode != 0:
        pytest.fail(f"helm template failed:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def rule_groups(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups of the rendered PrometheusRule (what Prometheus loads from it)."""
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert len(rules) == 1, [d["kind"] for d in docs]
    groups: list[dict[str, Any]] = rules[0]["spec"]["groups"]
    return groups


def write_rule_file(docs: list[dict[str, Any]], path: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file."""
    path.write_text(yaml.safe_dump({"groups": rule_groups(docs)}, sort_keys=False))
    return path


def alerts(groups: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every alerting rule."""
    for g in groups:
        yield from (r for r in g["rules"] if "alert" in r)


def dashboard() -> dict[str, Any]:
    """The dashboard JSON the chart ships."""
    out: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return out


def dashboard_queries(dash: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((str(p["title"]), str(t["expr"])))
    return out


def substitute(expr: str, namespace: str, collection: str, rate_interval: str) -> str:
    """A dashboard query with Grafana's variables filled in, as Grafana sends it."""
    return (expr.replace("$__rate_interval", rate_interval)
            .replace("$namespace", namespace).replace("$collection", collection))


def series_in(expr: str) -> set[str]:
    """The chromasnap series names an expression reads."""
    return set(SERIES_RE.findall(expr))


def known_series() -> set[str]:
    """Every series name chromasnap exports: the operator's families and the data plane's
    (as stored by Prometheus: counters with ``_total``, histograms' ``_bucket``/``_sum``/
    ``_count``)."""
    from prometheus_client import REGISTRY

    import chromasnap.api.http_metrics
    import chromasnap.pool.metrics
    import chromasnap.reader.metrics
    import chromasnap.writer.metrics  # noqa: F401 - register the data plane's metrics
    from chromasnap.operator.statusmetrics import COUNTERS, GAUGES

    names: set[str] = set()

    def add(name: str, kind: str) -> None:
        if kind == "counter":
            names.add(name.removesuffix("_total") + "_total")
        elif kind == "histogram":
            names.update(f"{name}_{s}" for s in ("bucket", "sum", "count"))
        else:
            names.add(name)

    for fam in REGISTRY.collect():
        if fam.name.startswith("chromasnap_"):
            add(fam.name, fam.type)
    for f in (*GAUGES, *COUNTERS):
        add(f.name, f.kind)
    names.update({"chromasnap_operator_collections", "chromasnap_operator_build_info"})
    return names
