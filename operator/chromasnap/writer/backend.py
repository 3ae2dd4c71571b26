"""The writer's side of the HTTP API: group-commit writes and tell readers about new deltas."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import httpx

from chromasnap.api.auth import PUSH_TOKEN_HEADER
from chromasnap.api.models import WriteRequest
from chromasnap.api.routing import DELTA_NOTIFY_PREFIX
from chromasnap.engine.errors import Unavailable
from chromasnap.engine.ops import OpKind
from chromasnap.logs import fields
from chromasnap.storage import pointer, snapshots
from chromasnap.storage.store import ObjectStore, StoreError
from chromasnap.writer.groupcommit import GroupCommitWriter

log = logging.getLogger("chromasnap.writeserver")
NOTIFY_PATH = DELTA_NOTIFY_PREFIX  # the readers' push route


class WriterBackend:
    """``httpapi.WriteBackend`` over the group-commit writer."""

    def __init__(self, writer: GroupCommitWriter) -> None:
        self.writer = writer

    async def write(self, kind: OpKind, req: WriteRequest) -> str:
        """Validate, group-commit, and return the delta's token once durable.

        A filtered delete travels as such: the writer holds no records, so the
        compactor and fresh readers decide what it removes (``merge``).
        """
        return await self.writer.submit(
            kind, req.ids, embeddings=req.embeddings, documents=req.documents,
            metadatas=req.metadatas, uris=req.uris, where=req.where,
            where_document=req.where_document, limit=req.limit,
        )


class CollectionModel:
    """The collection's JSON for writers: read from the current snapshot's manifest.

    Writers hold no snapshot, so they serve what the compactor recorded; a
    cheap conditional GET of the pointer keeps it current.
    """

    def __init__(self, store: ObjectStore, refresh_s: float = 5.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._etag: str | None = None
        self._model: dict[str, Any] | None = None
        self._checked = 0.0

    def refresh(self) -> None:
        """Re-read the manifest if the pointer moved."""
        seen = pointer.poll(self.store, self._etag)
        self._checked = time.monotonic()
        if seen is None or seen.pointer is None:
            return
        man = snapshots.load_manifest(self.store, seen.pointer.manifest)
        self._model = man.collection.model
        self._etag = seen.etag

    def __call__(self) -> Mapping[str, Any]:
        """The JSON; raises Unavailable before the first snapshot exists."""
        if self._model is None or time.monotonic() - self._checked > self.refresh_s:
            try:
                self.refresh()
            except StoreError as e:
                if self._model is None:
                    raise Unavailable(f"cannot read the collection's snapshot: {e}") from e
        if self._model is None:
            raise Unavailable("the collection has no snapshot yet; the first compaction "
                              "creates it (run the compactor)")
        return self._model


class Notifier:
    """Push each new delta to every reader so fresh reads need not wait for a poll.

    Targets are explicit URLs and/or a DNS name (the operator's headless reader
    Service, ``host:port``) resolved to all its addresses. Best effort: readers
    also poll, so a lost notification only delays freshness.
    """

    def __init__(self, urls: Sequence[str] = (), dns: str | None = None,
                 push_token: str | None = None, timeout_s: float = 2.0) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.dns = dns
        # The push credential, never a client token: readers refuse client tokens here.
        self.headers = {PUSH_TOKEN_HEADER: push_token} if push_token else {}
        self.client = httpx.AsyncClient(timeout=timeout_s)

    def _targets(self) -> list[str]:
        out = list(self.urls)
        if self.dns:
            host, _, port = self.dns.rpartition(":")
            if not host:
                host, port = self.dns, "8000"
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except OSError as e:
                log.debug("notify DNS lookup failed", extra=fields(name=self.dns, error=str(e)))
                infos = []
            for addr in sorted({str(i[4][0]) for i in infos}):
                out.append(f"http://{addr}:{port}" if ":" not in addr else f"http://[{addr}]:{port}")
        return out

    async def __call__(self, name: str, data: bytes, skip: Collection[str] = ()) -> None:
        """Send the delta to every target but ``skip`` concurrently; failures are only logged."""
        targets = [t for t in await asyncio.to_thread(self._targets) if t not in skip]

        async def one(base: str) -> None:
            try:
                r = await self.client.post(base + NOTIFY_PATH + name, content=data,
                                           headers=self.headers)
                if r.status_code >= 300:
                    log.debug("reader refused notification",
                              extra=fields(target=base, status=r.status_code))
            except httpx.HTTPError as e:
                log.debug("notify failed", extra=fields(target=base, error=str(e)))

        await asyncio.gather(*(one(t) for t in targets))

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()
