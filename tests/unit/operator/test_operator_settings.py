"""Unit tests of :mod:`chromasnap.operator.settings`: what the chart's env sets."""

from __future__ import annotations

import pytest

from chromasnap.operator.settings import OperatorSettings


def test_operator_settings_come_from_the_charts_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMASNAP_DEFAULT_IMAGE", "reg/chromasnap:7")
    monkeypatch.setenv("CHROMASNAP_DEFAULT_IMAGE_PULL_POLICY", "IfNotPresent")
    monkeypatch.setenv("CHROMASNAP_CLUSTER_DOMAIN", "cluster.local")
    monkeypatch.setenv("CHROMASNAP_LOG_LEVEL", "DEBUG")
    s = OperatorSettings()
    assert s.default_image == "reg/chromasnap:7"
    assert s.default_image_pull_policy is not None
    assert s.default_image_pull_policy.value == "IfNotPresent"
    assert s.cluster_domain == "cluster.local"
    assert s.log_level == "DEBUG"
