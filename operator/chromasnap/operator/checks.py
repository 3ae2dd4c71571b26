"""What the schema cannot check, checked before anything is applied.

A spec the operator cannot act on becomes a :class:`Problem`: ``Ready=False``
with a reason from :data:`SPEC_PROBLEM_REASONS` and a message that says what to
fix, and nothing is applied. Also here: whether purging a prefix would reach
another collection's data.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chromasnap.operator.crd import ChromaCollection, SpecError
from chromasnap.operator.schedule import CRON_HELP, validate_schedule

# Reasons for a spec the operator will not act on (Ready=False, nothing applied).
REASON_INVALID_SPEC = "InvalidSpec"
REASON_INVALID_SCHEDULE = "InvalidSchedule"
REASON_SECRET_NOT_FOUND = "CredentialsSecretNotFound"  # noqa: S105 - a reason, not a secret
REASON_SECRET_KEY_MISSING = "CredentialsSecretKeyMissing"  # noqa: S105
REASON_AUTH_SECRET_NOT_FOUND = "AuthSecretNotFound"  # noqa: S105
REASON_AUTH_SECRET_KEY_MISSING = "AuthSecretKeyMissing"  # noqa: S105
REASON_APPLY_REJECTED = "ApplyRejected"
#: Problems with a referenced Secret: Secrets are not watched, so these are re-checked.
SECRET_PROBLEM_REASONS = frozenset(
    {
        REASON_SECRET_NOT_FOUND,
        REASON_SECRET_KEY_MISSING,
        REASON_AUTH_SECRET_NOT_FOUND,
        REASON_AUTH_SECRET_KEY_MISSING,
    }
)
SPEC_PROBLEM_REASONS = frozenset(
    {
        REASON_INVALID_SPEC,
        REASON_INVALID_SCHEDULE,
        REASON_APPLY_REJECTED,
        *SECRET_PROBLEM_REASONS,
    }
)


@dataclass(frozen=True)
class Problem:
    """Why the operator will not (or could not) apply a collection's spec."""

    reason: str
    message: str


def check_spec(cc: ChromaCollection) -> Problem | None:
    """What the schema cannot reject but Kubernetes would, found before anything is applied."""
    try:
        validate_schedule(cc.spec.compactor.schedule)
    except ValueError as e:
        return Problem(
            REASON_INVALID_SCHEDULE,
            f"spec.compactor.schedule {cc.spec.compactor.schedule!r}: {e}; {CRON_HELP}",
        )
    return None


def spec_problem(err: SpecError) -> Problem:
    """A ``SpecError`` from parsing, as a condition."""
    return Problem(REASON_INVALID_SPEC, f"{err}; fix the ChromaCollection's spec")


def secret_problem(
    cc: ChromaCollection, secret: Mapping[str, Any] | None
) -> Problem | None:
    """Check the credentials Secret the spec names (``None``: it does not exist).

    Only key names are looked at; values are never read into messages.
    """
    ref = cc.spec.storage.credentials_secret_ref
    if ref is None:
        return None
    where = f"Secret {ref.name!r} in namespace {cc.namespace!r}"
    wanted = (ref.access_key_id_key, ref.secret_access_key_key)
    if secret is None:
        return Problem(
            REASON_SECRET_NOT_FOUND,
            f"{where} (spec.storage.credentialsSecretRef.name) does not exist: create it with "
            f"keys {wanted[0]} and {wanted[1]}, or point credentialsSecretRef at the right "
            "Secret (remove it to use workload identity)",
        )
    present = set((secret.get("data") or {}).keys()) | set(
        (secret.get("stringData") or {}).keys()
    )
    missing = [k for k in wanted if k not in present]
    if missing:
        return Problem(
            REASON_SECRET_KEY_MISSING,
            f"{where} has no key {', '.join(missing)}: add it, or set "
            "spec.storage.credentialsSecretRef.accessKeyIdKey/secretAccessKeyKey to the keys "
            f"it has ({', '.join(sorted(present)) or 'none'})",
        )
    return None


def _blank(secret: Mapping[str, Any], key: str) -> bool:
    """Whether ``key`` holds nothing but whitespace (no token). The value is never kept."""
    data = secret.get("data") or {}
    if key in data:
        try:
            return not base64.b64decode(str(data[key] or "")).strip()
        except (binascii.Error, ValueError):
            return False  # not ours to judge; the pods will complain
    return not str((secret.get("stringData") or {}).get(key) or "").strip()


def auth_secret_problem(
    cc: ChromaCollection, secret: Mapping[str, Any] | None
) -> Problem | None:
    """Check the token Secret of ``spec.auth`` (``None``: it does not exist).

    A missing or empty key is a problem: pods would not start (a missing key) or would
    have no token to accept. Messages name keys, never values.
    """
    auth = cc.spec.auth
    if auth is None:
        return None
    read, write, push = auth.key_names()
    where = f"Secret {auth.secret_ref.name!r} in namespace {cc.namespace!r}"
    create = (
        f"kubectl -n {cc.namespace} create secret generic {auth.secret_ref.name} "
        f"--from-file={read}=read-tokens.txt --from-file={write}=write-tokens.txt "
        f"--from-file={push}=push-token.txt"
    )
    if secret is None:
        return Problem(
            REASON_AUTH_SECRET_NOT_FOUND,
            f"{where} (spec.auth.secretRef.name) does not exist: create it with keys {read} "
            f"(read tokens, one per line), {write} (write tokens) and {push} (one token for "
            f"writer-to-reader pushes, never given to clients), e.g. `{create}`; or point "
            "spec.auth.secretRef at the right Secret. Nothing is applied until then",
        )
    present = set((secret.get("data") or {}).keys()) | set(
        (secret.get("stringData") or {}).keys()
    )
    missing = [k for k in (read, write, push) if k not in present]
    empty = [k for k in (read, write, push) if k in present and _blank(secret, k)]
    if missing or empty:
        what = []
        if missing:
            what.append(f"has no key {', '.join(missing)}")
        if empty:
            what.append(f"has nothing but whitespace in {', '.join(empty)}")
        return Problem(
            REASON_AUTH_SECRET_KEY_MISSING,
            f"{where} {' and '.join(what)}: it needs tokens (one per line) in {read}, {write} "
            f"and {push}; add them, or set spec.auth.readTokensKey/writeTokensKey/pushTokenKey "
            f"to the keys it has ({', '.join(sorted(present)) or 'none'}). Nothing is applied "
            "until then",
        )
    return None


def prefixes_overlap(a: str, b: str) -> bool:
    """Whether deleting everything under prefix ``a`` would delete something under ``b``."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
