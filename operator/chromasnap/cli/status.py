"""``chromasnap status``: what a collection root holds, for people and for machines."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from chromasnap.compactor.compaction import QUARANTINE_PREFIX
from chromasnap.storage import deltas, pointer, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import ObjectStore


@dataclass
class SnapshotSummary:
    """One retained snapshot version."""

    version: str
    seq: int
    created_at: str | None
    records: int | None
    bytes: int
    current: bool
    complete: bool  # has a valid manifest


@dataclass
class SegmentSummary:
    """One segment of the current version, in the order it applies."""

    name: str
    ops: int
    shadowing: int
    bytes: int


@dataclass
class CollectionStatus:
    """Pointer, retained versions and pending work of one collection root."""

    url: str
    collection: str | None = None
    collection_id: str | None = None
    current_version: str | None = None
    records: int | None = None
    snapshot_bytes: int | None = None
    snapshot_created_at: str | None = None
    base_version: str | None = None
    base_records: int | None = None
    base_bytes: int | None = None
    segments: list[SegmentSummary] = field(default_factory=list)
    snapshots: list[SnapshotSummary] = field(default_factory=list)
    pending_deltas: int = 0
    pending_bytes: int = 0
    applied_deltas_kept: int = 0
    quarantined_deltas: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)


def collect(store: ObjectStore) -> CollectionStatus:
    """Read the pointer, manifests and delta listing; never writes."""
    st = CollectionStatus(url=store.url)
    cur = pointer.read(store).pointer
    current: mf.Manifest | None = None
    if cur is not None:
        current = snapshots.load_manifest(store, cur.manifest)
        st.collection = current.collection.settings.name
        st.collection_id = current.collection.id
        st.current_version = current.version
        st.records = current.record_count
        st.snapshot_bytes = current.byte_size
        st.snapshot_created_at = current.created_at.isoformat()
        st.base_version = current.base_version
        st.base_records = current.base_record_count
        st.base_bytes = current.base_bytes
        st.segments = [SegmentSummary(s.name, s.ops, s.shadowing, s.byte_size)
                       for s in current.segments]
    sizes: dict[str, int] = {}
    for o in store.list(mf.SNAPSHOT_PREFIX):
        v = o.key[len(mf.SNAPSHOT_PREFIX):].split("/", 1)[0]
        sizes[v] = sizes.get(v, 0) + o.size
    for v in sorted(sizes, key=mf.version_seq, reverse=True):
        try:
            m: mf.Manifest | None = snapshots.load_manifest(
                store, mf.snapshot_prefix(v) + mf.MANIFEST_FILE
            )
        except mf.CorruptSnapshot:
            m = None
        st.snapshots.append(
            SnapshotSummary(
                version=v, seq=mf.version_seq(v),
                created_at=m.created_at.isoformat() if m else None,
                records=m.record_count if m else None, bytes=sizes[v],
                current=current is not None and v == current.version, complete=m is not None,
            )
        )
    applied = set(current.deltas) if current else set()
    for o in store.list(deltas.DELTA_PREFIX):
        if not deltas.is_delta_key(o.key):
            continue
        if o.key[len(deltas.DELTA_PREFIX):] in applied:
            st.applied_deltas_kept += 1
        else:
            st.pending_deltas += 1
            st.pending_bytes += o.size
    st.quarantined_deltas = sum(1 for _ in store.list(QUARANTINE_PREFIX))
    return st


def render(st: CollectionStatus) -> str:
    """A short human-readable report."""
    lines = [f"collection root: {st.url}"]
    if st.current_version is None:
        lines.append("no snapshot yet (run a compaction or `chromasnap import`)")
    else:
        lines += [
            f"collection:      {st.collection} (id {st.collection_id})",
            f"current version: {st.current_version}  created {st.snapshot_created_at}",
            f"records:         {st.records}",
            f"snapshot size:   {_human(st.snapshot_bytes or 0)}",
            f"base:            {st.base_version}  {st.base_records} records  "
            f"{_human(st.base_bytes or 0)}",
            f"segments:        {len(st.segments)}",
        ]
        lines += [f"   {g.name}  {g.ops} writes  {g.shadowing} shadowed  {_human(g.bytes)}"
                  for g in st.segments]
    lines.append(f"pending deltas:  {st.pending_deltas} ({_human(st.pending_bytes)})")
    lines.append(f"applied deltas awaiting clean-up: {st.applied_deltas_kept}")
    if st.quarantined_deltas:
        lines.append(f"QUARANTINED corrupt deltas: {st.quarantined_deltas} (see quarantine/)")
    lines.append("retained snapshots:")
    for s in st.snapshots:
        mark = "*" if s.current else " "
        extra = f"{s.records} records" if s.complete else "INCOMPLETE (no manifest)"
        lines.append(f" {mark} {s.version}  {_human(s.bytes):>10}  {extra}  {s.created_at or ''}")
    return "\n".join(lines)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"
