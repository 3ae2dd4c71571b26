"""The ``chromasnap`` command line.

Workload subcommands (``writer``, ``compactor``, ``reader``) take every
setting from ``CHROMASNAP_*`` environment variables (what the operator puts
in pods) or from the matching ``--flag``; flags win. Invalid settings stop the
process with one line per problem naming the variable to fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from chromasnap import logs
from chromasnap.config import (
    CommonSettings,
    CompactorSettings,
    PoolSettings,
    ReaderSettings,
    Space,
    WriterSettings,
    explain,
)
from chromasnap.resource import DATABASE_PLURAL, PLURAL

if TYPE_CHECKING:
    from chromasnap.storage.store import ObjectStore as StoreLike

S = TypeVar("S", bound=BaseSettings)
log = logging.getLogger("chromasnap")


def _add_settings_flags(p: argparse.ArgumentParser, cls: type[BaseSettings]) -> None:
    """One ``--flag`` per settings field, documented with its env var."""
    for name, f in cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = "CHROMASNAP_" + name.upper()
        desc = (f.description + "; ") if f.description else ""
        p.add_argument(flag, dest=f"cfg_{name}", default=None, metavar="VALUE",
                       help=f"{desc}env {env}")


def _settings(cls: type[S], args: argparse.Namespace) -> S:
    overrides = {
        k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None
    }
    try:
        return cls(**overrides)
    except ValidationError as e:
        print(f"chromasnap: {explain(e)}", file=sys.stderr)
        raise SystemExit(2) from e


def _setup_logs(s: CommonSettings | PoolSettings) -> None:
    logs.setup(s.log_level, s.log_format)


def cmd_compactor(args: argparse.Namespace) -> int:
    """Run one compaction (or loop), report the result, exit 0 unless it failed."""
    from chromasnap.cli.runtime import run_compactor

    s = _settings(CompactorSettings, args)
    _setup_logs(s)
    return run_compactor(s, loop_interval=args.loop)


def cmd_pool(args: argparse.Namespace) -> int:
    """Serve Chroma's whole API over a pool of collections."""
    from chromasnap.cli.runtime import run_pool

    s = _settings(PoolSettings, args)
    _setup_logs(s)
    return run_pool(s)


def cmd_writer(args: argparse.Namespace) -> int:
    """Serve Chroma's write routes; writes become deltas."""
    from chromasnap.cli.runtime import run_writer

    s = _settings(WriterSettings, args)
    _setup_logs(s)
    return run_writer(s)


def cmd_reader(args: argparse.Namespace) -> int:
    """Serve Chroma's read routes from the newest snapshot."""
    from chromasnap.cli.runtime import run_reader

    s = _settings(ReaderSettings, args)
    _setup_logs(s)
    return run_reader(s)


def cmd_import(args: argparse.Namespace) -> int:
    """Publish an existing PersistentClient directory as a snapshot."""
    from chromasnap.cli.importexport import import_directory
    from chromasnap.storage.store import open_store

    logs.setup("INFO", "text")
    store = open_store(args.to, args.s3_endpoint_url)
    man = import_directory(Path(args.path), args.collection, store, show_progress=True)
    print(f"imported {man.record_count} records of {man.collection.settings.name!r} "
          f"as version {man.version} ({man.byte_size} bytes) into {args.to}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Restore a retained snapshot into a plain chromadb directory."""
    from chromasnap.cli.importexport import export_snapshot
    from chromasnap.storage.store import open_store

    logs.setup("INFO", "text")
    store = open_store(args.url, args.s3_endpoint_url)
    if args.at is not None:
        from chromasnap.cli.importexport import export_at

        restored = export_at(store, Path(args.path), args.at)
        _rename_exported(args)
        origin = (f"version {restored.anchor.version}" if restored.anchor else "the empty "
                  "collection")
        print(f"exported the state at {args.at.isoformat()} ({restored.record_count} records: "
              f"{origin} + {restored.writes} writes replayed) to {args.path}; open it with "
              f"chromadb.PersistentClient(path={args.path!r})")
        return 0
    man = export_snapshot(store, Path(args.path), args.version, show_progress=True)
    _rename_exported(args)
    print(f"exported version {man.version} ({man.record_count} records) to {args.path}; "
          f"open it with chromadb.PersistentClient(path={args.path!r})")
    return 0


def _rename_exported(args: argparse.Namespace) -> None:
    if args.name is None:
        return
    from chromasnap.cli.importexport import rename_exported

    old = rename_exported(Path(args.path), args.name)
    if old != args.name:
        print(f"renamed the exported collection {old!r} to {args.name!r}", file=sys.stderr)


def _timestamp(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 time; without an offset it is UTC."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601, e.g. 2026-12-01T17:30:00Z") from e
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_status(args: argparse.Namespace) -> int:
    """Print what a collection root holds."""
    from chromasnap.cli import status
    from chromasnap.storage.store import open_store

    st = status.collect(open_store(args.url, args.s3_endpoint_url))
    print(json.dumps(st.to_dict(), indent=2) if args.json else status.render(st))
    return 0


def cmd_pool_collections(args: argparse.Namespace) -> int:
    """List a pool root's collections, paged and sorted."""
    from chromasnap.cli import poolcollections
    from chromasnap.storage.store import open_store

    if args.offset < 0 or args.limit < 0:
        print("chromasnap pool-collections: --limit and --offset must be >= 0", file=sys.stderr)
        return 2
    page = poolcollections.listing(
        open_store(args.url, args.s3_endpoint_url), sort=args.sort, desc=args.desc,
        tenant=args.tenant, database=args.database, name=args.name, limit=args.limit,
        offset=args.offset, sizes=not args.catalog_only)
    print(json.dumps(page, indent=2) if args.json else poolcollections.render(page))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded end-to-end demo."""
    from chromasnap.cli.demo import run_demo

    return run_demo(Path(args.dir) if args.dir else None)


def cmd_dev(args: argparse.Namespace) -> int:
    """A pool in the foreground on a local bucket."""
    from chromasnap.cli.dev import run_dev

    return run_dev(Path(args.dir), args.port, args.dimension, args.collection,
                   Space(args.space) if args.space else None)


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the kopf operator."""
    from chromasnap.operator.controller.handlers import run_operator

    return run_operator(args.namespace or (), args.liveness,
                        all_namespaces=args.all_namespaces, standalone=args.standalone)


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete every object under a collection root; report it in the collection's status."""
    from chromasnap.storage.store import open_store

    url = args.url or os.environ.get("CHROMASNAP_BUCKET_URL")
    if not url:
        print("chromasnap purge: give the collection root (s3://bucket/prefix or file:///dir) "
              "or set CHROMASNAP_BUCKET_URL", file=sys.stderr)
        return 2
    if not args.yes:
        print(f"chromasnap purge: this deletes everything under {url}/; pass --yes to do it",
              file=sys.stderr)
        return 2
    logs.setup(os.environ.get("CHROMASNAP_LOG_LEVEL", "INFO"),
               os.environ.get("CHROMASNAP_LOG_FORMAT", "text"))
    deleted = purge_root(open_store(url, args.s3_endpoint_url))
    log.info("purged collection root", extra=logs.fields(url=url, deleted=deleted))
    if args.status_resource:
        from chromasnap.compactor.statusreport import report_purged

        report_purged(args.status_resource, url, deleted, plural=args.status_plural)
    print(json.dumps({"url": url, "deleted": deleted}))
    return 0


def purge_root(store: StoreLike) -> int:
    """Delete every key of a collection root; returns how many were deleted.

    The pointer goes first, so that a reader polling meanwhile sees "no snapshot"
    rather than a pointer to half-deleted files. Listing and deleting repeat until
    a listing comes back empty (objects that land during the purge go too).
    """
    from chromasnap.storage import pointer

    deleted = 0
    for _ in range(10):
        keys = [o.key for o in store.list("")]
        if not keys:
            return deleted
        first = [k for k in keys if k == pointer.POINTER_KEY]
        store.delete_many(first)
        store.delete_many([k for k in keys if k != pointer.POINTER_KEY])
        deleted += len(keys)
    raise RuntimeError(f"{store.url} still has objects after 10 rounds of deletion")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for docs and tests)."""
    p = argparse.ArgumentParser(prog="chromasnap", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str,
            settings: type[BaseSettings] | None = None) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        if settings is not None:
            _add_settings_flags(sp, settings)
        sp.set_defaults(fn=fn)
        return sp

    add("writer", cmd_writer, "serve Chroma write routes; group-commit writes into deltas",
        WriterSettings)
    add("reader", cmd_reader, "serve Chroma read routes from the newest snapshot",
        ReaderSettings)
    add("pool", cmd_pool, "serve Chroma's whole API (create, list, delete collections) over a "
        "pool root: writes, reads and compactions in one process", PoolSettings)
    c = add("compactor", cmd_compactor, "fold pending deltas into a new snapshot",
            CompactorSettings)
    c.add_argument("--loop", type=float, default=None, metavar="SECONDS",
                   help="keep running, one compaction every SECONDS (default: run once)")

    endpoint_help = "S3 endpoint URL (MinIO); env CHROMASNAP_S3_ENDPOINT_URL"

    def endpoint(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--s3-endpoint-url", default=os.environ.get("CHROMASNAP_S3_ENDPOINT_URL"),
                        help=endpoint_help)

    i = add("import", cmd_import, "publish an existing chromadb directory as a snapshot")
    i.add_argument("path", help="a chromadb.PersistentClient directory (e.g. ./chroma_db)")
    i.add_argument("--collection", required=True, help="name of the collection to import")
    i.add_argument("--to", required=True, help="collection root: s3://bucket/prefix or file:///dir")
    endpoint(i)
    e = add("export", cmd_export, "restore a snapshot into a plain chromadb directory")
    e.add_argument("url", help="collection root: s3://bucket/prefix or file:///dir")
    e.add_argument("path", help="new or empty directory to write")
    when = e.add_mutually_exclusive_group()
    when.add_argument("--version", default=None, help="a retained version (default: current)")
    when.add_argument("--at", default=None, type=_timestamp, metavar="TIME",
                      help="the state at this time (ISO 8601; needs a recovery window)")
    e.add_argument("--name", default=None,
                   help="name the exported collection NAME (a pool's collection is stored "
                        "under its id; `kubectl chromasnap export DB --collection` passes its "
                        "catalog name)")
    endpoint(e)
    st = add("status", cmd_status, "show pointer, retained versions and pending deltas")
    st.add_argument("url", help="collection root: s3://bucket/prefix or file:///dir")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    endpoint(st)
    pc = add("pool-collections", cmd_pool_collections,
             "list the collections of a pool root (chromasnap pool), paged and sorted")
    pc.add_argument("url", help="pool root: s3://bucket/prefix or file:///dir")
    from chromasnap.cli.poolcollections import add_listing_arguments

    add_listing_arguments(pc)
    pc.add_argument("--name", default=None, help="only collections of this name")
    pc.add_argument("--catalog-only", action="store_true",
                    help="do not read the collections' manifests (no records or bytes)")
    endpoint(pc)
    d = add("demo", cmd_demo, "run the whole loop on a local bucket and print what happened")
    d.add_argument("--dir", default=None, help="work directory, emptied first (default: .demo/run)")
    dv = add("dev", cmd_dev, "a pool (Chroma's whole API) on a local bucket, in the foreground")
    dv.add_argument("--dir", default=".demo/dev", help="local bucket and caches")
    dv.add_argument("--port", type=int, default=8000, help="port for chromadb.HttpClient")
    dv.add_argument("--collection", default="docs",
                    help="a collection created up front (clients create others themselves)")
    dv.add_argument("--dimension", type=int, default=None,
                    help="fix --collection's dimension (else its first add fixes it, as in "
                         "Chroma)")
    dv.add_argument("--space", choices=[s.value for s in Space], default=None,
                    help="distance function of a new collection (default: l2, as Chroma's); "
                         "an existing collection keeps the space it was created with")
    o = add("operator", cmd_operator, "run the Kubernetes operator (kopf)")
    scope = o.add_mutually_exclusive_group()
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       help="watch ChromaCollections in every namespace (the default)")
    scope.add_argument("--namespace", "-n", action="append", default=None, metavar="NAMESPACE",
                       help="watch only this namespace (repeatable)")
    o.add_argument("--liveness", default=None, metavar="URL",
                   help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz")
    o.add_argument("--standalone", action="store_true",
                   help="no kopf peering: exactly one operator replica runs (the chart's "
                        "Deployment has replicas: 1 and the Recreate strategy)")
    pu = add("purge", cmd_purge, "delete every object under a collection root "
             "(what deletionPolicy: Delete runs)")
    pu.add_argument("url", nargs="?", default=None,
                    help="collection root: s3://bucket/prefix or file:///dir "
                         "(default: env CHROMASNAP_BUCKET_URL)")
    pu.add_argument("--yes", action="store_true", help="really delete")
    pu.add_argument("--status-resource", default=os.environ.get("CHROMASNAP_STATUS_RESOURCE"),
                    metavar="NAMESPACE/NAME",
                    help="report completion as a Purged condition on this resource (a "
                         "ChromaCollection unless --status-plural says otherwise); "
                         "env CHROMASNAP_STATUS_RESOURCE")
    pu.add_argument("--status-plural", choices=(PLURAL, DATABASE_PLURAL),
                    default=os.environ.get("CHROMASNAP_STATUS_PLURAL") or PLURAL,
                    help="the kind of --status-resource: chromacollections (default) or "
                         "chromadatabases (a pool's root); env CHROMASNAP_STATUS_PLURAL")
    endpoint(pu)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chromasnap`` console script."""
    args = build_parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    try:
        return fn(args)
    except KeyboardInterrupt:
        return 130
    except _user_errors() as e:
        print(f"chromasnap {args.command}: {e}", file=sys.stderr)
        return 1


def _user_errors() -> tuple[type[BaseException], ...]:
    from chromasnap.cli.dev import SpaceConflict
    from chromasnap.cli.importexport import ImportError_
    from chromasnap.storage.manifest import CorruptSnapshot
    from chromasnap.storage.store import StoreError

    return (ImportError_, CorruptSnapshot, StoreError, SpaceConflict)


if __name__ == "__main__":
    sys.exit(main())
