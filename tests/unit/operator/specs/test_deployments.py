"""Unit tests of :mod:`chromasnap.operator.specs.deployments`: writers and readers."""

from __future__ import annotations

from typing import Any

from specsupport import body, by_kind, cc_of

from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import deployments


def test_rollouts_never_lower_capacity(children: list[dict[str, Any]]) -> None:
    for d in by_kind(children, "Deployment"):
        assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_zero_replicas_is_allowed(settings: OperatorSettings) -> None:
    cc = cc_of(body(writer={"replicas": 0}, reader={"replicas": 0}))
    assert deployments.writer_deployment(cc, settings)["spec"]["replicas"] == 0
    assert deployments.reader_deployment(cc, settings)["spec"]["replicas"] == 0
