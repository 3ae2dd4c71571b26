"""The pure parts of ``kubectl chromasnap collections / status / export / logs / report`` on
a ChromaDatabase: catalog rows, sorting, paging, the last pass's pending counts, rendering,
name resolution, the restore source, the status page, the pods and children a database's
logs and support bundle take, the bundle itself (on a fake API server) and the argument
parser. The commands run against a real API server and a real pool in
``tests/integration/cli/test_kubectl_pool.py``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from chromasnap.cli import poolcollections as pc
from chromasnap.cli.main import build_parser as data_parser
from chromasnap.cli.plugin import bucket, logs, pool, report
from chromasnap.cli.plugin.kube import PluginError
from chromasnap.cli.plugin.main import build_parser
from chromasnap.operator.crd import ChromaCollection
from chromasnap.storage import catalog as cat
from chromasnap.storage.local import LocalStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def cid(n: int) -> str:
    return str(uuid.UUID(int=n))


def catalog() -> cat.PoolCatalog:
    state = cat.PoolCatalog()
    for t, d in (("default_tenant", "default_database"), ("acme", "prod")):
        state.databases[(t, d)] = cat.Database(cat.DatabaseEntry(
            id=str(uuid.uuid4()), name=d, tenant=t, created_at=T0))
    for n, (t, d, name, hours) in enumerate([
            ("default_tenant", "default_database", "charlie", 1),
            ("default_tenant", "default_database", "alpha", 3),
            ("default_tenant", "default_database", "bravo", 2),
            ("acme", "prod", "alpha", 0)]):
        state.place(cat.CollectionEntry(
            id=cid(n + 1), name=name, tenant=t, database=d, dimension=8,
            configuration_json={"hnsw": {"space": "cosine", "max_neighbors": 32,
                                         "ef_construction": 200}},
            created_at=T0 + timedelta(hours=hours)))
    return state


def test_catalog_rows_filter_by_tenant_database_and_name() -> None:
    rows = pc.catalog_rows(catalog())
    assert [(r.tenant, r.name) for r in rows] == [
        ("acme", "alpha"), ("default_tenant", "alpha"), ("default_tenant", "bravo"),
        ("default_tenant", "charlie")]
    assert rows[0].space == "cosine" and rows[0].dimension == 8
    assert rows[0].hnsw == {"m": 32, "constructionEf": 200}
    assert [r.name for r in pc.catalog_rows(catalog(), tenant="acme")] == ["alpha"]
    assert [r.name for r in pc.catalog_rows(catalog(), database="default_database")] == [
        "alpha", "bravo", "charlie"]
    assert [r.tenant for r in pc.catalog_rows(catalog(), name="alpha")] == [
        "acme", "default_tenant"]
    assert pc.catalog_rows(catalog(), tenant="nobody") == []


def rows_with_records() -> list[pc.CollectionRow]:
    rows = pc.catalog_rows(catalog(), tenant="default_tenant")
    for r, n in zip(rows, (10, 30, 20), strict=True):  # alpha, bravo, charlie
        r.records, r.bytes = n, n * 1024
    rows[0].usedAt = "2026-12-07T10:00:00Z"  # charlie: never used since recorded
    rows[1].usedAt = "2026-12-07T09:00:00Z"
    return rows


@pytest.mark.parametrize(("key", "desc", "expected"), [
    ("name", False, ["alpha", "bravo", "charlie"]),
    ("name", True, ["charlie", "bravo", "alpha"]),
    ("created", False, ["charlie", "bravo", "alpha"]),
    ("created", True, ["alpha", "bravo", "charlie"]),
    ("records", True, ["bravo", "charlie", "alpha"]),
    ("bytes", False, ["alpha", "charlie", "bravo"]),
    ("used", True, ["alpha", "bravo", "charlie"]),
    ("used", False, ["charlie", "bravo", "alpha"]),
])
def test_sort_rows(key: str, desc: bool, expected: list[str]) -> None:
    assert [r.name for r in pc.sort_rows(rows_with_records(), key, desc)] == expected


def test_sort_ties_keep_name_order_also_descending() -> None:
    rows = rows_with_records()
    for r in rows:
        r.records = 5
    rows[2].records = None  # no version yet: sorts as 0
    assert [r.name for r in pc.sort_rows(rows, "records", desc=True)] == [
        "alpha", "bravo", "charlie"]
    assert [r.name for r in pc.sort_rows(rows, "records")] == ["charlie", "alpha", "bravo"]
    with pytest.raises(ValueError, match="unknown sort key"):
        pc.sort_rows(rows, "size")


def test_page_rows() -> None:
    rows = pc.sort_rows(rows_with_records(), "name")
    assert [r.name for r in pc.page_rows(rows, 2)] == ["alpha", "bravo"]
    assert [r.name for r in pc.page_rows(rows, 2, 2)] == ["charlie"]
    assert pc.page_rows(rows, 2, 5) == []
    assert len(pc.page_rows(rows, 0)) == 3 and len(pc.page_rows(rows, None, 1)) == 2
    with pytest.raises(ValueError):
        pc.page_rows(rows, 1, -1)


def test_pending_from_the_last_pass() -> None:
    rows = rows_with_records()  # alpha 3h, bravo 2h, charlie 1h after T0
    at = (T0 + timedelta(hours=2, minutes=30)).isoformat()
    summary = {"at": at, "pendingCollections": 1, "failingCollections": 1,
               "mostPending": [{"id": rows[1].id, "pendingDeltas": 7}],
               "failing": [{"id": rows[2].id, "reason": "StorageError: boom"}]}
    pc.apply_pass_status(rows, summary)
    by = {r.name: r for r in rows}
    assert by["bravo"].pendingDeltas == 7
    # every pending collection is listed: the others had none at the pass...
    assert by["charlie"].pendingDeltas == 0 and by["charlie"].failing == "StorageError: boom"
    # ...except one created after it
    assert by["alpha"].pendingDeltas is None
    order = [r.name for r in pc.sort_rows(rows, "pending", desc=True)]
    assert order == ["bravo", "charlie", "alpha"]  # unknown sorts last


def test_pending_unknown_when_the_pass_listed_only_some() -> None:
    rows = rows_with_records()
    summary = {"at": (T0 + timedelta(days=1)).isoformat(), "pendingCollections": 40,
               "mostPending": [{"id": rows[0].id, "pendingDeltas": 3}]}
    pc.apply_pass_status(rows, summary)
    assert [r.pendingDeltas for r in rows] == [3, None, None]
    pc.apply_pass_status(rows_with_records(), None)  # no pass yet: nothing to fill


def page(rows: list[pc.CollectionRow], **kw: Any) -> dict[str, Any]:
    base = {"url": "s3://b/p", "total": 3, "offset": 0, "limit": 2, "sort": "records",
            "desc": True, "tenant": None, "database": None, "lastPass": None,
            "collections": [r.to_dict() for r in rows]}
    return base | kw


def test_render_table_footer_and_next_page() -> None:
    rows = pc.sort_rows(rows_with_records(), "records", desc=True)[:2]
    rows[0].pendingDeltas = 4
    rows[1].failing = "boom"
    text = pc.render(page(rows))
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "RECORDS", "BYTES", "PENDING", "DIM", "CREATED", "LAST",
                                "USE", "ID"]
    assert lines[1].split()[:4] == ["bravo", "30", "30.0KiB", "4"]
    assert lines[2].split()[:5] == ["charlie", "20", "20.0KiB", "-", "FAILING"]
    assert "1-2 of 3 collections, sorted by records descending; next page: --offset 2" in text
    assert f"FAILING charlie ({rows[1].id}): boom" in text
    assert "no compaction pass has reported yet" in text
    # several databases: a column for them
    many = pc.catalog_rows(catalog())[:2]
    text = pc.render(page(many, sort="name", desc=False, total=2))
    assert "TENANT/DATABASE" in text and "acme/prod" in text and "next page" not in text
    assert pc.render(page([], total=3, offset=5)).startswith("(no collections on this page)")


def test_human_bytes() -> None:
    assert [pc.human_bytes(n) for n in (None, 0, 1023, 1536, 5 * 2**30)] == [
        "-", "0B", "1023B", "1.5KiB", "5.0GiB"]


def test_listing_reads_the_catalog_and_the_page_manifests(tmp_path: Any) -> None:
    """A pool root with a catalog written by the real CatalogLog, and no versions yet."""
    from chromasnap.storage.cataloglog import CatalogLog

    store = LocalStore(f"file://{tmp_path}")
    log = CatalogLog(store, identity="test")
    state = catalog()

    for db in state.databases.values():
        log.change(lambda s, t=db.entry.tenant: (cat.decide_create_tenant(s, t, T0), None))
        log.change(lambda s, e=db.entry: (cat.decide_create_database(s, e), None))
        for entry in db.by_id.values():
            log.change(lambda s, e=entry: cat.decide_create_collection(s, e,
                                                                       get_or_create=False))
    out = pc.listing(store, sort="name", limit=2, offset=1)
    assert out["total"] == 4
    assert [(r["tenant"], r["name"]) for r in out["collections"]] == [
        ("default_tenant", "alpha"), ("default_tenant", "bravo")]
    assert all(r["records"] == 0 and r["version"] is None for r in out["collections"])
    # more rows than PROGRESS_ABOVE, with the bar forced on: every row still read
    many = [pc.CollectionRow(id=cid(100 + i), name=f"c{i}", tenant="t", database="d",
                             createdAt=T0.isoformat()) for i in range(pc.PROGRESS_ABOVE + 5)]
    pc.read_snapshots(store, many, progress=True)
    assert all(r.records == 0 and r.error is None for r in many)
    # what a pass recorded is used as it is: no pointer to read for it
    from chromasnap.pool.published import Published, PublishedIndex

    PublishedIndex(store).record({cid(100): Published(
        version="0000000003-abcdef12", records=7, bytes=99, created_at="2026-12-01T00:00:00Z")},
        lambda cid, p: True)
    again = [pc.CollectionRow(id=cid(100 + i), name=f"c{i}", tenant="t", database="d",
                              createdAt=T0.isoformat()) for i in range(2)]
    pc.read_snapshots(store, again)
    assert [(r.version, r.records, r.bytes) for r in again] == [
        ("0000000003-abcdef12", 7, 99), (None, 0, 0)]
    only = pc.listing(store, name="alpha", tenant="acme", sizes=False, limit=None)
    assert [r["id"] for r in only["collections"]] == [cid(4)]
    assert only["collections"][0]["records"] is None


def test_pick_resolves_one_name_or_says_why_not() -> None:
    rows = [r.to_dict() for r in pc.catalog_rows(catalog(), name="alpha")]
    assert pool.pick(rows[1:], "alpha", "team-a", tenant=None, database=None)["id"] == cid(2)
    with pytest.raises(PluginError, match="pass --tenant and --database"):
        pool.pick(rows, "alpha", "team-a", tenant=None, database=None)
    with pytest.raises(PluginError, match="has no collection 'zulu' in acme/"):
        pool.pick([], "zulu", "team-a", tenant="acme", database=None)


def database() -> dict[str, Any]:
    return {"apiVersion": "chromasnap.dev/v1alpha1", "kind": "ChromaDatabase",
            "metadata": {"name": "team-a", "namespace": "search", "generation": 2},
            "spec": {"storage": {"bucket": "vectors", "prefix": "pools/team-a",
                                 "endpoint": "http://minio:9000",
                                 "credentialsSecretRef": {"name": "s3"}}},
            "status": {"observedGeneration": 2, "endpoint": "http://team-a.search.svc:8000",
                       "pool": {"replicas": 2, "ready": 1}, "collections": 3, "databases": 1,
                       "pendingCollections": 1, "failingCollections": 1,
                       "failing": [{"id": cid(2), "reason": "StorageError: slow down"}],
                       "mostPending": [{"id": cid(1), "pendingDeltas": 12}],
                       "lastPass": {"time": "2026-12-01T00:00:00Z", "seconds": 0.4,
                                    "collections": 2, "outcomes": {"succeeded": 1,
                                                                   "failed": 1},
                                    "identity": "team-a-7d9-x"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "PoolReady",
                                       "message": "1 pod serves",
                                       "lastTransitionTime": "2026-12-01T00:00:00Z"}]}}


def test_collection_storage_and_restore_source() -> None:
    db = database()
    st = pool.collection_storage(db, cid(1))
    assert st.url == f"s3://vectors/pools/team-a/collections/{cid(1)}"
    assert (st.secret, st.endpoint) == ("s3", "http://minio:9000")
    row = pc.catalog_rows(catalog(), name="bravo")[0].to_dict()
    source = pool.collection_source(db, row)
    m = bucket.restore_manifest(source, "bravo-copy", prefix="pools/bravo-copy")
    assert m["metadata"]["labels"] == {"chromasnap.dev/restored-from": "team-a"}
    assert m["spec"]["collection"] == {"name": "bravo", "dimension": 8, "space": "cosine",
                                       "hnsw": {"m": 32, "constructionEf": 200}}
    assert "&id" not in yaml.safe_dump(m)  # no shared parts written as YAML anchors
    assert m["spec"]["bootstrap"]["from"]["prefix"] == f"pools/team-a/collections/{cid(3)}"
    assert m["spec"]["storage"]["prefix"] == "pools/bravo-copy"
    parsed = ChromaCollection.from_body(m).spec  # valid for the operator
    assert parsed.collection.dimension == 8 and parsed.collection.hnsw.m == 32
    with pytest.raises(PluginError, match="no dimension yet"):
        pool.collection_source(db, row | {"dimension": None})


class FakeKube:
    namespace = "search"

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        assert kind == "Pod" and "app.kubernetes.io/instance=team-a" in str(selector)
        return [{"metadata": {"name": "team-a-7d9-x", "labels": {}},
                 "status": {"phase": "Running", "conditions": [
                     {"type": "Ready", "status": "True"}]}}]


def test_database_status_page() -> None:
    s = pool.collect_status(FakeKube(), "team-a", database(),  # type: ignore[arg-type]
                            names={cid(1): "docs"})
    assert s["pool"] == {"replicas": 2, "ready": 1, "desired": None}
    assert s["mostPending"] == [{"id": cid(1), "pendingDeltas": 12, "name": "docs"}]
    text = pool.render_status(s)
    assert text.splitlines()[0] == "ChromaDatabase search/team-a  s3://vectors/pools/team-a"
    assert "  Ready              True     PoolReady" in text
    assert "Endpoint:        http://team-a.search.svc:8000" in text
    assert "Pool pods:       1/2 ready" in text
    assert "Collections:     3 in 1 databases" in text
    assert f"docs ({cid(1)}): 12 deltas" in text
    assert f"{cid(2)}: StorageError: slow down" in text
    assert "Failing:         1 collections" in text
    assert "over 2 collections (succeeded 1, failed 1); by team-a-7d9-x" in text
    assert "Pods:\n  team-a-7d9-x  Running, ready, 0 restarts" in text


def test_parsers() -> None:
    p = build_parser()
    a = p.parse_args(["collections", "team-a", "--sort", "records", "--desc", "--limit", "5",
                      "--tenant", "acme"])
    assert (a.sort, a.desc, a.limit, a.offset, a.tenant, a.database) == (
        "records", True, 5, 0, "acme", None)
    e = p.parse_args(["export", "team-a", "--collection", "docs", "--out", "out-x",
                      "--at", "2026-12-01T00:00:00Z"])
    assert (e.collection, e.out, e.path, e.at) == ("docs", "out-x", None, "2026-12-01T00:00:00Z")
    old = p.parse_args(["export", "docs", "out-y"])  # a ChromaCollection, as before
    assert (old.path, old.collection) == ("out-y", None)
    r = p.parse_args(["restore", "team-a", "--collection", "docs", "--into", "docs-2"])
    assert (r.collection, r.into) == ("docs", "docs-2")
    d = data_parser().parse_args(["pool-collections", "s3://b/p", "--json", "--sort", "bytes"])
    assert (d.sort, d.limit, d.json) == ("bytes", 50, True)


# --- logs and report of a ChromaDatabase ---------------------------------------------------


def test_logs_select_the_pool_deployments_pods_and_refuse_other_roles() -> None:
    from chromasnap.operator.database import ChromaDatabase
    from chromasnap.operator.settings import OperatorSettings
    from chromasnap.operator.specs.database import deployment

    dep = deployment(ChromaDatabase.from_body(database() | {"metadata": {
        "name": "team-a", "namespace": "search", "uid": "u-1"}}), OperatorSettings())
    wanted = dep["spec"]["selector"]["matchLabels"]
    for role in (None, "pool"):
        sel = logs.pod_selector("ChromaDatabase", "team-a", role)
        assert dict(kv.split("=") for kv in sel.split(",")) == wanted
    assert wanted.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    with pytest.raises(PluginError, match="is a ChromaDatabase: all its pods are pool pods") \
            as e:
        logs.pod_selector("ChromaDatabase", "team-a", "reader")
    assert e.value.exit_code == 2
    # a collection's roles are as before, and "pool" is not one of them
    assert logs.pod_selector("ChromaCollection", "docs", "reader").endswith(
        "app.kubernetes.io/component=reader")
    with pytest.raises(PluginError, match="--role pool is a ChromaDatabase's"):
        logs.pod_selector("ChromaCollection", "docs", "pool")
    a = build_parser().parse_args(["logs", "team-a", "--role", "pool"])
    assert a.role == "pool"


def test_report_lists_every_child_of_the_database_and_only_its() -> None:
    from chromasnap.operator.database import ChromaDatabase
    from chromasnap.operator.settings import OperatorSettings
    from chromasnap.operator.specs.database import database_children

    body = database()
    body["spec"]["networkPolicy"] = {"enabled": True}
    db = ChromaDatabase.from_body(body | {"metadata": {"name": "team-a", "uid": "u-1",
                                                       "namespace": "search"}})
    children = database_children(db, OperatorSettings())
    sel = dict(kv.split("=") for kv in report.children_selector("ChromaDatabase",
                                                                "team-a").split(","))
    for child in children:
        assert sel.items() <= child["metadata"]["labels"].items(), child["kind"]
        assert child["kind"] in report.CHILD_KINDS
    # a collection of the same name has no pool component: not in the database's bundle
    assert "app.kubernetes.io/component" not in report.children_selector(
        "ChromaCollection", "team-a")


def test_database_bucket_summary_names_only_what_the_last_pass_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    creds = bucket.Credentials({}, ["sk-value"], "using the credentials of Secret 's3'")
    monkeypatch.setattr(pool, "credentials_for", lambda *a, **k: creds)
    rows = [{"id": cid(1), "name": "a", "pendingDeltas": 12, "failing": None},
            {"id": cid(2), "name": "b", "pendingDeltas": None, "failing": "StorageError"},
            {"id": cid(3), "name": "c", "pendingDeltas": 0, "failing": None},
            {"id": cid(4), "name": "d", "pendingDeltas": None, "failing": None}]
    asked: dict[str, Any] = {}

    def listing(kube: Any, db: Any, **kw: Any) -> dict[str, Any]:
        asked.update(kw)
        return {"url": "s3://vectors/pools/team-a", "total": 4, "collections": rows,
                "lastPass": {"at": "2026-12-01T00:00:00Z", "pendingCollections": 1,
                             "failingCollections": 1, "collections": 2}}

    monkeypatch.setattr(pool, "list_collections", listing)
    summary, note, used = pool.bucket_summary(None, database())  # type: ignore[arg-type]
    assert summary == {"url": "s3://vectors/pools/team-a", "collections": 4,
                       "lastPass": {"at": "2026-12-01T00:00:00Z", "pendingCollections": 1,
                                    "failingCollections": 1, "collections": 2},
                       "named": rows[:2]}
    assert (note, used) == (creds.note, ["sk-value"])
    # the credentials read once, handed to the child; the catalog only, every collection;
    # the child's error kept for the bundle's README
    assert asked["creds"] is creds and asked["catalog_only"] and asked["limit"] == 0
    assert asked["capture_errors"]

    def failing(kube: Any, db: Any, **kw: Any) -> dict[str, Any]:
        raise PluginError("`chromasnap pool-collections s3://vectors/pools/team-a` failed")

    monkeypatch.setattr(pool, "list_collections", failing)
    summary, note, used = pool.bucket_summary(None, database())  # type: ignore[arg-type]
    assert summary is None and "failed" in note and used == ["sk-value"]


class BundleKube:
    """What ``report`` reads of the API server, for a ChromaDatabase ``team-a``."""

    namespace, server, context = "search", "https://k8s:6443", "dev"

    def __init__(self, db: dict[str, Any]) -> None:
        self.db = db
        self.selectors: dict[str, list[str | None]] = {}

    def resource(self, name: str) -> tuple[str, dict[str, Any]]:
        assert name == "team-a"
        return "ChromaDatabase", self.db

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        self.selectors.setdefault(kind, []).append(selector)
        meta = {"namespace": "search", "labels": {}}
        if kind == "Pod":
            return [{"metadata": meta | {"name": "team-a-pool-7d9-x"},
                     "spec": {"containers": [{"name": "pool", "env": [
                         {"name": "AWS_SECRET_ACCESS_KEY", "value": "inline-secret"}]}]},
                     "status": {"phase": "Running"}}]
        if kind == "Event":
            return [{"involvedObject": {"name": "team-a-pool"}, "reason": "ScalingReplicaSet"},
                    {"involvedObject": {"name": "other"}, "reason": "Unrelated"}]
        if kind == "Deployment":
            return [{"metadata": meta | {"name": "team-a-pool", "managedFields": [{}]}}]
        return []

    def request(self, method: str, url_path: str, **_: Any) -> str:
        assert url_path == "/api/v1/namespaces/search/pods/team-a-pool-7d9-x/log"
        return "pass done with key sk-value\n"


def test_report_of_a_database(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = {"url": "s3://vectors/pools/team-a", "collections": 3, "named": []}
    monkeypatch.setattr(pool, "bucket_summary",
                        lambda *a, **k: (summary, "using the Secret", ["sk-value"]))
    monkeypatch.setattr(bucket, "bucket_summary", lambda *a, **k: pytest.fail("a collection's"))
    kube = BundleKube(database())
    errors = report.collect(kube, "team-a", tmp_path)  # type: ignore[arg-type]
    assert errors == []
    files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert files == {"README.txt", "database.yaml", "status.txt", "status.json",
                     "events.yaml", "children.yaml", "pods.yaml", "bucket.json",
                     "logs/team-a-pool-7d9-x_pool.log"}
    # the pods whose logs are read are the pool's (the status page lists them too)
    assert kube.selectors["Pod"][-1] == logs.pod_selector("ChromaDatabase", "team-a")
    assert kube.selectors["Deployment"] == [report.children_selector("ChromaDatabase",
                                                                     "team-a")]
    assert "ChromaDatabase search/team-a" in (tmp_path / "status.txt").read_text()
    assert [e["reason"] for e in yaml.safe_load((tmp_path / "events.yaml").read_text())] == [
        "ScalingReplicaSet"]
    readme = (tmp_path / "README.txt").read_text()
    assert readme.startswith("chromasnap support bundle for ChromaDatabase search/team-a")
    assert "the ChromaDatabase's credentials Secret" in readme
    text = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "sk-value" not in text and "inline-secret" not in text
    assert "managedFields" not in text
    assert f"key {report.REDACTED}" in (tmp_path / "logs/team-a-pool-7d9-x_pool.log").read_text()
