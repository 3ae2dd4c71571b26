"""A ChromaDatabase (a pool of collections) from a workstation: its status page, its
collections, and export or restore of one of them.

The status page comes from the resource (its status, which the pool's pods patch
after each compaction pass) and its pods. Everything else reads the pool's bucket
as :mod:`chromasnap.cli.plugin.bucket` does: the ``chromasnap`` command line
(``pool-collections``, ``export``) runs in a child process with the database's
storage settings and the keys of its credentials Secret in that process's
environment only.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from chromasnap.cli.plugin.bucket import (
    Credentials,
    Storage,
    _endpoint_args,
    _overlaps,
    _restored_prefix,
    chromasnap_command,
    credentials_for,
    export_storage,
    restore_from,
)
from chromasnap.cli.plugin.kube import Kube, PluginError, condition
from chromasnap.cli.plugin.status import _age, header, pod_summary, selector
from chromasnap.resource import DATABASE_KIND
from chromasnap.storage.catalog import collection_root

DEFAULT_TENANT, DEFAULT_DATABASE = "default_tenant", "default_database"


# --- the bucket: chromasnap pool-collections ------------------------------------------


def list_collections(kube: Kube, db: Mapping[str, Any], *, sort: str = "name",
                     desc: bool = False, limit: int = 50, offset: int = 0,
                     tenant: str | None = None, database: str | None = None,
                     name: str | None = None, catalog_only: bool = False,
                     endpoint: str | None = None, local_creds: bool = False,
                     creds: Credentials | None = None, capture_errors: bool = False,
                     timeout: float = 600.0) -> dict[str, Any]:
    """``chromasnap pool-collections --json`` of the database's root, with its credentials
    (``creds``, if the caller read them already).

    The child's stderr is this process's (its progress bar and errors show as they
    come), unless ``capture_errors``: then its end is in the error raised; its stdout is
    the JSON page.
    """
    storage = Storage.of(db)
    creds = creds or credentials_for(kube, storage, local_creds=local_creds)
    args = ["pool-collections", storage.url, "--json", "--sort", sort, "--limit", str(limit),
            "--offset", str(offset), *_endpoint_args(storage, endpoint)]
    args += ["--desc"] if desc else []
    args += ["--catalog-only"] if catalog_only else []
    for flag, value in (("--tenant", tenant), ("--database", database), ("--name", name)):
        args += [flag, value] if value is not None else []
    try:
        proc = subprocess.run(chromasnap_command(*args), env=creds.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE if capture_errors else None,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise PluginError(f"`chromasnap pool-collections {storage.url}` timed out after "
                          f"{timeout:.0f}s") from e
    if proc.returncode != 0:
        error = f": {proc.stderr.strip()[-2000:]}" if capture_errors else "; its error is above"
        raise PluginError(f"`chromasnap pool-collections {storage.url}` failed "
                          f"({proc.returncode}{error}); {creds.note}",
                          exit_code=proc.returncode)
    page: dict[str, Any] = json.loads(proc.stdout)
    return page


def bucket_summary(kube: Kube, db: Mapping[str, Any], *, endpoint: str | None = None,
                   local_creds: bool = False,
                   timeout: float = 120.0) -> tuple[dict[str, Any] | None, str, list[str]]:
    """The pool's side of the bucket, for a support bundle: (summary or None, text of
    what happened, secret values used), as :func:`.bucket.bucket_summary` of a collection.

    The summary holds the catalog's number of collections, the last compaction pass
    (``status/compaction.json``, as ``pool-collections`` reports it) and, by name, the
    collections that pass names (failing, with why; most pending deltas first). Not
    every collection: the bundle stays small at 10,000 of them.
    """
    creds = credentials_for(kube, Storage.of(db), local_creds=local_creds)
    try:
        page = list_collections(kube, db, sort="pending", desc=True, limit=0,
                                catalog_only=True, endpoint=endpoint, creds=creds,
                                capture_errors=True, timeout=timeout)
    except PluginError as e:
        return None, str(e), creds.secret_values
    named = [r for r in page["collections"] if r.get("failing") or r.get("pendingDeltas")]
    return ({"url": page["url"], "collections": page["total"], "lastPass": page["lastPass"],
             "named": named}, creds.note, creds.secret_values)


def collections(kube: Kube, name: str, *, json_out: bool = False, out: TextIO = sys.stdout,
                **options: Any) -> int:
    """``kubectl chromasnap collections DB``: print one page of the pool's collections."""
    from chromasnap.cli.poolcollections import render

    page = list_collections(kube, kube.database(name), **options)
    out.write((json.dumps(page, indent=2) if json_out else render(page)) + "\n")
    return 0


def resolve(kube: Kube, db: Mapping[str, Any], collection: str, *, tenant: str | None,
            database: str | None, endpoint: str | None = None,
            local_creds: bool = False) -> dict[str, Any]:
    """The catalog row of the pool's collection named ``collection`` (in ``tenant`` /
    ``database``; by default in any, as long as only one has that name)."""
    page = list_collections(kube, db, name=collection, tenant=tenant, database=database,
                            catalog_only=True, limit=0, endpoint=endpoint,
                            local_creds=local_creds)
    return pick(page["collections"], collection, str((db.get("metadata") or {}).get("name")),
                tenant=tenant, database=database)


def pick(rows: Sequence[Mapping[str, Any]], collection: str, db_name: str, *,
         tenant: str | None, database: str | None) -> dict[str, Any]:
    """The one row of ``rows`` (the catalog's rows named ``collection``) (pure)."""
    if not rows:
        where = "" if tenant is None and database is None else \
            f" in {tenant or '(any tenant)'}/{database or '(any database)'}"
        raise PluginError(f"ChromaDatabase {db_name!r} has no collection {collection!r}{where}: "
                          f"list them with `kubectl chromasnap collections {db_name}`",
                          exit_code=2)
    if len(rows) > 1:
        places = ", ".join(f"{r['tenant']}/{r['database']}" for r in rows)
        raise PluginError(f"{len(rows)} collections of ChromaDatabase {db_name!r} are named "
                          f"{collection!r} (in {places}): pass --tenant and --database",
                          exit_code=2)
    return dict(rows[0])


def collection_storage(db: Mapping[str, Any], collection_id: str) -> Storage:
    """The storage of one of the pool's collections: ``<root>/collections/<id>``."""
    storage = Storage.of(db)
    return dataclasses.replace(
        storage, url=f"{storage.url.rstrip('/')}/{collection_root(collection_id).rstrip('/')}")


def export(kube: Kube, name: str, collection: str, dest: str, *, tenant: str | None,
           database: str | None, version: str | None, at: str | None, endpoint: str | None,
           local_creds: bool, err: TextIO = sys.stderr) -> int:
    """``chromasnap export`` of the pool's collection ``collection`` into ``dest``."""
    from chromasnap.cli.plugin.bucket import export_supports_at

    if at is not None and not export_supports_at():
        raise PluginError("--at is not supported by this chromasnap version's export",
                          exit_code=2)
    db = kube.database(name)
    row = resolve(kube, db, collection, tenant=tenant, database=database, endpoint=endpoint,
                  local_creds=local_creds)
    print(f"collection {row['tenant']}/{row['database']}/{row['name']} is {row['id']}",
          file=err, flush=True)
    return export_storage(kube, collection_storage(db, row["id"]), dest, version=version, at=at,
                          endpoint=endpoint, local_creds=local_creds, name=row["name"],
                          err=err)


def collection_source(db: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """A ChromaCollection-shaped source for :func:`restore_manifest` (pure): the pool
    collection's name, dimension and space, and its prefix under the pool's root."""
    if not row.get("dimension"):
        raise PluginError(f"collection {row['name']!r} has no dimension yet (nothing was "
                          "written to it): there is nothing to restore", exit_code=2)
    storage = dict((db.get("spec") or {}).get("storage") or {})
    storage["prefix"] = f"{str(storage.get('prefix') or '').strip('/')}/" \
        f"{collection_root(str(row['id'])).rstrip('/')}"
    meta = db.get("metadata") or {}
    coll: dict[str, Any] = {"name": row["name"], "dimension": int(row["dimension"])}
    if row.get("space"):
        coll["space"] = row["space"]
    if row.get("hnsw"):
        coll["hnsw"] = dict(row["hnsw"])
    return {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
            "spec": {"collection": coll, "storage": storage}}


def restore(kube: Kube, name: str, collection: str, new_name: str, *, tenant: str | None,
            database: str | None, at: str | None, version: str | None, prefix: str | None,
            dry_run: bool, endpoint: str | None = None, local_creds: bool = False,
            out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """A new standalone ChromaCollection bootstrapped from the pool's collection."""
    db = kube.database(name)
    row = resolve(kube, db, collection, tenant=tenant, database=database, endpoint=endpoint,
                  local_creds=local_creds)
    root = str(((db.get("spec") or {}).get("storage") or {}).get("prefix") or "")
    new_prefix = prefix or _restored_prefix(root, new_name)
    if _overlaps(new_prefix, root):
        raise PluginError(f"prefix {new_prefix!r} is inside the pool's root {root!r} (or "
                          "holds it): pass --prefix with a separate one", exit_code=2)
    return restore_from(kube, collection_source(db, row),
                        f"collection {row['name']} ({row['id']}) of ChromaDatabase {name}",
                        new_name, at=at, version=version, prefix=new_prefix, dry_run=dry_run,
                        out=out, err=err)


# --- the status page --------------------------------------------------------------------


def collect_status(kube: Kube, name: str, obj: Mapping[str, Any] | None = None,
                   names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What ``status`` shows of a ChromaDatabase, as JSON-able data; ``names`` maps
    collection ids to names (from the catalog, with ``--bucket``)."""
    obj = obj if obj is not None else kube.database(name)
    meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    storage = spec.get("storage") or {}
    conds = st.get("conditions") or []
    ready = condition(obj, "Ready")

    def named(items: Any) -> list[dict[str, Any]]:
        out = []
        for item in items or []:
            entry = dict(item)
            if names and entry.get("id") in names:
                entry["name"] = names[entry["id"]]
            out.append(entry)
        return out

    return {
        "kind": DATABASE_KIND,
        "name": name,
        "namespace": kube.namespace,
        "generation": meta.get("generation"),
        "observedGeneration": st.get("observedGeneration"),
        "bucketUrl": f"s3://{storage.get('bucket')}/{storage.get('prefix')}",
        "conditions": ([ready] if ready else []) + [c for c in conds if c.get("type") != "Ready"],
        "endpoint": st.get("endpoint"),
        "pool": {"replicas": (st.get("pool") or {}).get("replicas"),
                 "ready": (st.get("pool") or {}).get("ready"),
                 "desired": (spec.get("pool") or {}).get("replicas")},
        "collections": st.get("collections"),
        "databases": st.get("databases"),
        "records": st.get("records"),
        "pendingCollections": st.get("pendingCollections"),
        "failingCollections": st.get("failingCollections"),
        "failing": named(st.get("failing")),
        "mostPending": named(st.get("mostPending")),
        "lastPass": st.get("lastPass") or {},
        "pods": [pod_summary(p) for p in kube.items("Pod", selector(name))],
    }


def _num(v: Any) -> str:
    return "-" if v is None else str(v)


def _coll(entry: Mapping[str, Any]) -> str:
    return f"{entry['name']} ({entry.get('id')})" if entry.get("name") else str(entry.get("id"))


def render_status(s: Mapping[str, Any]) -> str:
    """The human-readable page of a ChromaDatabase (pure)."""
    lines = header("ChromaDatabase", s)
    pool = s["pool"]
    lines += ["",
              f"Endpoint:        {s.get('endpoint') or '(not yet)'}",
              f"Pool pods:       {pool.get('ready') or 0}/{pool.get('replicas') or 0} ready"
              + (f" (spec: {pool['desired']})" if pool.get("desired") is not None
                 and pool.get("desired") != pool.get("replicas") else ""),
              f"Collections:     {_num(s.get('collections'))} in {_num(s.get('databases'))} "
              "databases" + (f", {s['records']} records" if s.get("records") is not None
                             else "")]
    pending = s.get("pendingCollections")
    lines.append(f"Pending:         {_num(pending)} collections with deltas the last pass "
                 "left to fold")
    for p in s.get("mostPending") or []:
        lines.append(f"                 {_coll(p)}: {p.get('pendingDeltas')} deltas")
    lines.append(f"Failing:         {_num(s.get('failingCollections'))} collections")
    for f in s.get("failing") or []:
        lines.append(f"                 {_coll(f)}: {f.get('reason') or 'failed'}")
    last = s.get("lastPass") or {}
    if last:
        outcomes = ", ".join(f"{k} {v}" for k, v in (last.get("outcomes") or {}).items())
        lines.append(f"Last pass:       {_age(last.get('time'))} ago in "
                     f"{last.get('seconds', '?')}s over {last.get('collections', '?')} "
                     f"collections ({outcomes or 'no outcomes'}); by {last.get('identity', '?')}")
    else:
        lines.append("Last pass:       none reported yet")
    lines += ["", "Pods:"]
    lines += [f"  {p['name']}  {p['phase'] or '?'}"
              + (f", {'ready' if p['ready'] else 'not ready'}" if p["phase"] == "Running"
                 else "") + f", {p['restarts']} restarts" for p in s["pods"]] or ["  (none)"]
    lines += ["", f"Collections: kubectl chromasnap collections {s['name']} -n {s['namespace']}"
              " [--sort records --desc]"]
    return "\n".join(lines)


def status(kube: Kube, name: str, obj: Mapping[str, Any], *, json_out: bool, bucket: bool,
           endpoint: str | None, local_creds: bool, out: TextIO = sys.stdout,
           err: TextIO = sys.stderr) -> int:
    """``kubectl chromasnap status DB`` of a ChromaDatabase; with ``bucket``, the failing
    and most pending collections are named from the pool's catalog."""
    names: dict[str, str] | None = None
    note = None
    if bucket:
        try:
            page = list_collections(kube, obj, catalog_only=True, limit=0, endpoint=endpoint,
                                    local_creds=local_creds)
            names = {r["id"]: r["name"] for r in page["collections"]}
        except PluginError as e:
            note = f"collection names unavailable: {e}"
    page_ = collect_status(kube, name, obj, names)
    if note:
        page_["bucket"] = {"error": note}
    if json_out:
        out.write(json.dumps(page_, indent=2) + "\n")
        return 0
    out.write(render_status(page_) + "\n")
    if note:
        print(note, file=err)
    return 0
