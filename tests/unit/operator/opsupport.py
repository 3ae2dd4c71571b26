"""Helpers for the operator's unit tests of pure logic: a ChromaCollection body.
(Fixtures are in ``conftest.py``; the spec builders' tests have their own, in ``specs/``.)"""

from __future__ import annotations

from typing import Any

NS = "team-a"
UID = "0b5c3a52-0d7e-4c1b-9a57-6c1f1f0e2a10"
SECRET_VALUE = "s3cr3t/value-that-must-not-leak"  # noqa: S105 - a decoy


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "collection": {"name": "docs", "dimension": 8},
        "storage": {"bucket": "vectors", "prefix": "collections/docs",
                    "credentialsSecretRef": {"name": "s3"}},
    }
    base.update(spec)
    return {"apiVersion": "chromasnap.dev/v1alpha1", "kind": "ChromaCollection",
            "metadata": {"name": "docs", "namespace": NS, "uid": UID, "generation": 3},
            "spec": base}
