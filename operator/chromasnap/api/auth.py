"""Bearer-token auth the way Chroma's token provider does it: where tokens come from and
how a request's credentials are checked."""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from pathlib import Path

from chromasnap.api.asgi import Scope as AsgiScope
from chromasnap.api.asgi import header
from chromasnap.api.scopes import Scope, parse_token_line
from chromasnap.engine.errors import Forbidden, Unauthenticated

#: Header a writer's delta push carries its push token in (never a client's token).
PUSH_TOKEN_HEADER = "X-Chromasnap-Push-Token"  # noqa: S105 - a header name, not a secret
#: What an internal port answers besides pushes.
PROBE_ROUTES = frozenset(("healthz", "readyz", "metrics"))

# Routes probes and clients call before they have credentials (Chroma exempts the same).
AUTH_EXEMPT = frozenset(("heartbeat", "version", "pre_flight_checks", "healthcheck", "root",
                         "healthz", "readyz", "metrics"))


def load_auth_tokens(path: str | os.PathLike[str] | None = None,
                     env: str | None = "CHROMASNAP_AUTH_TOKEN") -> list[str]:
    """Accepted bearer tokens: one per line from ``path`` (a mounted Secret), else ``$env``.

    ``path`` may name several files separated by commas (a reader accepts the
    read and the write tokens). Blank lines and ``#`` comments are ignored; the
    env variable may hold several tokens separated by commas (for rotation). An
    empty result means auth is off.
    """
    scoped = load_scoped_tokens(path, env)
    if any(scope is not None for scope in scoped.values()):
        raise ValueError("tokens scoped to a tenant or database are for pools "
                         "(chromasnap pool); a collection's service takes plain tokens")
    return list(scoped)


def load_scoped_tokens(path: str | os.PathLike[str] | None = None,
                       env: str | None = "CHROMASNAP_AUTH_TOKEN") -> dict[str, Scope | None]:
    """Like ``load_auth_tokens``, with each token's scope (``scopes.parse_token_line``)."""
    raw: list[str] = []
    if path:
        for one in str(path).split(","):
            if one.strip():
                raw.extend(Path(one.strip()).read_text().splitlines())
    elif env and os.environ.get(env):
        raw = os.environ[env].split(",")
    return dict(_parse(raw, path))


def _parse(raw: list[str], path: str | os.PathLike[str] | None
           ) -> list[tuple[str, Scope | None]]:
    lines = [t.strip() for t in raw if t.strip() and not t.strip().startswith("#")]
    tokens = [parse_token_line(line) for line in lines]
    if path and not tokens:
        # An emptied Secret must not silently turn auth off.
        raise ValueError(f"token file(s) {path} hold no token: put one per line, or unset "
                         "the setting to run without authentication")
    for t, _ in tokens:
        # Chroma's token auth refuses tokens outside this set too.
        if not all(33 <= ord(ch) < 127 for ch in t):
            raise ValueError("auth tokens must be printable ASCII without spaces")
    return tokens


def authenticate_push(scope: AsgiScope, push_tokens: Sequence[bytes], client_auth: bool) -> None:
    """Check a writer's delta push: its ``X-Chromasnap-Push-Token`` must be the push token.

    Client tokens never authorise a push. Without a push token, pushes are
    accepted only where client auth is off too (the reader still confirms every
    pushed delta in the bucket, so a push can never add what is not durable).
    """
    if not push_tokens:
        if client_auth:
            raise Forbidden(
                "delta pushes need the push token, which this reader does not have: set "
                "CHROMASNAP_PUSH_TOKEN_FILE on writers and readers (spec.auth does it)"
            )
        return
    token = header(scope, PUSH_TOKEN_HEADER.lower().encode())
    if token is None:
        raise Unauthenticated(f"delta pushes must carry the {PUSH_TOKEN_HEADER} header")
    if not _matches(token.strip(), push_tokens):
        raise Forbidden("Forbidden")


def _matches(token: bytes, tokens: Sequence[bytes]) -> bool:
    # Compare against every token so the time taken does not reveal which matched.
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(t, token)
    return ok


def authenticate(scope: AsgiScope, tokens: Sequence[bytes]) -> bytes:
    """The request's token; ``Unauthenticated`` (no credentials) or ``Forbidden`` (wrong
    ones) unless its ``Authorization: Bearer`` or ``X-Chroma-Token`` is one of ``tokens``."""
    token: bytes | None = None
    auth = header(scope, b"authorization")
    if auth is not None:
        if not auth.startswith(b"Bearer "):
            raise Forbidden("Bearer not found in Authorization header")
        token = auth[7:].strip()
    else:
        token = header(scope, b"x-chroma-token")
        if token is not None:
            token = token.strip()
    if token is None:
        raise Unauthenticated(
            "missing credentials: send 'Authorization: Bearer <token>' or 'X-Chroma-Token' "
            "(chromadb: chroma_client_auth_provider='chromadb.auth.token_authn."
            "TokenAuthClientProvider', chroma_client_auth_credentials=<token>)"
        )
    if not _matches(token, tokens):
        raise Forbidden("Forbidden")
    return token
