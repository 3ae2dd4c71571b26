"""ASGI plumbing the routes share: the scope/receive/send types, and reading a request's
headers, cookies, query string and body (bounded by the server's body limit)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from chromasnap.engine.errors import InvalidArgument, PayloadTooLarge

Headers = list[tuple[bytes, bytes]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case, as ASGI servers pass them)."""
    for k, v in scope["headers"]:
        if k == name:
            return bytes(v)
    return None


def cookie(scope: Scope, name: str) -> str | None:
    """The value of cookie ``name`` from the ``Cookie`` header, if set and non-empty."""
    raw = header(scope, b"cookie")
    if raw is None:
        return None
    prefix = name + "="
    for raw_part in raw.decode("latin-1").split(";"):
        part = raw_part.strip()
        if part.startswith(prefix):
            return part[len(prefix):] or None
    return None


def query_param(scope: Scope, name: str) -> str | None:
    """The first value of query-string parameter ``name``."""
    qs: bytes = scope.get("query_string", b"")
    if not qs:
        return None
    for k, v in parse_qsl(qs.decode("latin-1")):
        if k == name:
            return v
    return None


def payload_too_large(size: int, limit: int) -> PayloadTooLarge:
    """The error for a body of ``size`` bytes over ``limit``."""
    return PayloadTooLarge(
        f"request body of {size} bytes is over this server's limit of {limit} bytes "
        f"({limit / (1 << 20):g} MiB; Chroma's own server refuses bodies over 40 MiB too): "
        "send fewer records per request, e.g. split the batch in halves until each fits "
        "(chromadb sends each embedding as base64, about 5.4 bytes per dimension)"
    )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; ``PayloadTooLarge`` as soon as it (or its declared length)
    exceeds ``limit``, so an oversized upload is never buffered."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise payload_too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise InvalidArgument("client disconnected while sending the request body")
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise payload_too_large(size, limit)
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
