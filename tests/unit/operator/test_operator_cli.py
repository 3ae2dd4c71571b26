"""Unit tests of the ``operator`` and ``purge`` command lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chromasnap.cli import main as cli
from chromasnap.storage.store import open_store


def test_operator_flags_are_what_the_chart_passes() -> None:
    p = cli.build_parser()
    a = p.parse_args(["operator", "--standalone", "--liveness=http://0.0.0.0:8080/healthz",
                      "--all-namespaces"])
    assert (a.standalone, a.all_namespaces, a.namespace) == (True, True, None)
    a = p.parse_args(["operator", "--namespace=a", "--namespace", "b"])
    assert a.namespace == ["a", "b"] and not a.standalone and a.liveness is None
    with pytest.raises(SystemExit):
        p.parse_args(["operator", "--all-namespaces", "--namespace=a"])


def test_purge_empties_a_root_and_needs_yes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = (tmp_path / "bucket" / "coll").as_uri()
    neighbour = (tmp_path / "bucket" / "coll2").as_uri()
    store = open_store(root)
    for key in ("pointer.json", "deltas/1-a.arrow", "snapshots/v1/manifest.json"):
        store.put(key, b"x")
    open_store(neighbour).put("pointer.json", b"keep")
    assert cli.main(["purge", root]) == 2
    assert "--yes" in capsys.readouterr().err
    assert cli.main(["purge", root, "--yes", "--status-resource", ""]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "url": root, "deleted": 3}
    assert list(store.list("")) == []
    assert [o.key for o in open_store(neighbour).list("")] == ["pointer.json"]
