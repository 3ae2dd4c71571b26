"""The record read routes — count, get (and peek), query — answered by the read backend,
or forwarded to the reader Service by a server without one (a writer)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chromasnap.api.asgi import Receive, Scope, query_param, read_body
from chromasnap.api.backends import ReadBackend
from chromasnap.api.forwarding import Forwarder
from chromasnap.api.parsing import decode_body, parse_get, parse_query
from chromasnap.api.responses import (
    Response,
    empty_query_json,
    get_result_json,
    json_response,
    query_result_json,
)
from chromasnap.api.service import ServiceContext
from chromasnap.api.tokens import read_after
from chromasnap.engine.errors import InvalidArgument, Unimplemented

READ_LEVELS = ("index_and_wal", "index_only", "index_and_bounded_wal")


@dataclass(frozen=True)
class _Readable:
    model: Mapping[str, Any]
    read: ReadBackend


class ReadRoutes:
    """Handlers for count, get and query on one ``ServiceContext``."""

    def __init__(self, ctx: ServiceContext, forwarder: Forwarder,
                 forward_to: str | None = None) -> None:
        self.ctx = ctx
        self.forwarder = forwarder
        self.forward_to = forward_to

    async def count(self, scope: Scope, receive: Receive, tenant: str, database: str,
                    cid: str) -> Response:
        """The number of records visible (after the client's last write, if it sent one)."""
        target = await self._target(tenant, database, cid)
        if target is None:
            return await self._forward(scope, receive, tenant, database, cid)
        level = query_param(scope, "read_level")
        if level is not None and level not in READ_LEVELS:
            raise InvalidArgument(
                f"read_level: unknown variant `{level}`, expected one of "
                f"{', '.join(READ_LEVELS)}"
            )
        return json_response(200, await target.read.count(read_after(scope)))

    async def get(self, scope: Scope, receive: Receive, tenant: str, database: str,
                  cid: str) -> Response:
        """Records by id and/or filter."""
        target = await self._target(tenant, database, cid)
        if target is None:
            return await self._forward(scope, receive, tenant, database, cid)
        token = read_after(scope)
        raw = await read_body(scope, receive, self.ctx.max_body_bytes)
        req = await decode_body(raw, lambda body: parse_get(body, token))
        result = await target.read.get(req)
        return json_response(200, get_result_json(result, req.include))

    async def query(self, scope: Scope, receive: Receive, tenant: str, database: str,
                    cid: str) -> Response:
        """Nearest neighbours of each query vector."""
        target = await self._target(tenant, database, cid)
        if target is None:
            return await self._forward(scope, receive, tenant, database, cid)
        model = target.model
        token = read_after(scope)
        raw = await read_body(scope, receive, self.ctx.max_body_bytes)
        req = await decode_body(raw, lambda body: parse_query(body, token))
        q = req.query_embeddings
        if q.shape[0] == 0:
            return json_response(200, empty_query_json(req.include))
        dim = model.get("dimension")
        if dim is not None and q.shape[1] != dim:
            raise InvalidArgument(
                f"Collection expecting embedding with dimension of {dim}, got {q.shape[1]}"
            )
        result = await target.read.query(req)
        return json_response(200, query_result_json(result, req.include))

    async def _target(self, tenant: str, database: str, cid: str) -> _Readable | None:
        """The named collection if reads are answered here; ``None`` to forward them."""
        if self.ctx.read is None and self.ctx.catalog is None:
            return None
        target = await self.ctx.target(tenant, database, cid)
        assert target.read is not None  # a catalog's targets, and a reader's, can be read
        return _Readable(target.model, target.read)

    async def _forward(self, scope: Scope, receive: Receive, tenant: str, database: str,
                       cid: str) -> Response:
        if self.forward_to:
            self.ctx.check_forward_target(tenant, database, cid)
            return await self.forwarder.forward(self.forward_to, scope, receive)
        raise Unimplemented(
            "this chromasnap writer does not answer reads and has no reader service "
            "configured; send reads to the reader service"
        )
