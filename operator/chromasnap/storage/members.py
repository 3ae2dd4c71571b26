"""Writer registrations: which writers may acknowledge writes, and where readers reach them.

A writer registers under ``members/writers/<writer-id>`` before it
acknowledges anything, renews the object while it runs (each renewal
changes its content, so its ETag), and deletes it on a clean shutdown.
Readers LIST the prefix to learn whom to ask for freshness leases
(``reader/freshness.py``). The object names the writer's base URL for
lease requests; nothing secret is in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from chromasnap.storage.store import NotFound, ObjectStore

WRITERS_PREFIX = "members/writers/"


@dataclass(frozen=True)
class Registration:
    """One listed writer: its id, the URL readers ask for leases, and the renewal's ETag."""

    writer_id: str
    url: str
    etag: str


def key_of(writer_id: str) -> str:
    """The registration key of ``writer_id``."""
    return WRITERS_PREFIX + writer_id


def register(store: ObjectStore, writer_id: str, url: str, renewal: int) -> None:
    """Write (or renew) ``writer_id``'s registration; ``renewal`` makes each write differ."""
    body = {"writer": writer_id, "url": url, "renewal": renewal}
    store.put(key_of(writer_id), json.dumps(body, sort_keys=True).encode())


def deregister(store: ObjectStore, writer_id: str) -> None:
    """Remove ``writer_id``'s registration (a writer that acknowledges nothing any more)."""
    store.delete_many([key_of(writer_id)])


def listed(store: ObjectStore, known: dict[str, Registration]) -> dict[str, Registration]:
    """The registered writers, reading only the objects ``known`` does not hold at their ETag.

    A writer that vanished between the LIST and its GET is left out.
    """
    out: dict[str, Registration] = {}
    for info in store.list(WRITERS_PREFIX):
        writer_id = info.key[len(WRITERS_PREFIX):]
        old = known.get(writer_id)
        if old is not None and old.etag == info.etag:
            out[writer_id] = old
            continue
        try:
            body = json.loads(store.get(info.key).data)
        except NotFound:
            continue
        out[writer_id] = Registration(writer_id, str(body["url"]), info.etag)
    return out
