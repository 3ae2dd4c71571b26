"""kubectl chromasnap: status, compactions, export and restore, logs, support bundles.

``status``, ``logs``, ``report``, ``export`` and ``restore`` also work on a
ChromaDatabase (a pool of collections; ``export`` and ``restore`` take
``--collection``, ``logs`` shows its pool pods), and ``collections`` lists a pool's
collections.

Installed as the ``kubectl-chromasnap`` executable; kubectl runs it for
``kubectl chromasnap ...``. Every command takes the usual ``--kubeconfig``,
``--context`` and ``-n/--namespace`` (default: the context's namespace).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from chromasnap.cli.plugin.bucket import NOT_APPLIED
from chromasnap.cli.plugin.kube import Kube, PluginError, connect
from chromasnap.cli.plugin.logs import ALL_ROLES

PROG = "kubectl chromasnap"


def _kube(args: argparse.Namespace) -> Kube:
    return connect(args.kubeconfig, args.context, args.namespace)


def cmd_status(args: argparse.Namespace) -> int:
    """Conditions, snapshot, pending deltas, readers' loaded versions, recent runs."""
    from chromasnap.cli.plugin import bucket, pool, status
    from chromasnap.resource import DATABASE_KIND

    kube = _kube(args)
    kind, obj = kube.resource(args.name)
    if kind == DATABASE_KIND:
        return pool.status(kube, args.name, obj, json_out=args.json, bucket=args.bucket,
                           endpoint=args.s3_endpoint_url,
                           local_creds=args.use_local_credentials)
    page = status.collect(kube, args.name, metrics=not args.no_metrics)
    summary = None
    if args.bucket:
        summary, note, _ = bucket.bucket_summary(kube, kube.collection(args.name),
                                                 endpoint=args.s3_endpoint_url,
                                                 local_creds=args.use_local_credentials)
        page["bucket"] = summary if summary is not None else {"error": note}
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    print(status.render(page))
    if args.bucket:
        print("\nBucket (chromasnap status):")
        if summary is None:
            print(f"  unavailable: {page['bucket']['error']}")
        else:
            from chromasnap.cli.status import CollectionStatus, SnapshotSummary, render

            snaps = [SnapshotSummary(**s) for s in summary.pop("snapshots", [])]
            print("  " + render(CollectionStatus(**summary, snapshots=snaps)).replace(
                "\n", "\n  "))
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    """Set the compact-now annotation, then follow the run."""
    from chromasnap.cli.plugin.compact import compact

    return compact(_kube(args), args.name, request=args.request, wait=not args.no_wait,
                   timeout=args.timeout)


def _pool_or_collection(kube: Kube, args: argparse.Namespace) -> bool:
    """Whether the command works on a pool's collection (``--collection``); a clear
    error when NAME is a ChromaDatabase and ``--collection`` is missing."""
    from chromasnap.resource import DATABASE_KIND

    if args.collection is not None:
        return True
    if args.tenant is not None or args.database is not None:
        raise PluginError("--tenant and --database go with --collection", exit_code=2)
    kind, _ = kube.resource(args.name)
    if kind == DATABASE_KIND:
        raise PluginError(f"{args.name!r} is a ChromaDatabase (a pool of collections): pass "
                          f"--collection NAME (list them with `kubectl chromasnap collections "
                          f"{args.name}`)", exit_code=2)
    return False


def cmd_export(args: argparse.Namespace) -> int:
    """Export a snapshot of the collection into a chromadb directory."""
    from chromasnap.cli.plugin import bucket, pool

    if (args.path is None) == (args.out is None):
        raise PluginError("give the directory to write, as PATH or --out DIR (once)",
                          exit_code=2)
    dest = args.path or args.out
    kube = _kube(args)
    if _pool_or_collection(kube, args):
        return pool.export(kube, args.name, args.collection, dest, tenant=args.tenant,
                           database=args.database, version=args.version, at=args.at,
                           endpoint=args.s3_endpoint_url, local_creds=args.use_local_credentials)
    return bucket.export(kube, args.name, dest, version=args.version, at=args.at,
                         endpoint=args.s3_endpoint_url, local_creds=args.use_local_credentials)


def cmd_restore(args: argparse.Namespace) -> int:
    """A new collection bootstrapped from this one's data."""
    from chromasnap.cli.plugin import bucket, pool

    kube = _kube(args)
    if _pool_or_collection(kube, args):
        return pool.restore(kube, args.name, args.collection, args.into, tenant=args.tenant,
                            database=args.database, at=args.at, version=args.version,
                            prefix=args.prefix, dry_run=args.dry_run,
                            endpoint=args.s3_endpoint_url,
                            local_creds=args.use_local_credentials)
    return bucket.restore(kube, args.name, args.into, at=args.at, version=args.version,
                          prefix=args.prefix, dry_run=args.dry_run)


def cmd_collections(args: argparse.Namespace) -> int:
    """The collections of a ChromaDatabase, paged and sorted."""
    from chromasnap.cli.plugin.pool import collections

    if args.limit < 0 or args.offset < 0:
        raise PluginError("--limit and --offset must be >= 0", exit_code=2)
    return collections(_kube(args), args.name, json_out=args.json, sort=args.sort,
                       desc=args.desc, limit=args.limit, offset=args.offset,
                       tenant=args.tenant, database=args.database,
                       endpoint=args.s3_endpoint_url, local_creds=args.use_local_credentials)


def cmd_logs(args: argparse.Namespace) -> int:
    """Recent logs of the collection's pods, or of a database's pool pods."""
    from chromasnap.cli.plugin.logs import logs

    return logs(_kube(args), args.name, args.role, tail=args.tail, since=args.since,
                previous=args.previous)


def cmd_report(args: argparse.Namespace) -> int:
    """Write a support bundle of a collection or a database."""
    from chromasnap.cli.plugin.report import report

    target, errors = report(_kube(args), args.name, args.output, tail=args.tail,
                            with_bucket=not args.no_bucket, endpoint=args.s3_endpoint_url,
                            local_creds=args.use_local_credentials)
    print(f"wrote {target} (no Secret values included)")
    for e in errors:
        print(f"  not collected: {e}", file=sys.stderr)
    return 0


def _connection_flags(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--kubeconfig", default=default, metavar="FILE",
                   help="kubeconfig file (default: KUBECONFIG, then ~/.kube/config)")
    p.add_argument("--context", default=default, help="kubeconfig context to use")
    p.add_argument("-n", "--namespace", default=default,
                   help="namespace of the ChromaCollection or ChromaDatabase (default: the "
                        "context's namespace)")


def _bucket_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s3-endpoint-url", default=None, metavar="URL",
                   help="reach the bucket here instead of spec.storage.endpoint (e.g. "
                        "http://127.0.0.1:9000 through `kubectl port-forward`)")
    p.add_argument("--use-local-credentials", action="store_true",
                   help="use this machine's AWS credentials, not the collection's Secret")


def _pool_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", default=None, metavar="NAME",
                   help="NAME is a ChromaDatabase: this collection of it (its catalog name)")
    p.add_argument("--tenant", default=None,
                   help="the collection's tenant (default: any, if only one has the name)")
    p.add_argument("--database", default=None,
                   help="the collection's Chroma database (default: any, if only one has "
                        "the name)")


def build_parser() -> argparse.ArgumentParser:
    """The plugin's argument parser."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    _connection_flags(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str,
            what: str = "the ChromaCollection") -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        # SUPPRESS: a flag given before the command is not reset by the subparser
        _connection_flags(sp, argparse.SUPPRESS)
        sp.add_argument("name", help=what)
        sp.set_defaults(fn=fn)
        return sp

    st = add("status", cmd_status, "conditions, snapshot, pending deltas, each reader's "
             "loaded version and the recent compaction runs; of a ChromaDatabase: its "
             "endpoint, pods, collections, pending and failing ones and the last pass",
             what="the ChromaCollection or ChromaDatabase")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--no-metrics", action="store_true",
                    help="do not read the readers' /metrics through the API server's proxy")
    st.add_argument("--bucket", action="store_true",
                    help="also list the bucket (retained versions, pending deltas) with the "
                         "collection's credentials; of a ChromaDatabase: name the failing and "
                         "most pending collections from the pool's catalog")
    _bucket_flags(st)
    c = add("compact", cmd_compact, "run a compaction (of a ChromaDatabase: a pass) now (the "
            "compact-now annotation) and follow it until the run reports")
    c.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                   help="give up waiting after this long (default 600)")
    c.add_argument("--no-wait", action="store_true", help="request it and return")
    c.add_argument("--request", default=None, metavar="VALUE",
                   help="annotation value (default: the time); the same value never "
                        "starts a second run")
    e = add("export", cmd_export, "restore a snapshot of the collection (or of a pool's "
            "collection, with --collection) into a directory chromadb.PersistentClient opens",
            what="the ChromaCollection, or the ChromaDatabase with --collection")
    e.add_argument("path", nargs="?", default=None, help="new or empty directory to write")
    e.add_argument("-o", "--out", default=None, metavar="DIR", help="the same as PATH")
    _pool_flags(e)
    when = e.add_mutually_exclusive_group()
    when.add_argument("--version", default=None, help="a retained version (default: current)")
    when.add_argument("--at", default=None, metavar="TIME",
                      help="the state at this time (needs point-in-time recovery)")
    _bucket_flags(e)
    r = add("restore", cmd_restore, "create a new collection that starts from this one's "
            "data (spec.bootstrap.from); of a pool's collection with --collection",
            what="the ChromaCollection, or the ChromaDatabase with --collection")
    _pool_flags(r)
    r.add_argument("--into", required=True, metavar="NEW", help="name of the new collection")
    rwhen = r.add_mutually_exclusive_group()
    rwhen.add_argument("--at", default=None, metavar="TIME", help="the state at this time")
    rwhen.add_argument("--version", default=None, help="a retained version")
    r.add_argument("--prefix", default=None,
                   help="storage prefix of the new collection (default: the source's "
                         "parent prefix + NEW; of a pool's collection: the pool root's parent "
                         "+ NEW)")
    r.add_argument("--dry-run", action="store_true",
                   help="print the manifest (e.g. to commit it to Git) instead of creating it")
    _bucket_flags(r)
    cl = add("collections", cmd_collections, "the collections of a ChromaDatabase: records, "
             "bytes, pending deltas; paged and sorted", what="the ChromaDatabase")
    from chromasnap.cli.poolcollections import add_listing_arguments

    add_listing_arguments(cl)
    _bucket_flags(cl)
    lg = add("logs", cmd_logs, "recent logs of the collection's pods (writers, readers, "
             "compaction and purge Jobs), or of a ChromaDatabase's pool pods",
             what="the ChromaCollection or ChromaDatabase")
    lg.add_argument("--role", choices=ALL_ROLES, default=None,
                    help="only these pods: writer, reader, compactor or purge of a "
                         "ChromaCollection; pool of a ChromaDatabase (its only pods)")
    lg.add_argument("--tail", type=int, default=200, help="lines per container (default 200)")
    lg.add_argument("--since", type=int, default=None, metavar="SECONDS",
                    help="only lines newer than this")
    lg.add_argument("-p", "--previous", action="store_true",
                    help="the previous (crashed) container's logs")
    rp = add("report", cmd_report, "write a support bundle: the resource, status page, "
             "Events, children, pods and their recent logs, bucket summary (of a "
             "ChromaDatabase: its last compaction pass and the collections it names); never "
             "Secret values", what="the ChromaCollection or ChromaDatabase")
    rp.add_argument("-o", "--output", default=None, metavar="PATH",
                    help="a directory, or FILE.tar.gz (default: "
                         "./chromasnap-report-NS-NAME-TIME.tar.gz)")
    rp.add_argument("--tail", type=int, default=500, help="log lines per container")
    rp.add_argument("--no-bucket", action="store_true",
                    help="skip the bucket summary (it reads the resource's credentials Secret)")
    _bucket_flags(rp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kubectl-chromasnap``."""
    args = build_parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    try:
        return fn(args)
    except KeyboardInterrupt:
        return 130
    except PluginError as e:
        print(f"{PROG} {args.command}: {e}", file=sys.stderr)
        return e.exit_code


__all__ = ["NOT_APPLIED", "build_parser", "main"]


if __name__ == "__main__":
    sys.exit(main())
