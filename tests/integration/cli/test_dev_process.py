"""``chromasnap dev`` as a developer runs it, driven by the real ``chromadb.HttpClient``.

Issue #17: ``dev`` was always cosine, so an application written against it
and relying on Chroma's default space (l2) got other scores and thresholds
than from Chroma. It now defaults to l2, takes ``--space``, and keeps the space
of a collection its directory already holds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from chromasnap.cli.localstack import LocalStack, Proc, free_port

DIM = 4
N = 40


@contextmanager
def dev(workdir: Path, *flags: str) -> Iterator[Proc]:
    """``chromasnap dev`` in the foreground of a subprocess, until its reader is ready."""
    port = free_port()
    log = workdir / f"dev-{port}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chromasnap", "dev", "--dir", str(workdir / "dev"),
             "--port", str(port), "--dimension", str(DIM), *flags],
            stdout=fh, stderr=subprocess.STDOUT)
    p = Proc("dev", port, proc, log)
    try:
        LocalStack({}, workdir).wait(p, "/readyz", timeout=120)
        yield p
    finally:
        proc.send_signal(signal.SIGTERM)  # dev flushes its collections' writes, then exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client(port: int) -> chromadb.ClientAPI:
    return chromadb.HttpClient(host="127.0.0.1", port=port,
                               settings=Settings(anonymized_telemetry=False))


def records() -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(17)
    # Unnormalised vectors: l2, cosine and ip rank and score them differently.
    vectors = (rng.standard_normal((N, DIM)) * rng.uniform(0.1, 5, (N, 1))).astype(np.float32)
    queries = rng.standard_normal((3, DIM)).astype(np.float32)
    return [f"r{i}" for i in range(N)], vectors, queries


@pytest.mark.parametrize(("flags", "space"), [((), "l2"), (("--space", "ip"), "ip")],
                         ids=["default", "ip"])
def test_dev_scores_like_chroma(tmp_path: Path, flags: tuple[str, ...], space: str) -> None:
    """By default as Chroma without a space (l2); with ``--space`` as Chroma with it."""
    ids, vectors, queries = records()
    reference = chromadb.PersistentClient(str(tmp_path / "reference"),
                                          settings=Settings(anonymized_telemetry=False))
    # What an application gets from Chroma when it names the space, or none.
    configuration = {"hnsw": {"space": space}} if flags else None
    want_col = reference.create_collection("docs", configuration=configuration,  # type: ignore[arg-type]
                                           embedding_function=None)
    assert want_col.configuration_json["hnsw"]["space"] == space
    want_col.add(ids=ids, embeddings=vectors)
    want = want_col.query(query_embeddings=queries, n_results=5)
    with dev(tmp_path, *flags) as d:
        col = client(d.port).get_collection("docs", embedding_function=None)
        assert col.configuration_json["hnsw"]["space"] == space
        col.add(ids=ids, embeddings=vectors)  # forwarded to the writer; the cookie reads it
        got = col.query(query_embeddings=queries, n_results=5)
    assert f"space {space})" in d.log.read_text()
    assert got["ids"] == want["ids"]
    np.testing.assert_allclose(got["distances"], want["distances"], rtol=1e-5, atol=1e-5)


def test_dev_keeps_the_space_of_an_existing_collection(tmp_path: Path) -> None:
    with dev(tmp_path, "--space", "cosine") as d:
        first = client(d.port).get_collection("docs", embedding_function=None)
        assert first.configuration_json["hnsw"]["space"] == "cosine"
    # Restarted without --space (the default is l2 now): still the cosine collection.
    with dev(tmp_path) as d:
        again = client(d.port).get_collection("docs", embedding_function=None)
        assert (again.id, again.configuration_json["hnsw"]["space"]) == (first.id, "cosine")
        # An application asking for l2 gets the existing collection, as from Chroma, and
        # the log says what it ignored.
        asked = client(d.port).get_or_create_collection(
            "docs", metadata={"hnsw:space": "l2"}, embedding_function=None)
        assert (asked.id, asked.configuration_json["hnsw"]["space"]) == (first.id, "cosine")
    out = d.log.read_text()
    assert "metadata hnsw:space 'l2' (the collection: 'cosine')" in out
    assert "space cosine)" in out
    # Asking for another space is an error that says why, not a silent relabelling.
    refused = subprocess.run(
        [sys.executable, "-m", "chromasnap", "dev", "--dir", str(tmp_path / "dev"),
         "--port", str(free_port()), "--dimension", str(DIM), "--space", "l2"],
        capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1
    assert "created with space 'cosine', not 'l2'" in refused.stderr
