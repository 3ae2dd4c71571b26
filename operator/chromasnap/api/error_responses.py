"""Errors to HTTP responses: Chroma's error body and status for every failure.

Expected failures are ``ChromasnapError``s and carry their status and Chroma
error name. Anything else is turned into one here: a chromadb error that says
the request was bad (a check chromadb makes that ours missed) keeps its 4xx
status and name, so the client sees what ``chroma run`` would have said; the
rest is a 500 ``InternalError`` and is logged with its traceback.
"""

from __future__ import annotations

import logging
import sys

from chromasnap.api.asgi import Headers
from chromasnap.api.http_metrics import HTTP_ERRORS
from chromasnap.api.responses import Response, json_response
from chromasnap.engine.errors import ChromasnapError, Internal, InvalidArgument

log = logging.getLogger("chromasnap.httpapi")


class MethodNotAllowed(InvalidArgument):
    """A known route called with the wrong method: 405, ``InvalidArgumentError``."""

    status = 405


def method_not_allowed(method: str, what: str) -> MethodNotAllowed:
    """The error for ``method`` on route (or path) ``what``."""
    return MethodNotAllowed(f"method {method} is not allowed on {what}")


def as_chromasnap_error(exc: Exception) -> ChromasnapError:
    """The ``ChromasnapError`` to answer an unexpected exception with."""
    # Only look for chromadb's errors if chromadb is loaded: if it is not, exc is not one,
    # and importing it here would stall the event loop for a second.
    chroma_errors = sys.modules.get("chromadb.errors")
    if chroma_errors is not None and isinstance(exc, chroma_errors.ChromaError):
        status = int(exc.code())
        if 400 <= status < 500:
            err = ChromasnapError(str(exc) or exc.message())
            err.status, err.chroma_name = status, exc.name()
            return err
    return Internal(f"{type(exc).__name__}: {exc}")


def error_response(role: str, route: str, e: ChromasnapError) -> Response:
    """Chroma's ``{"error": NAME, "message": TEXT}`` body with ``e``'s status; counted."""
    HTTP_ERRORS.labels(role, route, e.chroma_name).inc()
    if e.status >= 500:
        log.warning("%s on %s: %s", e.chroma_name, route, e.message)
    else:
        log.debug("%s on %s: %s", e.chroma_name, route, e.message)
    headers: Headers = []
    if e.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="chromasnap"'))
    return json_response(e.status, e.body(), headers)
