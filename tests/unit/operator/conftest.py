"""Fixtures of the operator's unit tests of pure logic."""

from __future__ import annotations

import pytest
from opsupport import body

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings


@pytest.fixture
def cc() -> ChromaCollection:
    return ChromaCollection.from_body(body())


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(default_image="registry.example/chromasnap:1.0.0")
