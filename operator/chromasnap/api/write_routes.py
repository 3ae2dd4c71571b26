"""The record write routes — add, upsert, update, delete — applied by the write backend,
or, on a reader, forwarded to the writer Service (never kept in a replica)."""

from __future__ import annotations

from chromasnap.api.asgi import Receive, Scope, read_body
from chromasnap.api.forwarding import Forwarder
from chromasnap.api.models import WriteAck
from chromasnap.api.parsing import decode_body, parse_write
from chromasnap.api.responses import Response, json_response
from chromasnap.api.service import ServiceContext
from chromasnap.api.tokens import read_after, token_headers
from chromasnap.engine.errors import Unimplemented
from chromasnap.engine.ops import OpKind


class WriteRoutes:
    """The handler for add, upsert, update and delete on one ``ServiceContext``."""

    def __init__(self, ctx: ServiceContext, forwarder: Forwarder,
                 forward_to: str | None = None) -> None:
        self.ctx = ctx
        self.forwarder = forwarder
        self.forward_to = forward_to

    async def write(self, scope: Scope, receive: Receive, tenant: str, database: str,
                    cid: str, kind: OpKind) -> Response:
        """Apply one write once durable and hand back its read-your-writes token."""
        if self.ctx.write is None and self.ctx.catalog is None:
            if self.forward_to:
                self.ctx.check_forward_target(tenant, database, cid)
                return await self.forwarder.forward(self.forward_to, scope, receive)
            raise Unimplemented(
                "this chromasnap reader does not accept writes and has no writer service "
                "configured; send writes to the writer service"
            )
        write = (await self.ctx.target(tenant, database, cid)).write
        assert write is not None  # a catalog's targets, and a writer's, take writes
        token_in = read_after(scope)
        raw = await read_body(scope, receive, self.ctx.max_body_bytes)
        req = await decode_body(raw, lambda body: parse_write(kind, body, token_in))
        result = await write.write(kind, req)
        if isinstance(result, WriteAck):
            token, deleted = result.token, result.deleted
        else:
            token, deleted = result, None
        headers = token_headers(token, self.ctx.session_cookie)
        if kind == OpKind.DELETE:
            return json_response(200, {} if deleted is None else {"deleted": deleted}, headers)
        return Response(201 if kind == OpKind.ADD else 200, b"{}", headers)
