"""Fixtures of the spec-builder tests (no servers: these check the manifests themselves;
that the API server accepts them and the pods do their jobs is for the cluster tests)."""

from __future__ import annotations

from typing import Any

import pytest
from specsupport import body, cc_of

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.children import desired_children


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(default_image="registry.example/chromasnap:1.2.3")


@pytest.fixture
def cc() -> ChromaCollection:
    return cc_of(body())


@pytest.fixture
def children(cc: ChromaCollection, settings: OperatorSettings) -> list[dict[str, Any]]:
    return desired_children(cc, settings)
