"""``chromasnap dev``: a writer, a reader and a compactor loop in the foreground.

Everything runs on a local-directory bucket, so a developer can point
existing ``chromadb.HttpClient`` code at the printed address. Writes sent to
the reader are forwarded to the writer; the compactor folds every few seconds.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from chromasnap import logs
from chromasnap.cli.localstack import LocalStack, collection_env
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import LocalLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.config import DEFAULT_SPACE, CollectionSettings, Space
from chromasnap.storage import pointer, snapshots
from chromasnap.storage.store import ObjectStore, open_store

COMPACT_EVERY_S = 5.0


class SpaceConflict(ValueError):
    """``--space`` asks for another space than the one the existing collection was built with."""


def resolve_space(requested: Space | None, recorded: Space | None) -> Space:
    """The space ``dev`` serves: an existing collection's own (an explicit ``--space``
    must agree with it), else ``--space``, else Chroma's default (``l2``)."""
    if recorded is not None:
        if requested is not None and requested != recorded:
            raise SpaceConflict(
                f"the collection in this bucket was created with space {recorded.value!r}, "
                f"not {requested.value!r}: a collection's space is fixed at creation; drop "
                "--space, or use another --dir for a new collection")
        return recorded
    return requested or DEFAULT_SPACE


def recorded_space(store: ObjectStore) -> Space | None:
    """The space of the collection the store's current version holds, if there is one."""
    cur = pointer.read(store).pointer
    if cur is None:
        return None
    return snapshots.load_manifest(store, cur.manifest).collection.settings.space


def run_dev(root: Path, port: int, dimension: int, collection: str,
            space: Space | None = None) -> int:
    """Run until Ctrl-C; return the exit code."""
    logs.setup("INFO", "text")
    bucket = (root / "bucket").resolve()
    url = bucket.as_uri()
    store = open_store(url)
    space = resolve_space(space, recorded_space(store))  # SpaceConflict: a user error
    settings = CollectionSettings(name=collection, dimension=dimension, space=space)
    compactor = Compactor(store, settings,
                          LocalLock(bucket / ".locks" / "compactor.lock", "dev"),
                          CompactorOptions(identity="dev-compactor", cache_dir=root / "compactor"))
    compactor.run()  # creates the collection on first use
    stack = LocalStack(collection_env(url, None, collection, dimension, space.value),
                       root / "procs")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        writer = stack.start("writer", CHROMASNAP_NOTIFY_URLS=f"http://127.0.0.1:{port}")
        reader = stack.start("reader", port, CHROMASNAP_WRITER_URL=writer.url)
        stack.wait(reader, "/readyz")
        print(f"\nchromasnap dev: collection {collection!r} ({dimension} dims, space "
              f"{space.value}) on {url}")
        print(f"  chromadb.HttpClient(host='127.0.0.1', port={port})"
              f".get_collection({collection!r})")
        print(f"  writer {writer.url}, reader {reader.url}; logs in {root / 'procs'}")
        print(f"  compaction every {COMPACT_EVERY_S:g} s; Ctrl-C stops everything\n")
        while not stop.wait(COMPACT_EVERY_S):
            res = compactor.run()
            if res.result != "skipped":
                print(f"compaction {res.result}: {res.message}")
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0
