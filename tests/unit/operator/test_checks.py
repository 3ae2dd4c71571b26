"""Unit tests of :mod:`chromasnap.operator.checks`: what the schema cannot check."""

from __future__ import annotations

import base64

import pytest
from opsupport import SECRET_VALUE, body

from chromasnap.operator import checks
from chromasnap.operator.crd import ChromaCollection

# --- spec ---------------------------------------------------------------------------------


def test_check_spec_names_the_field_and_the_fix() -> None:
    cc = ChromaCollection.from_body(body(compactor={"schedule": "61 * * * *"}))
    problem = checks.check_spec(cc)
    assert problem is not None and problem.reason == "InvalidSchedule"
    assert problem.message.startswith("spec.compactor.schedule '61 * * * *':")
    assert "e.g. '*/5 * * * *'" in problem.message


# --- secrets ------------------------------------------------------------------------------


def test_missing_secret_says_what_to_create(cc: ChromaCollection) -> None:
    p = checks.secret_problem(cc, None)
    assert p is not None and p.reason == "CredentialsSecretNotFound"
    assert "Secret 's3' in namespace 'team-a'" in p.message
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in p.message


def test_missing_key_lists_key_names_never_values(cc: ChromaCollection) -> None:
    secret = {"data": {"AWS_ACCESS_KEY_ID": "aWQ=", "password": SECRET_VALUE}}
    p = checks.secret_problem(cc, secret)
    assert p is not None and p.reason == "CredentialsSecretKeyMissing"
    assert "no key AWS_SECRET_ACCESS_KEY" in p.message
    assert "(AWS_ACCESS_KEY_ID, password)" in p.message
    assert SECRET_VALUE not in p.message


def test_complete_secret_and_workload_identity_are_fine(cc: ChromaCollection) -> None:
    assert checks.secret_problem(cc, {"data": {"AWS_ACCESS_KEY_ID": "x",
                                                 "AWS_SECRET_ACCESS_KEY": "y"}}) is None
    no_ref = body()
    del no_ref["spec"]["storage"]["credentialsSecretRef"]
    assert checks.secret_problem(ChromaCollection.from_body(no_ref), None) is None


# --- auth token Secret -----------------------------------------------------------------------

AUTH = {"secretRef": {"name": "docs-tokens"}}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_no_auth_needs_no_token_secret(cc: ChromaCollection) -> None:
    assert checks.auth_secret_problem(cc, None) is None


def test_missing_token_secret_says_what_to_create() -> None:
    cc = ChromaCollection.from_body(body(auth=AUTH))
    p = checks.auth_secret_problem(cc, None)
    assert p is not None and p.reason == "AuthSecretNotFound"
    assert "Secret 'docs-tokens' in namespace 'team-a' (spec.auth.secretRef.name) does not " \
           "exist" in p.message
    assert "keys read (read tokens, one per line), write (write tokens) and push" in p.message
    assert "kubectl -n team-a create secret generic docs-tokens --from-file=read=" in p.message
    assert p.reason in checks.SPEC_PROBLEM_REASONS and p.reason in checks.SECRET_PROBLEM_REASONS


def test_missing_token_key_names_the_keys_never_values() -> None:
    cc = ChromaCollection.from_body(body(auth=AUTH | {"pushTokenKey": "pusher"}))
    secret = {"data": {"read": _b64(SECRET_VALUE), "write": _b64(SECRET_VALUE),
                       "push": _b64(SECRET_VALUE)}}
    p = checks.auth_secret_problem(cc, secret)
    assert p is not None and p.reason == "AuthSecretKeyMissing"
    assert "Secret 'docs-tokens' in namespace 'team-a' has no key pusher" in p.message
    assert "(push, read, write)" in p.message
    assert "spec.auth.readTokensKey/writeTokensKey/pushTokenKey" in p.message
    assert SECRET_VALUE not in p.message and _b64(SECRET_VALUE) not in p.message


def test_an_empty_token_key_is_a_problem_too() -> None:
    # A key with no token would leave nothing to accept: refuse it up front.
    cc = ChromaCollection.from_body(body(auth=AUTH))
    secret = {"data": {"read": _b64(SECRET_VALUE), "write": _b64(" \n\n"), "push": ""}}
    p = checks.auth_secret_problem(cc, secret)
    assert p is not None and p.reason == "AuthSecretKeyMissing"
    assert "has nothing but whitespace in write, push" in p.message
    assert SECRET_VALUE not in p.message


def test_complete_token_secret_is_fine() -> None:
    cc = ChromaCollection.from_body(body(auth=AUTH))
    data = {k: _b64(f"{SECRET_VALUE}-{k}\n") for k in ("read", "write", "push")}
    assert checks.auth_secret_problem(cc, {"data": data | {"extra": "eA=="}}) is None
    assert checks.auth_secret_problem(cc, {"stringData": {"read": "a", "write": "b",
                                                          "push": "c"}}) is None


# --- purge safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("c/docs", "c/docs", True), ("c", "c/docs", True), ("c/docs", "c", True),
    ("c/docs", "c/docs2", False), ("c/doc", "c/docs", False), ("a", "b", False),
])
def test_prefix_overlap(a: str, b: str, overlap: bool) -> None:
    assert checks.prefixes_overlap(a, b) is overlap
