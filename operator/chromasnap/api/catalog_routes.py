"""Routes about a pool's tenants, databases and collections, answered by its ``Catalog``.

A pool serves a whole Chroma database, so these are Chroma's own routes as a
single-node server answers them: create (with ``get_or_create``), get by name or
id, list with ``limit``/``offset``, count, modify and delete collections; create,
get, list and delete databases; create and get tenants. The request bodies are
checked here (a create body as ``createbody`` checks it); what exists is the
catalog's business.
"""

from __future__ import annotations

from typing import Any

from chromasnap.api.asgi import Receive, Scope, read_body
from chromasnap.api.backends import Catalog
from chromasnap.api.createbody import parse_create, required_name
from chromasnap.api.deserialize import kind, serde_error
from chromasnap.api.parsing import body_object, load_json
from chromasnap.api.responses import (
    DEFAULT_DATABASE,
    DEFAULT_TENANT,
    Response,
    json_response,
    page_params,
)
from chromasnap.api.scopes import Scope as TokenScope
from chromasnap.api.service import ServiceContext

#: Largest body of a tenant, database or modify request (a name, metadata, configuration).
MAX_SMALL_BODY = 1 << 20


class CatalogRoutes:
    """Handlers for the tenancy and collection routes of a pool."""

    def __init__(self, ctx: ServiceContext, catalog: Catalog) -> None:
        self.ctx = ctx
        self.catalog = catalog

    async def _body(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        return body_object(load_json(await read_body(scope, receive, MAX_SMALL_BODY)))

    # -- collections ------------------------------------------------------------------

    async def list_collections(self, scope: Scope, receive: Receive, tenant: str,
                               database: str) -> Response:
        """A page of the database's collections, in Chroma's order."""
        limit, offset = page_params(scope)
        return json_response(200, await self.catalog.list_collections(tenant, database,
                                                                      limit, offset))

    async def count_collections(self, scope: Scope, receive: Receive, tenant: str,
                                database: str) -> Response:
        """How many collections the database holds."""
        return json_response(200, await self.catalog.count_collections(tenant, database))

    async def get_collection(self, scope: Scope, receive: Receive, tenant: str,
                             database: str, name: str) -> Response:
        """A collection by name (or id)."""
        return json_response(200, await self.catalog.get_collection(tenant, database, name))

    async def get_collection_by_id(self, scope: Scope, receive: Receive, tenant: str,
                                   database: str, cid: str) -> Response:
        """A collection by id."""
        return json_response(200, await self.catalog.get_collection(tenant, database, cid))

    async def create_collection(self, scope: Scope, receive: Receive, tenant: str,
                                database: str) -> Response:
        """Create a collection, or return the existing one for ``get_or_create``."""
        raw = await read_body(scope, receive, self.ctx.max_body_bytes)
        req = parse_create(body_object(load_json(raw)))
        return json_response(200, await self.catalog.create_collection(tenant, database, req))

    async def delete_collection(self, scope: Scope, receive: Receive, tenant: str,
                                database: str, name: str) -> Response:
        """Delete a collection by name."""
        await self.catalog.delete_collection(tenant, database, name)
        return json_response(200, None)

    async def modify_collection(self, scope: Scope, receive: Receive, tenant: str,
                                database: str, cid: str) -> Response:
        """Rename, new metadata, or a configuration change (``collection.modify``)."""
        body = await self._body(scope, receive)
        name = body.get("new_name")
        if name is not None and not isinstance(name, str):
            raise serde_error("new_name", f"invalid type: {kind(name)}, expected a string")
        metadata = body.get("new_metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise serde_error("new_metadata", f"invalid type: {kind(metadata)}, expected a map")
        config = body.get("new_configuration")
        if config is not None and not isinstance(config, dict):
            raise serde_error("new_configuration",
                              f"invalid type: {kind(config)}, expected a map")
        await self.catalog.modify_collection(tenant, database, cid, name=name,
                                             metadata=metadata, configuration=config)
        return json_response(200, {})

    # -- tenants and databases ------------------------------------------------------

    async def identity(self, scope: Scope, receive: Receive) -> Response:
        """Who the client is: its token's tenant and database, else the defaults."""
        limited: TokenScope | None = scope.get("chromasnap.token_scope")
        if limited is None:
            return json_response(200, {"user_id": "", "tenant": DEFAULT_TENANT,
                                       "databases": [DEFAULT_DATABASE]})
        return json_response(200, {"user_id": "", "tenant": limited.tenant,
                                   "databases": [limited.database or "*"]})

    async def create_tenant(self, scope: Scope, receive: Receive) -> Response:
        """Create a tenant."""
        await self.catalog.create_tenant(required_name(await self._body(scope, receive)))
        return json_response(200, {})

    async def get_tenant(self, scope: Scope, receive: Receive, tenant: str) -> Response:
        """A tenant, if it exists."""
        await self.catalog.get_tenant(tenant)
        return json_response(200, {"name": tenant, "resource_name": None})

    async def create_database(self, scope: Scope, receive: Receive, tenant: str) -> Response:
        """Create a database under the tenant."""
        await self.catalog.create_database(tenant, required_name(await self._body(scope, receive)))
        return json_response(200, {})

    async def get_database(self, scope: Scope, receive: Receive, tenant: str,
                           database: str) -> Response:
        """A database, if it exists."""
        return json_response(200, await self.catalog.get_database(tenant, database))

    async def list_databases(self, scope: Scope, receive: Receive, tenant: str) -> Response:
        """A page of the tenant's databases."""
        limit, offset = page_params(scope)
        return json_response(200, await self.catalog.list_databases(tenant, limit, offset))

    async def delete_database(self, scope: Scope, receive: Receive, tenant: str,
                              database: str) -> Response:
        """Delete a database and its collections."""
        await self.catalog.delete_database(tenant, database)
        return json_response(200, {})

