"""Routes about the collection itself: list, count, get (by name or id), create and
delete. A chromasnap service serves exactly one collection, declared as a
``ChromaCollection`` resource, so creating and deleting are refused with a pointer
to the resource."""

from __future__ import annotations

import logging

from chromasnap.api.asgi import Receive, Scope, read_body
from chromasnap.api.createbody import ignored_settings, parse_create
from chromasnap.api.parsing import body_object, load_json
from chromasnap.api.responses import (
    DEFAULT_DATABASE,
    DEFAULT_TENANT,
    Response,
    json_response,
    paginate,
)
from chromasnap.api.service import ServiceContext
from chromasnap.engine.errors import AlreadyExists, NotFound, Unimplemented
from chromasnap.logs import fields

log = logging.getLogger("chromasnap.httpapi")


class CollectionRoutes:
    """Handlers for the collection routes of one ``ServiceContext``."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def list_collections(self, scope: Scope, receive: Receive, tenant: str,
                               database: str) -> Response:
        """The collection, if the tenant and database are its own; else nothing."""
        model = self.ctx.safe_model()
        if tenant != model.get("tenant", DEFAULT_TENANT) or database != model.get(
            "database", DEFAULT_DATABASE
        ):
            return json_response(200, [])
        return json_response(200, paginate(scope, [self.ctx.model()]))

    async def count_collections(self, scope: Scope, receive: Receive, tenant: str,
                                database: str) -> Response:
        """1 in the collection's tenant and database, 0 elsewhere."""
        model = self.ctx.safe_model()
        same = tenant == model.get("tenant", DEFAULT_TENANT) and database == model.get(
            "database", DEFAULT_DATABASE
        )
        return json_response(200, 1 if same else 0)

    async def get_collection(self, scope: Scope, receive: Receive, tenant: str,
                             database: str, name: str) -> Response:
        """The collection by name (or id)."""
        model = self.ctx.check_scope(tenant, database, name)
        if name != model["name"] and name != model["id"]:
            raise NotFound(f"Collection [{name}] does not exist")
        return json_response(200, model)

    async def get_collection_by_id(self, scope: Scope, receive: Receive, tenant: str,
                                   database: str, cid: str) -> Response:
        """The collection by id."""
        model = self.ctx.check_scope(tenant, database, cid)
        if cid != model["id"]:
            raise NotFound(f"Collection [{cid}] does not exist")
        return json_response(200, model)

    async def create_collection(self, scope: Scope, receive: Receive, tenant: str,
                                database: str) -> Response:
        """``get_or_create`` of the served collection works; anything else is refused.

        As in Chroma, the body is checked in full, and then the settings it asks for
        are ignored: the existing collection is returned as it is. Unlike Chroma, a
        warning names the settings that were ignored.
        """
        raw = await read_body(scope, receive, self.ctx.max_body_bytes)
        req = parse_create(body_object(load_json(raw)))
        name = req.name
        model = self.ctx.check_scope(tenant, database, name)
        if name == model["name"]:
            if req.get_or_create:
                ignored = ignored_settings(req, model)
                if ignored:
                    log.warning(
                        "get_or_create_collection(%r) asked for settings the existing collection "
                        "does not have; ignored, as Chroma ignores them: %s",
                        name, "; ".join(ignored), extra=fields(collection=name, ignored=ignored))
                return json_response(200, model)
            raise AlreadyExists(f"Collection [{name}] already exists")
        raise Unimplemented(
            f"this chromasnap service serves the collection {model['name']!r} only and cannot "
            f"create {name!r}: declare each collection as a ChromaCollection resource"
        )

    async def delete_collection(self, scope: Scope, receive: Receive, tenant: str,
                                database: str, name: str) -> Response:
        """Refused: the collection's lifetime is its Kubernetes resource's."""
        model = self.ctx.check_scope(tenant, database, name)
        if name != model["name"]:
            raise NotFound(f"Collection [{name}] does not exist")
        raise Unimplemented(
            f"chromasnap does not delete collections over the Chroma API: delete the "
            f"ChromaCollection resource for {name!r} instead"
        )
