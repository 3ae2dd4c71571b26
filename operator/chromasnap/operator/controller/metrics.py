"""The operator's Prometheus exporter: per-collection series from the status it watches.

:class:`CollectionCollector` computes the gauges of every collection at scrape
time from kopf's in-memory index (no API call; the collections are read in the
event loop, where kopf updates them), in the style of kube-state-metrics.
:class:`RunCounters` counts the compaction runs the operator sees reported in
``status.lastCompaction`` (each run patches it once when it ends): by result,
lock acquisition failures, fenced runs, and a duration histogram. Counters start
at zero for every collection the operator sees, so ``increase()`` notices the
first event, and they count only runs reported while this operator process ran.

:class:`MetricsServer` serves ``/metrics`` on ``CHROMASNAP_OPERATOR_METRICS_PORT``
(8081; 0 turns it off) with aiohttp inside kopf's event loop. Failing to bind is
logged and the operator carries on: metrics never stop reconciling.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chromasnap import __version__, logs
from chromasnap.config import ENV_PREFIX
from chromasnap.operator.controller.cache import Key
from chromasnap.operator.statusmetrics import (
    COMPACTIONS,
    DURATION,
    DURATION_BUCKETS,
    FENCED,
    GAUGES,
    KEY_LABELS,
    LOCK_FAILURES,
    REASON_FENCED,
    REASON_LOCK_HELD,
    Run,
    collection_samples,
    run_of,
)
from chromasnap.resource import COMPACTION_RESULTS

log = logging.getLogger("chromasnap.operator.metrics")


class MetricsSettings(BaseSettings):
    """Where the operator serves its metrics (``CHROMASNAP_OPERATOR_METRICS_*``)."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}OPERATOR_METRICS_",
                                      extra="ignore", frozen=True)

    host: str = Field(default="0.0.0.0", description="address to listen on")
    port: int = Field(default=8081, ge=0, le=65535, description="0: serve no metrics")


@dataclass
class RunHistory:
    """What the operator counted for one collection (by uid)."""

    key: Key
    seen: tuple[str, str, str, str] | None = None
    results: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COMPACTION_RESULTS, 0))
    lock_failures: int = 0
    fenced: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    last_success: float | None = None

    def count(self, run: Run) -> None:
        """One newly reported run."""
        self.results[run.result] = self.results.get(run.result, 0) + 1
        if run.reason == REASON_LOCK_HELD:
            self.lock_failures += 1
        elif run.reason == REASON_FENCED:
            self.fenced += 1
        if run.duration is not None:
            self.buckets[bisect.bisect_left(DURATION_BUCKETS, run.duration)] += 1
            self.duration_sum += run.duration
        if run.succeeded and run.time is not None:
            self.last_success = max(run.time, self.last_success or 0.0)


class RunCounters:
    """Counts reported compaction runs per collection, from each version of its status."""

    def __init__(self) -> None:
        self.by_uid: dict[str, RunHistory] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        """Look at one version of a collection (a watch event, or at scrape time).

        The first version seen only sets the baseline (its run happened before, or while
        the operator was not running); each later new ``lastCompaction`` is one run.
        """
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if not uid:
            return
        run = run_of(body.get("status") or {})
        hist = self.by_uid.get(uid)
        if hist is None:
            hist = self.by_uid[uid] = RunHistory((str(meta.get("namespace")),
                                                  str(meta.get("name"))))
            hist.seen = run.key if run else None
            if run is not None and run.succeeded and run.time is not None:
                hist.last_success = run.time
            return
        if run is not None and run.key != hist.seen:
            hist.seen = run.key
            hist.count(run)

    def forget(self, uid: str) -> None:
        """The collection is gone."""
        self.by_uid.pop(uid, None)

    def retain(self, uids: Iterable[str]) -> None:
        """Drop every collection not in ``uids`` (deleted while a watch event was missed)."""
        keep = set(uids)
        for uid in [u for u in self.by_uid if u not in keep]:
            del self.by_uid[uid]


class CollectionCollector(Collector):
    """Yields every per-collection series (a prometheus_client custom collector)."""

    def __init__(self, collections: Callable[[], list[dict[str, Any]]], counters: RunCounters,
                 clock: Callable[[], float] = time.time) -> None:
        self.collections = collections
        self.counters = counters
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        """Compute the series from the collections as kopf's index holds them now."""
        now = self.clock()
        bodies = [b for b in self.collections() if (b.get("metadata") or {}).get("uid")]
        for b in bodies:
            self.counters.observe(b)  # a run whose watch event was coalesced still counts
        self.counters.retain(str(b["metadata"]["uid"]) for b in bodies)
        gauges = {f.name: GaugeMetricFamily(f.name, f.help, labels=[*KEY_LABELS, *f.labels])
                  for f in GAUGES}
        for b in sorted(bodies, key=lambda b: (b["metadata"].get("namespace") or "",
                                               b["metadata"].get("name") or "")):
            meta = b["metadata"]
            key = [str(meta.get("namespace")), str(meta.get("name"))]
            hist = self.counters.by_uid.get(str(meta["uid"]))
            samples = collection_samples(b, now, hist.last_success if hist else None)
            for f in GAUGES:
                fam = gauges[f.name]
                for labels, value in samples[f.name]:
                    fam.add_metric([*key, *(labels[n] for n in f.labels)], value)
        yield from gauges.values()
        yield from self._counters()
        total = GaugeMetricFamily("chromasnap_operator_collections",
                                  "ChromaCollections the operator watches")
        total.add_metric([], float(len(bodies)))
        yield total
        info = GaugeMetricFamily("chromasnap_operator_build_info",
                                 "Always 1: the operator's chromasnap version",
                                 labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info

    def _counters(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(COMPACTIONS.name, COMPACTIONS.help,
                                   labels=[*KEY_LABELS, *COMPACTIONS.labels])
        locks = CounterMetricFamily(LOCK_FAILURES.name, LOCK_FAILURES.help, labels=KEY_LABELS)
        fenced = CounterMetricFamily(FENCED.name, FENCED.help, labels=KEY_LABELS)
        duration = HistogramMetricFamily(DURATION.name, DURATION.help, labels=KEY_LABELS)
        for hist in sorted(self.counters.by_uid.values(), key=lambda h: h.key):
            key = list(hist.key)
            for result, n in sorted(hist.results.items()):
                runs.add_metric([*key, result], float(n))
            locks.add_metric(key, float(hist.lock_failures))
            fenced.add_metric(key, float(hist.fenced))
            cumulative, buckets = 0, []
            for bound, n in zip((*DURATION_BUCKETS, float("inf")), hist.buckets, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound),
                                float(cumulative)))
            duration.add_metric(key, buckets, hist.duration_sum)
        yield from (runs, locks, fenced, duration)


def registry_for(collector: Collector) -> CollectorRegistry:
    """A private registry: the per-collection series plus the process's own."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        reg.register(c)
    return reg


class MetricsServer:
    """``GET /metrics`` in the operator's event loop."""

    def __init__(self, registry: CollectorRegistry, settings: MetricsSettings) -> None:
        self.registry = registry
        self.settings = settings
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> bool:
        """Listen; ``False`` (logged) if metrics are off or the port cannot be bound."""
        if self.settings.port == 0:
            return False
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.settings.host, self.settings.port).start()
        except OSError as e:
            await runner.cleanup()
            log.warning("cannot serve operator metrics; carrying on without them",
                      extra=logs.fields(host=self.settings.host, port=self.settings.port,
                                        error=str(e)))
            return False
        self._runner = runner
        log.info("serving operator metrics", extra=logs.fields(
            host=self.settings.host, port=self.settings.port, path="/metrics"))
        return True

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
