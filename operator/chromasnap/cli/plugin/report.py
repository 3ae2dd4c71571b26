"""``kubectl chromasnap report NAME``: a support bundle of a ChromaCollection or a
ChromaDatabase, without secret values.

What goes in (a directory, or a ``.tar.gz`` of it): the resource (``collection.yaml``
or ``database.yaml``), its status page, the Events of the resource and its children,
the children the operator made, the pods' statuses and recent logs, and a summary of
the bucket: of a collection, ``chromasnap status`` of its prefix; of a database, the
pool's last compaction pass and the collections it names (``chromasnap
pool-collections``). The two kinds share everything else.
What never goes in: Secrets. The plugin reads no Secret but the resource's
credentials Secret, and that only into a child process's environment for the bucket
summary; env values whose names look secret are replaced, and every file is scrubbed
of the credential values read, as a last line of defence.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from chromasnap.cli.plugin import bucket, pool, status
from chromasnap.cli.plugin.kube import Kube, PluginError
from chromasnap.cli.plugin.logs import pod_selector, pods, read_logs
from chromasnap.operator.specs.database import COMPONENT_POOL
from chromasnap.operator.specs.naming import (
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from chromasnap.resource import DATABASE_KIND

REDACTED = "<redacted>"
#: Env names whose literal values are not copied into the bundle.
SECRET_NAME_RE = re.compile(r"(?i)secret|token|passw|credential|access_?key|api_?key")
CHILD_KINDS = ("Deployment", "Service", "ConfigMap", "ServiceAccount", "CronJob", "Job",
               "PodDisruptionBudget", "Lease", "NetworkPolicy", "Role", "RoleBinding")


def redact(obj: Any) -> Any:
    """A copy of an API object with managedFields dropped and secret-looking env values
    replaced (names ending in ``_FILE``/``_PATH`` are paths and stay)."""
    if isinstance(obj, Mapping):
        out = {k: redact(v) for k, v in obj.items() if k != "managedFields"}
        name = str(obj.get("name") or "")
        if ("value" in out and isinstance(out["value"], str) and set(obj) <= {"name", "value"}
                and SECRET_NAME_RE.search(name)
                and not name.upper().endswith(("_FILE", "_PATH"))):
            out["value"] = REDACTED
        return out
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def scrub(root: Path, secrets: list[str]) -> None:
    """Replace every known secret value in every file under ``root``."""
    values = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    if not values:
        return
    for f in root.rglob("*"):
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        clean = text
        for v in values:
            clean = clean.replace(v, REDACTED)
        if clean != text:
            f.write_text(clean)


def _yaml(obj: Any) -> str:
    return yaml.safe_dump(redact(obj), sort_keys=False, default_flow_style=False)


class _Bundle:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.errors: list[str] = []
        self.files: list[str] = []

    def write(self, rel: str, text: str) -> None:
        f = self.root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        self.files.append(rel)

    def attempt(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except PluginError as e:
            self.errors.append(f"{what}: {e}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def children_selector(kind: str, name: str) -> str:
    """Label selector of the children the operator made for the ``kind`` ``name`` (pure).

    A database's children all carry the pool component, which keeps a ChromaCollection
    of the same name (same instance label) out of its bundle.
    """
    sel = f"{LABEL_INSTANCE}={name},{LABEL_MANAGED_BY}={MANAGED_BY}"
    return sel + (f",{LABEL_COMPONENT}={COMPONENT_POOL}" if kind == DATABASE_KIND else "")


def _status_page(kube: Kube, kind: str, name: str,
                 obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(text, JSON) of ``kubectl chromasnap status NAME``."""
    if kind == DATABASE_KIND:
        page = pool.collect_status(kube, name, obj)
        return pool.render_status(page), page
    page = status.collect(kube, name)
    return status.render(page), page


def collect(kube: Kube, name: str, root: Path, *, tail: int = 500, with_bucket: bool = True,
            endpoint: str | None = None, local_creds: bool = False) -> list[str]:
    """Write the bundle of the ChromaCollection or ChromaDatabase ``name`` under ``root``;
    returns what could not be collected."""
    kind, obj = kube.resource(name)
    database = kind == DATABASE_KIND
    b = _Bundle(root)
    secrets: list[str] = []
    b.write("database.yaml" if database else "collection.yaml", _yaml(obj))

    def status_page() -> None:
        text, page = _status_page(kube, kind, name, obj)
        b.write("status.txt", text + "\n")
        b.write("status.json", json.dumps(page, indent=2) + "\n")

    def events() -> None:
        evs = [e for e in kube.items("Event")
               if str((e.get("involvedObject") or {}).get("name") or "") == name
               or str((e.get("involvedObject") or {}).get("name") or "").startswith(f"{name}-")]
        evs.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        b.write("events.yaml", _yaml(evs))

    def children() -> None:
        sel = children_selector(kind, name)
        found: list[dict[str, Any]] = []
        for child_kind in CHILD_KINDS:
            try:
                found += [{"kind": child_kind, **o} for o in kube.items(child_kind, sel)]
            except PluginError as e:
                b.errors.append(f"list {child_kind}: {e}")
        b.write("children.yaml", _yaml(found))

    def pod_statuses_and_logs() -> None:
        found = pods(kube, pod_selector(kind, name))
        b.write("pods.yaml", _yaml(found))
        for entry in read_logs(kube, found, tail=tail):
            rel = f"logs/{_safe(entry.pod)}_{_safe(entry.container)}.log"
            b.write(rel, entry.text if entry.text is not None
                    else f"logs unavailable: {entry.error}\n")

    def bucket_part() -> None:
        summarize = pool.bucket_summary if database else bucket.bucket_summary
        summary, note, used = summarize(kube, obj, endpoint=endpoint, local_creds=local_creds)
        secrets.extend(used)
        if summary is None:
            b.errors.append(f"bucket summary: {note}")
            return
        b.write("bucket.json", json.dumps(summary, indent=2) + "\n")

    b.attempt("status", status_page)
    b.attempt("events", events)
    b.attempt("children", children)
    b.attempt("pods", pod_statuses_and_logs)
    if with_bucket:
        b.attempt("bucket summary", bucket_part)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    b.write("README.txt", "\n".join([
        f"chromasnap support bundle for {kind} {kube.namespace}/{name}",
        f"collected {now} from {kube.server} (context {kube.context or '(current)'})",
        "",
        f"No Secret is included: the {kind}'s credentials Secret is only used to read",
        "the bucket summary, env values with secret-looking names are replaced by",
        f"{REDACTED}, and every file is scrubbed of the credential values read.",
        "",
        "files:", *[f"  {f}" for f in sorted(b.files)],
        "",
        "not collected:" if b.errors else "everything was collected",
        *[f"  {e}" for e in b.errors], ""]))
    scrub(root, secrets)
    return b.errors


def report(kube: Kube, name: str, output: str | None, *, tail: int, with_bucket: bool,
           endpoint: str | None, local_creds: bool) -> tuple[Path, list[str]]:
    """Write the bundle to ``output`` (a directory, or ``.tar.gz``/``.tgz``; default a
    tarball in the current directory). Returns its path and what was not collected."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"chromasnap-report-{kube.namespace}-{name}-{stamp}"
    target = Path(output or f"{base}.tar.gz")
    tarball = target.name.endswith((".tar.gz", ".tgz"))
    if not tarball:
        if target.exists() and any(target.iterdir()):
            raise PluginError(f"{target} exists and is not empty: give a new directory",
                              exit_code=2)
        target.mkdir(parents=True, exist_ok=True)
        return target, collect(kube, name, target, tail=tail, with_bucket=with_bucket,
                               endpoint=endpoint, local_creds=local_creds)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / base
        root.mkdir()
        errors = collect(kube, name, root, tail=tail, with_bucket=with_bucket,
                         endpoint=endpoint, local_creds=local_creds)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target, "w:gz") as tar:
            tar.add(root, arcname=base)
        shutil.rmtree(root)
    return target, errors

