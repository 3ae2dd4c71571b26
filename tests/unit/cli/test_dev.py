"""Which space ``chromasnap dev`` serves (issue #17): Chroma's default unless told or
unless the bucket already holds a collection, which keeps its own."""

from __future__ import annotations

import pytest

from chromasnap.cli.dev import SpaceConflict, resolve_space
from chromasnap.cli.main import build_parser
from chromasnap.config import Space


def test_a_new_collection_gets_chromas_default_or_the_asked_space() -> None:
    assert resolve_space(None, None) is Space.L2
    assert resolve_space(Space.COSINE, None) is Space.COSINE
    assert resolve_space(Space.IP, None) is Space.IP


def test_an_existing_collection_keeps_its_space() -> None:
    assert resolve_space(None, Space.COSINE) is Space.COSINE
    assert resolve_space(Space.COSINE, Space.COSINE) is Space.COSINE
    with pytest.raises(SpaceConflict, match="created with space 'cosine', not 'l2'"):
        resolve_space(Space.L2, Space.COSINE)


def test_space_flag() -> None:
    p = build_parser()
    assert p.parse_args(["dev"]).space is None
    assert p.parse_args(["dev", "--space", "ip"]).space == "ip"
    with pytest.raises(SystemExit):
        p.parse_args(["dev", "--space", "dot"])
