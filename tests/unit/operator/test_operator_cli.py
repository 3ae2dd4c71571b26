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


@pytest.mark.parametrize(("env", "argv", "plural"), [
    ({}, [], "chromacollections"),
    ({"CHROMASNAP_STATUS_PLURAL": "chromadatabases"}, [], "chromadatabases"),  # a pool's Job
    ({}, ["--status-plural", "chromadatabases"], "chromadatabases"),
])
def test_purge_reports_to_the_kind_it_is_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              env: dict[str, str], argv: list[str],
                                              plural: str) -> None:
    from chromasnap.compactor import statusreport

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reported: list[tuple[str, str, int, str]] = []
    monkeypatch.setattr(statusreport, "report_purged", lambda resource, url, deleted, *,
                        plural: reported.append((resource, url, deleted, plural)))
    root = (tmp_path / "pool").as_uri()
    open_store(root).put("catalog/log/1.json", b"x")
    assert cli.main(["purge", root, "--yes", "--status-resource", "ns/team-a", *argv]) == 0
    assert reported == [("ns/team-a", root, 1, plural)]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["purge", "--status-plural", "pods"])
