"""Import an existing chromadb directory, export it back: the round trip is lossless."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import chromadb
import numpy as np
import pytest

from chromasnap.cli.importexport import ImportError_, export_snapshot, import_directory
from chromasnap.engine import reads
from chromasnap.storage import pointer
from chromasnap.storage.store import ObjectStore


def make_source(path: Path, n: int = 300) -> None:
    client = chromadb.PersistentClient(path=str(path))
    col = client.create_collection(
        "legacy",
        configuration={"hnsw": {"space": "cosine", "ef_construction": 64}},
        metadata={"team": "search"},
    )
    rng = np.random.default_rng(1)
    col.add(
        ids=[f"r{i}" for i in range(n)],
        embeddings=rng.standard_normal((n, 8)).tolist(),
        documents=[f"document {i}" for i in range(n)],
        metadatas=[{"i": i, "even": i % 2 == 0} for i in range(n)],
    )
    client.create_collection("other").add(ids=["x"], embeddings=[[0.0] * 3])
    client.close()  # type: ignore[attr-defined]


def read_plain(path: Path, name: str) -> tuple[dict[str, reads.Record], dict[str, object]]:
    client = chromadb.PersistentClient(path=str(path))
    col = client.get_collection(name)
    out = reads.read_all(col), {"metadata": col.metadata, "hnsw": col.configuration["hnsw"]}
    client.close()  # type: ignore[attr-defined]
    return out


def same(a: dict[str, reads.Record], b: dict[str, reads.Record]) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k].embedding, b[k].embedding) and a[k][1:] == b[k][1:] for k in a
    )


def test_import_then_export_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "chroma_db"
    make_source(src)
    want, want_conf = read_plain(src, "legacy")
    man = import_directory(src, "legacy", store)
    assert man.record_count == 300 and man.collection.settings.dimension == 8
    assert man.collection.settings.space.value == "cosine"
    assert man.collection.settings.hnsw_construction_ef == 64
    assert pointer.read(store).pointer.version == man.version  # type: ignore[union-attr]
    out = tmp_path / "restored"
    export_snapshot(store, out)
    got, got_conf = read_plain(out, "legacy")
    assert same(got, want)
    assert got_conf == want_conf
    # The snapshot holds only the imported collection.
    client = chromadb.PersistentClient(path=str(out))
    assert [c.name for c in client.list_collections()] == ["legacy"]
    client.close()  # type: ignore[attr-defined]


def test_import_refuses_bad_input(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "chroma_db"
    make_source(src, n=5)
    with pytest.raises(ImportError_, match="not a chromadb directory"):
        import_directory(tmp_path / "nothing", "legacy", store)
    with pytest.raises(ImportError_, match=r"it has: .*legacy"):
        import_directory(src, "missing", store)
    import_directory(src, "legacy", store)
    with pytest.raises(ImportError_, match="already holds a collection"):
        import_directory(src, "legacy", store)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ImportError_, match="not empty"):
        export_snapshot(store, tmp_path / "full")


def test_cli_import_export_status(tmp_path: Path) -> None:
    src = tmp_path / "chroma_db"
    make_source(src, n=20)
    url = (tmp_path / "bucket").as_uri()

    def cli(*args: str) -> str:
        p = subprocess.run(
            [sys.executable, "-m", "chromasnap", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        return p.stdout

    assert "imported 20 records" in cli("import", str(src), "--collection", "legacy", "--to", url)
    status = cli("status", url)
    assert "records:         20" in status and "pending deltas:  0" in status
    assert '"records": 20' in cli("status", url, "--json")
    assert "exported version" in cli("export", url, str(tmp_path / "out"))
    got, _ = read_plain(tmp_path / "out", "legacy")
    assert len(got) == 20
    bad = subprocess.run(
        [sys.executable, "-m", "chromasnap", "export", url, str(src)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert bad.returncode == 1 and "not empty" in bad.stderr
