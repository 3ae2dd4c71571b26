"""Wiring: turn validated settings into running workloads (the effectful shell of the CLI)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from chromasnap.compactor.bootstrap import Bootstrap
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import LocalLock, Lock, NoLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.compactor.policy import MergePolicy
from chromasnap.compactor.result import CompactionResult
from chromasnap.config import (
    CompactorSettings,
    LockKind,
    PoolSettings,
    ReaderSettings,
    WriterSettings,
)
from chromasnap.logs import fields
from chromasnap.storage.store import open_store

if TYPE_CHECKING:
    from chromasnap.api.scopes import Scope as TokenScope
    from chromasnap.pool.member import PoolOptions

log = logging.getLogger("chromasnap.runtime")


def make_lock(s: CompactorSettings) -> Lock:
    """The lock the settings ask for."""
    if s.lock == LockKind.NONE:
        return NoLock()
    if s.lock == LockKind.KUBERNETES:
        from chromasnap.compactor.lease import LeaseLock

        if not s.lease_name or not s.lease_namespace:
            raise SystemExit(
                "chromasnap compactor: lock=kubernetes needs CHROMASNAP_LEASE_NAME and "
                "CHROMASNAP_LEASE_NAMESPACE"
            )
        return LeaseLock(s.lease_namespace, s.lease_name, s.identity, s.lease_duration_seconds)
    if s.bucket_url.startswith("file://"):
        # Every local process sharing the bucket directory shares this lock.
        path = Path(s.bucket_url[len("file://"):]) / ".locks" / "compactor.lock"
    else:
        path = Path(s.cache_dir) / "compactor.lock"
    return LocalLock(path, s.identity)


def bootstrap_of(s: CompactorSettings) -> Bootstrap | None:
    """The bootstrap source the settings name (``CHROMASNAP_BOOTSTRAP_*``), if any."""
    if not s.bootstrap_url:
        return None
    key_id, secret = s.bootstrap_aws_access_key_id, s.bootstrap_aws_secret_access_key
    creds = ((key_id.get_secret_value(), secret.get_secret_value())
             if key_id is not None and secret is not None else None)
    source = open_store(s.bootstrap_url, s.bootstrap_s3_endpoint_url,
                        region=s.bootstrap_region, credentials=creds)
    return Bootstrap(source, s.bootstrap_version, s.bootstrap_at)


def make_compactor(s: CompactorSettings) -> Compactor:
    """A compactor for the settings' collection root."""
    return Compactor(
        open_store(s.bucket_url, s.s3_endpoint_url),
        s.collection_settings(),
        make_lock(s),
        CompactorOptions(
            identity=s.identity,
            cache_dir=Path(s.cache_dir),
            retain_snapshots=s.retain_snapshots,
            delta_grace_seconds=s.delta_grace_seconds,
            max_deltas_per_run=s.max_deltas_per_run,
            policy=MergePolicy(
                segments_per_tier=s.merge_segments_per_tier,
                full_merge_ratio=s.merge_full_ratio,
                shadowed_ratio=s.merge_shadowed_ratio,
                max_segments=s.merge_max_segments,
                dead_ratio=s.merge_dead_ratio,
            ),
            recovery_window_seconds=s.recovery_window_seconds,
            bootstrap=bootstrap_of(s),
            segment_index_min_rows=s.segment_index_min_rows,
        ),
    )


def report(s: CompactorSettings, res: CompactionResult) -> None:
    """Send the result where the settings say: result file, Pushgateway, resource status."""
    doc = json.dumps(res.to_dict())
    if s.result_file:
        try:
            Path(s.result_file).write_text(doc)
        except OSError as e:
            log.warning("could not write result file", extra=fields(path=s.result_file,
                                                                    error=str(e)))
    if s.pushgateway_url:
        reg = CollectorRegistry()
        for name, value, help_ in (
            ("chromasnap_compaction_success", 1.0 if res.result != "failed" else 0.0,
             "1 if the last compaction did not fail"),
            ("chromasnap_compaction_duration_seconds", res.duration_seconds, "run duration"),
            ("chromasnap_compaction_deltas_folded", res.deltas_folded, "deltas folded"),
            ("chromasnap_compaction_records_folded", res.records_folded, "writes folded"),
            ("chromasnap_compaction_pending_deltas", res.pending_deltas, "deltas left"),
            ("chromasnap_compaction_last_run_timestamp_seconds", res.started_at, "start time"),
        ):
            Gauge(name, help_, registry=reg).set(value)
        try:
            push_to_gateway(s.pushgateway_url, job=f"chromasnap-{s.collection}", registry=reg)
        except OSError as e:
            log.warning("pushgateway push failed", extra=fields(error=str(e)))
    if s.status_resource:
        from chromasnap.compactor.statusreport import patch_compaction_status

        patch_compaction_status(s.status_resource, res)


def run_compactor(s: CompactorSettings, loop_interval: float | None = None) -> int:
    """Run once (CronJob) or every ``loop_interval`` seconds; exit 1 if the last run failed."""
    compactor = make_compactor(s)
    stop = threading.Event()
    while True:
        res = compactor.run()
        report(s, res)
        if loop_interval is None:
            return 1 if res.result == "failed" else 0
        if stop.wait(loop_interval):
            return 0


def serve(app: Any, host: str, port: int, drain_seconds: float,
          internal_port: int | None = None) -> int:
    """Serve ``app`` until SIGTERM/SIGINT, draining for ``drain_seconds`` first."""
    import socket

    from chromasnap.api.server import draining_server, uvicorn_config

    config = uvicorn_config(app, host, port)
    server = draining_server(config, app, drain_seconds)
    if internal_port is None:
        server.run()
        return 0
    # One server on two sockets: the app tells them apart by the local port.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    for p in (port, internal_port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, p))
        sockets.append(sock)
    server.run(sockets=sockets)
    return 0


def _push_tokens(path: str | None) -> list[str]:
    from chromasnap.api.auth import load_auth_tokens

    return load_auth_tokens(path, env=None) if path else []


def build_writer_app(s: WriterSettings) -> Any:
    """The writer's ASGI app: validation, group commit, notifications to readers."""
    from chromasnap.api.app import ChromaAPI
    from chromasnap.api.auth import load_auth_tokens
    from chromasnap.engine.validation import Limits
    from chromasnap.writer.backend import CollectionModel, Notifier, WriterBackend
    from chromasnap.writer.fanout import Fanout
    from chromasnap.writer.groupcommit import FlushWindow, GroupCommitWriter, process_writer_id

    store = open_store(s.bucket_url, s.s3_endpoint_url)
    tokens = load_auth_tokens(s.auth_token_file)
    push = _push_tokens(s.push_token_file)
    urls = [u for u in (s.notify_urls or "").split(",") if u.strip()]
    notifier = Notifier(urls, s.notify_dns, push[0] if push else None)
    writer_id = process_writer_id(s.writer_id)
    fanout = Fanout(store, writer_id, s.advertised(s.host, s.port), s.freshness_timing(),
                    push[0] if push else None,
                    best_effort=notifier if (urls or s.notify_dns) else None)
    writer = GroupCommitWriter(
        store,
        Limits(s.dimension, s.max_request_records, s.max_request_bytes),
        writer_id,
        FlushWindow(s.flush_max_records, s.flush_max_bytes, s.flush_max_delay_ms / 1000),
        on_durable=fanout, admit=fanout.admit,
    )
    log.info("writer starting", extra=fields(writer=writer.writer_id, port=s.port,
                                             auth=bool(tokens), notify=bool(urls or s.notify_dns)))
    return ChromaAPI(
        write=WriterBackend(writer), collection_model=CollectionModel(store), auth_tokens=tokens,
        role="writer", max_body_bytes=s.max_request_bytes, ready=fanout.ready,
        leases=fanout, push_tokens=push,
        on_startup=[fanout.start, writer.start],
        on_shutdown=[writer.stop, fanout.stop, notifier.aclose],
    )


def run_writer(s: WriterSettings) -> int:
    """Serve the writer until terminated."""
    return serve(build_writer_app(s), s.host, s.port, s.drain_seconds)


def build_reader_app(s: ReaderSettings) -> Any:
    """The reader's ASGI app, plus the background loop that polls pointer and tail."""
    import asyncio

    from chromasnap.api.app import ChromaAPI
    from chromasnap.api.auth import load_auth_tokens
    from chromasnap.config import ReadLevel
    from chromasnap.reader.poller import Poller
    from chromasnap.reader.replica import open_replica
    from chromasnap.storage import deltas

    store = open_store(s.bucket_url, s.s3_endpoint_url)
    tokens = load_auth_tokens(s.auth_token_file)
    replica = open_replica(store, Path(s.cache_dir), s.dimension,
                           fresh=s.read_level == ReadLevel.FRESH,
                           cache_max_bytes=s.cache_max_bytes,
                           read_after_timeout_s=s.read_after_timeout_seconds,
                           fold_min_rows=s.fold_min_rows)
    reader, tail, backend = replica.reader, replica.tail, replica.backend
    push = _push_tokens(s.push_token_file)
    freshness = None
    if tail is not None:
        from chromasnap.reader.freshness import Freshness

        freshness = Freshness(store, s.advertised(s.host, s.internal_port or s.port),
                              s.freshness_timing(), tail.poll, lambda: tail.listed_at,
                              push[0] if push else None)
        backend.freshness = freshness

    poller = Poller(replica.poll_once, s.poll_interval_seconds)
    fold_stop = threading.Event()
    folder = threading.Thread(target=reader.run_folds, args=(fold_stop,), name="reader-fold",
                              daemon=True)

    async def start() -> None:
        poller.start()
        if freshness is not None:
            freshness.start()
        if s.fold_segments:
            folder.start()

    async def shutdown() -> None:
        fold_stop.set()
        await asyncio.to_thread(poller.stop)
        if freshness is not None:
            await asyncio.to_thread(freshness.stop)
        reader.close()

    async def on_delta(name: str, data: bytes) -> bool:
        if tail is None:
            return False
        try:
            return await asyncio.to_thread(tail.confirm, name, data)
        except Exception:
            if freshness is not None:
                # Not taken, so this writer's lease cannot hold: LIST before the next read.
                freshness.delta_refused(deltas.parse_name(name).writer)
            raise

    log.info("reader starting", extra=fields(port=s.port, read_level=s.read_level.value,
                                             auth=bool(tokens), writer_url=s.writer_url))
    return ChromaAPI(
        read=backend, forward_writes_to=s.writer_url, auth_tokens=tokens, ready=reader.ready,
        role="reader", on_startup=[start], on_shutdown=[shutdown], on_delta=on_delta,
        push_tokens=push, internal_port=s.internal_port,
        ready_note=lambda: (f"stale: snapshot refresh failing ({poller.failures} attempts): "
                            f"{reader.last_error}") if poller.failures else None,
    )


def run_reader(s: ReaderSettings) -> int:
    """Serve the reader until terminated."""
    from chromasnap.engine.chromadir import limit_malloc_arenas

    # Before any thread allocates: a reader's memory then follows what it serves.
    limit_malloc_arenas()
    return serve(build_reader_app(s), s.host, s.port, s.drain_seconds, s.internal_port)


def build_pool_app(bucket_url: str, endpoint_url: str | None, opts: PoolOptions, *,
                   compact_every_s: float = 5.0, poll_interval_s: float = 1.0,
                   auth_tokens: Mapping[str, TokenScope | None] | None = None,
                   status_resource: str | None = None, declare_every_s: float = 2.0) -> Any:
    """A pool's ASGI app: Chroma's whole API over
    one bucket root, with a compaction pass over the collections written to every
    ``compact_every_s``, the reclaiming of deleted collections' bytes, and a poll of
    the write batches (other processes' writes) and the loaded collections every
    ``poll_interval_s``. With ``status_resource`` (a ChromaDatabase's
    ``<namespace>/<name>``), the pool's totals go into its status after each pass,
    and the collections ChromaCollections declare in it are kept in step every
    ``declare_every_s`` (:mod:`chromasnap.pool.declared`)."""
    from chromasnap.api.app import ChromaAPI
    from chromasnap.pool.process import Intervals, PoolProcess

    pool = PoolProcess(open_store(bucket_url, endpoint_url), bucket_url, endpoint_url, opts,
                       Intervals(compact=compact_every_s, poll=poll_interval_s,
                                 declare=declare_every_s), status_resource)
    log.info("pool starting", extra=fields(bucket=bucket_url, max_loaded=opts.max_loaded))
    return ChromaAPI(catalog=pool.service, role="pool", ready=pool.started.is_set,
                     token_scopes=auth_tokens, max_body_bytes=opts.max_request_bytes,
                     on_startup=[pool.start], on_shutdown=[pool.shutdown])


def run_pool(s: PoolSettings) -> int:
    """Serve a pool until terminated."""
    from chromasnap.api.auth import load_scoped_tokens
    from chromasnap.engine.chromadir import limit_malloc_arenas
    from chromasnap.pool.member import PoolOptions
    from chromasnap.writer.groupcommit import FlushWindow

    limit_malloc_arenas()
    opts = PoolOptions(
        cache_dir=Path(s.cache_dir), identity=s.identity, max_loaded=s.max_loaded,
        max_loaded_bytes=s.max_loaded_bytes, memory_budget_bytes=s.memory_budget_bytes,
        compaction_concurrency=s.compaction_concurrency,
        flush=FlushWindow(s.flush_max_records, s.flush_max_bytes, s.flush_max_delay_ms / 1000),
        delta_grace_seconds=s.delta_grace_seconds, max_request_bytes=s.max_request_bytes,
        retain_snapshots=s.retain_snapshots, recovery_window_seconds=s.recovery_window_seconds)
    app = build_pool_app(s.bucket_url, s.s3_endpoint_url, opts,
                         compact_every_s=s.compact_every_seconds,
                         auth_tokens=load_scoped_tokens(s.auth_token_file),
                         status_resource=s.status_resource)
    return serve(app, s.host, s.port, s.drain_seconds)
