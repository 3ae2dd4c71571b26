"""The collection's bucket from a workstation: ``export``, ``restore`` and the bucket summary.

Bucket work runs the ``chromasnap`` command line (``export``, ``status --json``) in a
child process, with the collection's own storage settings (read from its spec) and the
keys of its credentials Secret (read by reference) in that process's environment only:
they are never printed, logged, written to a file or put on a command line. A
collection without ``credentialsSecretRef`` uses workload identity in the cluster; from a
workstation the standard AWS credentials of the environment are used instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from chromasnap.cli.plugin.kube import FIELD_MANAGER, ApiFailure, Kube, PluginError, path
from chromasnap.resource import API_VERSION, KIND

#: Exit code of ``restore`` when the manifest was printed but not applied.
NOT_APPLIED = 3
_DROP_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE")


@dataclass(frozen=True)
class Storage:
    """Where a collection lives and how its pods authenticate (from its spec)."""

    url: str
    endpoint: str | None
    region: str
    secret: str | None
    access_key_key: str
    secret_key_key: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Storage:
        """The storage of a ChromaCollection object."""
        s = (obj.get("spec") or {}).get("storage") or {}
        ref = s.get("credentialsSecretRef") or {}
        return cls(url=f"s3://{s.get('bucket')}/{s.get('prefix')}", endpoint=s.get("endpoint"),
                   region=str(s.get("region") or "us-east-1"), secret=ref.get("name"),
                   access_key_key=str(ref.get("accessKeyIdKey") or "AWS_ACCESS_KEY_ID"),
                   secret_key_key=str(ref.get("secretAccessKeyKey") or "AWS_SECRET_ACCESS_KEY"))


@dataclass
class Credentials:
    """The environment of a ``chromasnap`` child process, and the values never to show."""

    env: dict[str, str]
    secret_values: list[str]
    note: str


def credentials(kube: Kube, storage: Storage) -> Credentials:
    """The collection's S3 credentials as child-process environment."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = storage.region
    if storage.secret is None:
        return Credentials(env, [], "the collection sets no credentialsSecretRef (workload "
                           "identity): using this machine's AWS credentials")
    try:
        secret = kube.get(path("Secret", kube.namespace, storage.secret))
    except ApiFailure as e:
        raise PluginError(
            f"cannot read the collection's credentials Secret {storage.secret!r}: {e} "
            "(or give this machine AWS credentials for the bucket and pass "
            "--use-local-credentials)") from e
    data = secret.get("data") or {}
    values = {}
    for env_name, key in (("AWS_ACCESS_KEY_ID", storage.access_key_key),
                          ("AWS_SECRET_ACCESS_KEY", storage.secret_key_key)):
        if key not in data:
            raise PluginError(f"Secret {storage.secret!r} has no key {key!r} (it has: "
                              f"{', '.join(sorted(data)) or 'none'})")
        values[env_name] = base64.b64decode(data[key]).decode()
    env.update(values)
    return Credentials(env, [v for v in values.values() if v],
                       f"using the credentials of Secret {storage.secret!r}")


def local_credentials(storage: Storage) -> Credentials:
    """This machine's AWS credentials, the collection's region."""
    env = dict(os.environ)
    env.setdefault("AWS_REGION", storage.region)
    env.setdefault("AWS_DEFAULT_REGION", storage.region)
    return Credentials(env, [], "using this machine's AWS credentials")


def credentials_for(kube: Kube, storage: Storage, *, local_creds: bool) -> Credentials:
    """The resource's credentials Secret (:func:`credentials`) or, with ``local_creds``,
    this machine's (:func:`local_credentials`)."""
    return local_credentials(storage) if local_creds else credentials(kube, storage)


def _endpoint_args(storage: Storage, override: str | None) -> list[str]:
    endpoint = override or storage.endpoint
    return ["--s3-endpoint-url", endpoint] if endpoint else []


def chromasnap_command(*args: str) -> list[str]:
    """``chromasnap ARGS`` as this installation runs it."""
    return [sys.executable, "-m", "chromasnap", *args]


def export_supports_at() -> bool:
    """Whether this installation's ``chromasnap export`` has ``--at`` (point-in-time)."""
    from chromasnap.cli.main import build_parser

    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return "--at" in sub.choices["export"]._option_string_actions


def export(kube: Kube, name: str, dest: str, *, version: str | None, at: str | None,
           endpoint: str | None, local_creds: bool, err: TextIO = sys.stderr) -> int:
    """Run ``chromasnap export`` on the collection's bucket."""
    if at is not None and not export_supports_at():
        raise PluginError(
            "--at is not supported yet: restoring to a point in time needs point-in-time "
            "recovery (deltas retained for a recovery window, `chromasnap export --at`), "
            "which this chromasnap version does not have; export a retained version with "
            f"--version instead (`kubectl chromasnap status {name} --bucket` lists them)",
            exit_code=2)
    return export_storage(kube, Storage.of(kube.collection(name)), dest, version=version, at=at,
                          endpoint=endpoint, local_creds=local_creds, err=err)


def export_storage(kube: Kube, storage: Storage, dest: str, *, version: str | None,
                   at: str | None, endpoint: str | None, local_creds: bool,
                   name: str | None = None, err: TextIO = sys.stderr) -> int:
    """Run ``chromasnap export`` on the collection root ``storage.url`` (``name``: what
    to call the exported collection)."""
    creds = credentials_for(kube, storage, local_creds=local_creds)
    args = ["export", storage.url, dest, *_endpoint_args(storage, endpoint)]
    args += ["--name", name] if name else []
    args += ["--version", version] if version else []
    args += ["--at", at] if at else []
    print(f"exporting {storage.url} to {dest} ({creds.note})", file=err, flush=True)
    return subprocess.run(chromasnap_command(*args), env=creds.env, check=False).returncode


def bucket_summary(kube: Kube, obj: Mapping[str, Any], *, endpoint: str | None = None,
                   local_creds: bool = False,
                   timeout: float = 120.0) -> tuple[dict[str, Any] | None, str, list[str]]:
    """``chromasnap status --json`` of the collection's bucket: (summary or None, text
    of what happened, secret values used)."""
    storage = Storage.of(obj)
    creds = credentials_for(kube, storage, local_creds=local_creds)
    cmd = chromasnap_command("status", storage.url, "--json",
                             *_endpoint_args(storage, endpoint))
    try:
        proc = subprocess.run(cmd, env=creds.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"`chromasnap status {storage.url}` timed out after {timeout:.0f}s", \
            creds.secret_values
    if proc.returncode != 0:
        return None, (f"`chromasnap status {storage.url}` failed ({proc.returncode}): "
                      f"{proc.stderr.strip()[-2000:]}"), creds.secret_values
    return json.loads(proc.stdout), creds.note, creds.secret_values


# --- restore ----------------------------------------------------------------------------


def _restored_prefix(source_prefix: str, new_name: str) -> str:
    head, _, _ = source_prefix.rpartition("/")
    return f"{head}/{new_name}" if head else new_name


def _overlaps(a: str, b: str) -> bool:
    a, b = a.strip("/") + "/", b.strip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def restore_manifest(source: Mapping[str, Any], new_name: str, *, prefix: str | None = None,
                     at: str | None = None, version: str | None = None,
                     nested_storage: bool = False) -> dict[str, Any]:
    """A new ChromaCollection that starts from ``source``'s data (``spec.bootstrap.from``).

    The new collection copies the source's spec and gets its own prefix in the same
    bucket (``<source prefix's parent>/<new name>`` unless ``prefix`` is given); the
    source is only read. ``bootstrap.from`` names the source's storage and, optionally,
    a retained ``version`` or a time ``at``; ``nested_storage`` puts the storage fields
    under ``from.storage`` instead of directly in ``from``.
    """
    spec = json.loads(json.dumps(source.get("spec") or {}))
    spec.pop("bootstrap", None)
    src_storage = dict(spec.get("storage") or {})
    new_prefix = prefix or _restored_prefix(str(src_storage.get("prefix") or ""), new_name)
    if _overlaps(new_prefix, str(src_storage.get("prefix") or "")):
        raise PluginError(f"prefix {new_prefix!r} overlaps the source's "
                          f"{src_storage.get('prefix')!r}: pass --prefix with a separate one",
                          exit_code=2)
    spec["storage"] = src_storage | {"prefix": new_prefix}
    # a copy of its own (yaml.safe_dump would write shared parts as &anchors)
    origin: dict[str, Any] = json.loads(json.dumps(
        {k: v for k, v in src_storage.items()
         if k in ("bucket", "prefix", "endpoint", "region", "credentialsSecretRef")}))
    frm: dict[str, Any] = {"storage": origin} if nested_storage else dict(origin)
    if version:
        frm["version"] = version
    if at:
        frm["at"] = at
    spec["bootstrap"] = {"from": frm}
    meta = source.get("metadata") or {}
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": new_name, "namespace": meta.get("namespace"),
                         "labels": {"chromasnap.dev/restored-from": str(meta.get("name"))}},
            "spec": spec}


def _bootstrap_schema(kube: Kube) -> dict[str, Any] | None:
    """``spec.bootstrap`` of the served CRD's schema (None: absent; {} if unreadable)."""
    try:
        crd = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                       f"chromacollections.{API_VERSION.split('/')[0]}")
    except ApiFailure:
        return {}
    for v in (crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == API_VERSION.split("/")[1]:
            props = (((v.get("schema") or {}).get("openAPIV3Schema") or {}).get(
                "properties") or {}).get("spec", {}).get("properties") or {}
            boot = props.get("bootstrap")
            return dict(boot) if isinstance(boot, Mapping) else None
    return None


def restore(kube: Kube, name: str, new_name: str, *, at: str | None, version: str | None,
            prefix: str | None, dry_run: bool, out: TextIO = sys.stdout,
            err: TextIO = sys.stderr) -> int:
    """Create (or with ``dry_run`` print) the bootstrap ChromaCollection."""
    return restore_from(kube, kube.collection(name), name, new_name, at=at, version=version,
                        prefix=prefix, dry_run=dry_run, out=out, err=err)


def restore_from(kube: Kube, source: Mapping[str, Any], what: str, new_name: str, *,
                 at: str | None, version: str | None, prefix: str | None, dry_run: bool,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """:func:`restore` from ``source`` (a ChromaCollection object, or one shaped like it
    for a pool's collection); ``what`` names the source in messages."""
    schema = _bootstrap_schema(kube)
    frm = ((schema or {}).get("properties") or {}).get("from") or {}
    nested = "storage" in (frm.get("properties") or {})
    manifest = restore_manifest(source, new_name, prefix=prefix, at=at, version=version,
                                nested_storage=nested)
    text = yaml.safe_dump(manifest, sort_keys=False)
    if dry_run:
        out.write(text)
        return 0
    supported = schema is not None
    if supported:
        # The server's own answer: a dry-run create keeps spec.bootstrap only if the
        # stored schema knows it (an older CRD silently prunes it).
        try:
            echoed = kube.request("POST", path(KIND, kube.namespace),
                                  query=[("dryRun", "All"), ("fieldManager", FIELD_MANAGER)],
                                  body=manifest)
            supported = "bootstrap" in (echoed.get("spec") or {})
        except ApiFailure as e:
            if e.status == 409:
                raise PluginError(f"ChromaCollection {new_name!r} already exists in namespace "
                                  f"{kube.namespace!r}: pick another --into name") from e
            raise
    if not supported:
        out.write(text)
        print("NOTE: not applied. This cluster's ChromaCollection CRD has no "
              "spec.bootstrap: applying the manifest above needs a chromasnap version with "
              "bootstrap support (recovery into a new collection); an older CRD would drop "
              "spec.bootstrap and create an empty collection. Upgrade the CRD and operator, "
              "then `kubectl apply --server-side -f` the manifest.", file=err)
        return NOT_APPLIED
    kube.request("POST", path(KIND, kube.namespace), query=[("fieldManager", FIELD_MANAGER)],
                 body=manifest)
    print(f"created ChromaCollection {kube.namespace}/{new_name} from {what}"
          + (f" at {at}" if at else f" version {version}" if version else " (latest)")
          + f"; follow it with `kubectl chromasnap status {new_name}`", file=err)
    return 0
