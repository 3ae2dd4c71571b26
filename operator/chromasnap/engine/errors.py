"""Errors that cross the HTTP boundary, each mapped to the status and error name Chroma uses.

The chromadb client turns a non-2xx response whose JSON body is
``{"error": NAME, "message": TEXT}`` into ``chromadb.errors.error_types[NAME]``
(falling back to a plain ``Exception``), so the ``chroma_name`` below decides
which exception a user's code sees. Statuses follow Chroma's Rust frontend
(``chroma_error_code_to_status_code``); names are the ones the client knows.
"""

from __future__ import annotations


class ChromasnapError(Exception):
    """Base class: an error with an HTTP status and a Chroma error name."""

    status: int = 500
    chroma_name: str = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        """The JSON error body in the shape chromadb's ``_raise_chroma_error`` reads."""
        return {"error": self.chroma_name, "message": self.message}


class InvalidArgument(ChromasnapError):
    """Bad input (shape, type, filter, dimension): 400, ``InvalidArgumentError`` in the client."""

    status = 400
    chroma_name = "InvalidArgumentError"


class InvalidWrite(InvalidArgument):
    """A write rejected by validation; nothing was written."""


class Unprocessable(ChromasnapError):
    """A body that does not deserialize into the route's type: 422, a plain ``ChromaError``,
    as Chroma's frontend answers when its JSON extractor fails."""

    status = 422
    chroma_name = "ChromaError"


class NotFound(ChromasnapError):
    """Unknown tenant, database or collection: 404, ``NotFoundError`` in the client."""

    status = 404
    chroma_name = "NotFoundError"


class AlreadyExists(ChromasnapError):
    """Creating the collection that exists: 409, as Chroma answers (a plain ``ChromaError``)."""

    status = 409
    chroma_name = "ChromaError"


class Unimplemented(ChromasnapError):
    """A Chroma route chromasnap deliberately does not serve (create/delete collection …): 501."""

    status = 501
    chroma_name = "ChromaError"


class PayloadTooLarge(ChromasnapError):
    """Request body above the configured limit: 413, ``BatchSizeExceededError`` in the client."""

    status = 413
    chroma_name = "BatchSizeExceededError"


class Unauthenticated(ChromasnapError):
    """No credentials sent: 401, ``AuthorizationError`` in the client."""

    status = 401
    chroma_name = "AuthorizationError"


class Forbidden(ChromasnapError):
    """Wrong credentials: 403 ``AuthError`` (``ChromaAuthError``), as Chroma's token auth says."""

    status = 403
    chroma_name = "AuthError"


class ReadTimeout(ChromasnapError):
    """A read-your-writes wait expired before the token's write became visible: 504."""

    status = 504
    chroma_name = "ChromaError"


class Unavailable(ChromasnapError):
    """Not ready (no snapshot loaded) or an upstream (writer service, object store) is down: 503."""

    status = 503
    chroma_name = "ChromaError"


class Internal(ChromasnapError):
    """A bug or an unexpected failure: 500, ``InternalError`` in the client."""

    status = 500
    chroma_name = "InternalError"
