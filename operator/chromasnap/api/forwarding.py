"""Passing a request on to another chromasnap service and relaying its answer.

A reader forwards writes to the writer Service (readers never keep writes as
their own); a writer may forward reads to the reader Service. The answer —
status, body, token header and cookie — goes back to the client unchanged. A
header marks forwarded requests so a misconfigured pair cannot loop.
"""

from __future__ import annotations

from typing import Any

from chromasnap.api.asgi import Headers, Receive, Scope, header, read_body
from chromasnap.api.http_metrics import HTTP_FORWARDED
from chromasnap.api.responses import Response
from chromasnap.engine.errors import InvalidArgument, ReadTimeout, Unavailable

FORWARDED_HEADER = "X-Chromasnap-Forwarded"
_FORWARD_REQUEST_HEADERS = frozenset((
    b"content-type", b"authorization", b"x-chroma-token", b"cookie", b"user-agent",
    b"x-chromasnap-read-after",
))
_RELAY_RESPONSE_HEADERS = frozenset((
    "x-chromasnap-token", "set-cookie", "chroma-trace-id", "www-authenticate",
))


class Forwarder:
    """Forwards requests over one pooled ``httpx.AsyncClient``, created on first use."""

    def __init__(self, role: str, timeout: float, max_body_bytes: int) -> None:
        self.role = role
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self._client: Any = None

    async def aclose(self) -> None:
        """Close the HTTP client (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def forward(self, base: str, scope: Scope, receive: Receive) -> Response:
        """Send the request to the same path under ``base`` and relay the answer."""
        import httpx  # only servers that forward pay for importing it

        if header(scope, FORWARDED_HEADER.lower().encode()) is not None:
            raise Unavailable(
                f"forwarding loop: a request forwarded to this service would be forwarded "
                f"again to {base}; check the writer/reader service URLs"
            )
        body = await read_body(scope, receive, self.max_body_bytes)
        client = self._http_client()
        qs = scope.get("query_string", b"")
        # The path exactly as the client encoded it: the decoded one may hold characters
        # (NUL, spaces) that are no valid URL.
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        url = base + path + (f"?{qs.decode('latin-1')}" if qs else "")
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in _FORWARD_REQUEST_HEADERS
        }
        headers[FORWARDED_HEADER] = self.role
        try:
            upstream = await client.request(scope["method"], url, content=body, headers=headers)
        except httpx.InvalidURL as e:
            raise InvalidArgument(f"request path {path!r} is not a valid URL: {e}") from e
        except Exception as e:
            HTTP_FORWARDED.labels(self.role, base, "error").inc()
            if isinstance(e, httpx.TimeoutException):
                raise ReadTimeout(
                    f"{base} did not answer within {self.timeout:g}s; the write may or "
                    "may not have been applied: retry it (add and upsert are idempotent)"
                ) from e
            if isinstance(e, httpx.HTTPError):
                raise Unavailable(f"cannot reach {base}: {type(e).__name__}: {e}") from e
            raise
        HTTP_FORWARDED.labels(self.role, base, str(upstream.status_code)).inc()
        relay: Headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in upstream.headers.multi_items()
            if k.lower() in _RELAY_RESPONSE_HEADERS
        ]
        ctype = upstream.headers.get("content-type", "application/json").encode("latin-1")
        return Response(upstream.status_code, upstream.content, relay, ctype)

    def _http_client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=10.0),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64,
                                    keepalive_expiry=30.0),
            )
        return self._client
