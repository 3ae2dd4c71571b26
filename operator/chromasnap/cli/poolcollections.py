"""``chromasnap pool-collections``: the collections of a pool root, paged and sorted.

Names, tenants, databases, creation times and dimensions come from the pool's
catalog (``catalog/`` of the root: one LIST and a few GETs, however many collections).
Records and bytes are each collection's current version, as the compaction passes
recorded it (``status/collections/``: sixteen GETs for the whole pool,
:mod:`chromasnap.pool.published`); a collection no pass recorded is read from its
``pointer.json`` and manifest under ``collections/<id>/`` (two GETs, made
concurrently), only for the page shown unless the sort needs every collection's
(``--sort records|bytes``). Pending deltas and failures come from the last
compaction pass's summary (``status/compaction.json``), which names only the
collections with the most pending deltas (up to 10) and the failing ones: for any
other collection the pending count is unknown (``None``, shown as ``-``).

The sorting, paging and rendering are pure functions; ``kubectl chromasnap
collections`` runs this command in a child process with the pool's credentials
and renders its ``--json`` output with :func:`render`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from chromasnap.pool.passreport import STATUS_KEY
from chromasnap.pool.published import Published, PublishedIndex, read_one
from chromasnap.storage.catalog import PoolCatalog
from chromasnap.storage.store import NotFound, ObjectStore

SORT_KEYS = ("name", "created", "records", "bytes", "pending", "used")
#: Sorts that need every collection's recorded version, not only the page's.
SNAPSHOT_SORTS = frozenset({"records", "bytes", "used"})
DEFAULT_LIMIT = 50
#: Above this many snapshot reads a progress bar is drawn (on an interactive stderr).
PROGRESS_ABOVE = 50
READ_WORKERS = 10
READER_IDENTITY = "chromasnap-pool-collections"


@dataclass
class CollectionRow:
    """One collection of the pool, as the listing shows it (JSON keys in camelCase)."""

    id: str
    name: str
    tenant: str
    database: str
    createdAt: str
    dimension: int | None = None
    space: str | None = None
    #: HNSW settings Chroma stored, as a ChromaCollection names them (m, constructionEf,
    #: searchEf); only those set.
    hnsw: dict[str, int] | None = None
    version: str | None = None
    records: int | None = None
    bytes: int | None = None
    snapshotCreatedAt: str | None = None
    #: when a pool process last served a read or write of it, as its last pass recorded
    usedAt: str | None = None
    pendingDeltas: int | None = None
    failing: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)


def _space(configuration_json: Mapping[str, Any]) -> str | None:
    hnsw = configuration_json.get("hnsw") or {}
    spann = configuration_json.get("spann") or {}
    space = hnsw.get("space") or spann.get("space")
    return str(space) if space else None


_HNSW_KEYS = (("max_neighbors", "m"), ("ef_construction", "constructionEf"),
              ("ef_search", "searchEf"))


def _hnsw(configuration_json: Mapping[str, Any]) -> dict[str, int] | None:
    hnsw = configuration_json.get("hnsw") or {}
    out = {ours: int(hnsw[theirs]) for theirs, ours in _HNSW_KEYS
           if hnsw.get(theirs) is not None}
    return out or None


def catalog_rows(state: PoolCatalog, *, tenant: str | None = None,
                 database: str | None = None, name: str | None = None) -> list[CollectionRow]:
    """The live collections of the catalog, optionally of one tenant, database or name
    (pure; in (tenant, database, name, id) order)."""
    rows = []
    for (t, d), db in state.databases.items():
        if (tenant is not None and t != tenant) or (database is not None and d != database):
            continue
        for entry in db.by_id.values():
            if name is not None and entry.name != name:
                continue
            rows.append(CollectionRow(
                id=entry.id, name=entry.name, tenant=entry.tenant, database=entry.database,
                createdAt=entry.created_at.isoformat(), dimension=entry.dimension,
                space=_space(entry.configuration_json),
                hnsw=_hnsw(entry.configuration_json)))
    rows.sort(key=lambda r: (r.tenant, r.database, r.name, r.id))
    return rows


def apply_pass_status(rows: Iterable[CollectionRow], summary: Mapping[str, Any] | None) -> None:
    """Fill ``pendingDeltas`` and ``failing`` from the last pass's summary (pure).

    The collections it names get their count. When it names every collection it left
    pending (``pendingCollections`` of them), every other collection that existed at
    the pass had none then (0); otherwise their count is unknown (``None``).
    """
    if not summary:
        return
    listed = summary.get("mostPending") or []
    pending = {str(p.get("id")): int(p.get("pendingDeltas") or 0) for p in listed}
    complete = int(summary.get("pendingCollections") or 0) <= len(listed)
    at = _when(summary.get("at"))
    failing = {str(f.get("id")): str(f.get("reason") or "failed")
               for f in summary.get("failing") or []}
    for r in rows:
        if r.id in pending:
            r.pendingDeltas = pending[r.id]
        elif complete and at is not None and _created(r) <= at:
            r.pendingDeltas = 0
        if r.id in failing:
            r.failing = failing[r.id]
            pd = next((int(f["pendingDeltas"]) for f in summary.get("failing") or []
                       if f.get("id") == r.id and f.get("pendingDeltas") is not None), None)
            if pd is not None and r.pendingDeltas is None:
                r.pendingDeltas = pd


def _when(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _created(r: CollectionRow) -> datetime:
    return datetime.fromisoformat(r.createdAt)


_KEYS: dict[str, Callable[[CollectionRow], Any]] = {
    "name": lambda r: r.name,
    "created": _created,
    # no version yet: 0 records, 0 bytes
    "records": lambda r: r.records or 0,
    "bytes": lambda r: r.bytes or 0,
    # unknown pending counts sort below every known one (0 included)
    "pending": lambda r: -1 if r.pendingDeltas is None else r.pendingDeltas,
    # never used since the passes record it: oldest
    "used": lambda r: r.usedAt or "",
}


def sort_rows(rows: Sequence[CollectionRow], key: str = "name",
              desc: bool = False) -> list[CollectionRow]:
    """``rows`` by ``key`` (one of :data:`SORT_KEYS`); ties keep (tenant, database, name,
    id) order, also with ``desc`` (pure)."""
    if key not in _KEYS:
        raise ValueError(f"unknown sort key {key!r}: use one of {', '.join(SORT_KEYS)}")
    base = sorted(rows, key=lambda r: (r.tenant, r.database, r.name, r.id))
    # Python's sort is stable also with reverse=True: ties stay in the base order.
    return sorted(base, key=_KEYS[key], reverse=desc)


def page_rows(rows: Sequence[CollectionRow], limit: int | None,
              offset: int = 0) -> list[CollectionRow]:
    """``limit`` rows from ``offset`` (``None`` or 0: all the rest) (pure)."""
    if offset < 0:
        raise ValueError("offset must be >= 0")
    end = None if not limit else offset + limit
    return list(rows[offset:end])


def _fill(row: CollectionRow, snap: Published | None) -> None:
    if snap is None:
        row.records, row.bytes = 0, 0
        return
    row.version, row.records, row.bytes = snap.version, snap.records, snap.bytes
    row.snapshotCreatedAt, row.usedAt = snap.created_at, snap.used_at


def _read_one(store: ObjectStore, row: CollectionRow) -> None:
    try:
        snap = read_one(store, row.id)
    except NotFound as e:
        row.error = f"manifest missing: {e}"
        return
    except Exception as e:
        row.error = f"{e.__class__.__name__}: {e}"
        return
    _fill(row, snap)


def read_snapshots(store: ObjectStore, rows: Sequence[CollectionRow], *,
                   workers: int = READ_WORKERS, progress: bool | None = None) -> None:
    """Fill version, records and bytes of ``rows`` from what the passes recorded, and
    the others' from each collection's pointer and manifest, ``workers`` at a time; a
    bar on stderr for more than :data:`PROGRESS_ABOVE` of those (``progress=None``:
    only on an interactive stderr)."""
    recorded = PublishedIndex(store).read() if rows else {}
    for row in rows:
        if row.id in recorded:
            _fill(row, recorded[row.id])
    rows = [row for row in rows if row.id not in recorded]
    if not rows:
        return
    from chromasnap.storage.progress import progress_enabled

    show = len(rows) > PROGRESS_ABOVE and progress_enabled(progress)
    with ThreadPoolExecutor(max_workers=min(workers, len(rows))) as pool:
        futures = [pool.submit(_read_one, store, r) for r in rows]
        if not show:
            for f in futures:
                f.result()
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("reading collection manifests", total=len(rows))
            for f in as_completed(futures):
                f.result()
                bar.advance(task)


def read_pass_status(store: ObjectStore) -> dict[str, Any] | None:
    """The last compaction pass's summary, if any pass wrote one."""
    try:
        data = store.get(STATUS_KEY).data
    except NotFound:
        return None
    out = json.loads(data)
    return out if isinstance(out, dict) else None


def listing(store: ObjectStore, *, sort: str = "name", desc: bool = False,
            tenant: str | None = None, database: str | None = None, name: str | None = None,
            limit: int | None = DEFAULT_LIMIT, offset: int = 0, sizes: bool = True,
            progress: bool | None = None) -> dict[str, Any]:
    """One page of the pool's collections, as ``--json`` prints it."""
    from chromasnap.storage.cataloglog import CatalogLog

    catalog = CatalogLog(store, identity=READER_IDENTITY)
    rows = catalog.view(lambda s: catalog_rows(s, tenant=tenant, database=database, name=name))
    summary = read_pass_status(store)
    apply_pass_status(rows, summary)
    if sort in SNAPSHOT_SORTS:
        read_snapshots(store, rows, progress=progress)
    shown = page_rows(sort_rows(rows, sort, desc), limit, offset)
    if sizes and sort not in SNAPSHOT_SORTS:
        read_snapshots(store, shown, progress=progress)
    last = None
    if summary:
        last = {k: summary.get(k) for k in ("at", "collections", "pendingCollections",
                                            "failingCollections")}
    return {"url": store.url, "total": len(rows), "offset": offset, "limit": limit or None,
            "sort": sort, "desc": desc, "tenant": tenant, "database": database,
            "lastPass": last, "collections": [r.to_dict() for r in shown]}


def add_listing_arguments(parser: argparse.ArgumentParser) -> None:
    """The paging, sorting and filtering options ``chromasnap pool-collections`` and
    ``kubectl chromasnap collections`` share."""
    parser.add_argument(
        "--sort", choices=SORT_KEYS, default="name",
        help="order (default name). records, bytes and used (the last read or write a "
             "pass recorded) come from what the compaction passes recorded, or each "
             "collection's manifest; pending is known only for the collections the last "
             "pass listed as most pending (up to 10, from status/compaction.json), the "
             "others show '-' and sort last")
    parser.add_argument("--desc", action="store_true", help="descending order")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"rows per page (default {DEFAULT_LIMIT}; 0: all)")
    parser.add_argument("--offset", type=int, default=0, help="rows to skip (default 0)")
    parser.add_argument("--tenant", default=None, help="only this tenant (default: all)")
    parser.add_argument("--database", default=None,
                        help="only this Chroma database (default: all)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


# --- rendering ---------------------------------------------------------------------------


def human_bytes(n: int | None) -> str:
    """``1536`` -> ``1.5KiB``; ``None`` -> ``-``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _num(v: int | None) -> str:
    return "-" if v is None else str(v)


def render(page: Mapping[str, Any]) -> str:
    """The human-readable table of a :func:`listing` page (pure)."""
    rows = [CollectionRow(**r) for r in page.get("collections") or []]
    total, offset = int(page.get("total") or 0), int(page.get("offset") or 0)
    many_dbs = len({(r.tenant, r.database) for r in rows}) > 1 or (
        page.get("tenant") is None and page.get("database") is None
        and any((r.tenant, r.database) != ("default_tenant", "default_database")
                for r in rows))
    header = ["NAME", *(["TENANT/DATABASE"] if many_dbs else []), "RECORDS", "BYTES",
              "PENDING", "DIM", "CREATED", "LAST USE", "ID"]
    table = [header]
    for r in rows:
        pending = _num(r.pendingDeltas) + (" FAILING" if r.failing else "")
        table.append([r.name, *([f"{r.tenant}/{r.database}"] if many_dbs else []),
                      "?" if r.error else _num(r.records),
                      "?" if r.error else human_bytes(r.bytes), pending,
                      _num(r.dimension), r.createdAt[:19].replace("T", " "),
                      (r.usedAt or "-")[:19].replace("T", " "), r.id])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {"RECORDS", "BYTES", "DIM"}
    lines = ["  ".join((cell.rjust(w) if header[i] in right else cell.ljust(w))
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in table]
    if not rows:
        lines = ["(no collections" + (" on this page" if total else "") + ")"]
    order = f"sorted by {page.get('sort', 'name')}" + (" descending" if page.get("desc") else "")
    if rows:
        footer = f"{offset + 1}-{offset + len(rows)} of {total} collections, {order}"
        if offset + len(rows) < total:
            footer += f"; next page: --offset {offset + len(rows)}"
    else:
        footer = f"{total} collections"
    lines += ["", footer]
    for r in rows:
        if r.failing:
            lines.append(f"FAILING {r.name} ({r.id}): {r.failing}")
        if r.error:
            lines.append(f"unreadable {r.name} ({r.id}): {r.error}")
    last = page.get("lastPass")
    if last:
        lines.append(f"PENDING: deltas as of the last compaction pass ({last.get('at')}), "
                     f"which left {last.get('pendingCollections')} collections pending and "
                     f"{last.get('failingCollections')} failing; '-': not known from it")
    else:
        lines.append("pending deltas: unknown (no compaction pass has reported yet)")
    return "\n".join(lines)
