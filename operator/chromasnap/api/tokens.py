"""Read-your-writes tokens on the wire.

A write's response carries its token in the ``X-Chromasnap-Token`` header and
in a ``chromasnap_read_after`` cookie; a read carrying the token
(``X-Chromasnap-Read-After`` header, or the cookie, which
``chromadb.HttpClient``'s session sends back by itself) is answered only once
that write is visible. Tokens are opaque here: backends issue and check them.
"""

from __future__ import annotations

import re

from chromasnap.api.asgi import Headers, Scope, cookie, header
from chromasnap.engine.errors import Internal

TOKEN_HEADER = "X-Chromasnap-Token"  # noqa: S105 - a header name, not a secret
READ_AFTER_HEADER = "X-Chromasnap-Read-After"
TOKEN_COOKIE = "chromasnap_read_after"  # noqa: S105 - a cookie name
# RFC 6265 cookie-octet: what may go into a cookie value unquoted.
_COOKIE_SAFE = re.compile(r"^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,3000}$")


def read_after(scope: Scope) -> str | None:
    """The token a read must wait for: the header wins over the cookie."""
    v = header(scope, READ_AFTER_HEADER.lower().encode())
    if v is not None:
        return v.decode("latin-1").strip() or None
    return cookie(scope, TOKEN_COOKIE)


def token_headers(token: str, session_cookie: bool) -> Headers:
    """Response headers handing ``token`` to the client (header, and cookie if allowed)."""
    if "\r" in token or "\n" in token:
        raise Internal("write backend returned a token with a line break")
    headers: Headers = [(TOKEN_HEADER.lower().encode(), token.encode("latin-1"))]
    if session_cookie and _COOKIE_SAFE.match(token):
        headers.append((
            b"set-cookie",
            f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax".encode("latin-1"),
        ))
    return headers
