"""Drift: fields the operator sets on a child that someone changed by hand.

Compared the way server-side apply sees ownership: only fields in the desired
manifest count, lists Kubernetes merges by key may gain entries from other
managers, and quantities compare by value (the API server rewrites them).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from chromasnap.operator.crd import parse_quantity

# Lists Kubernetes merges by key under server-side apply: other managers may add entries
# (a sidecar, an extra env var) without it being drift. Other lists are atomic: an entry
# added by hand (a Role rule, a RoleBinding subject) is drift and gets reverted.
_KEYED_LISTS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "ports": "name",
    "volumes": "name",
    "volumeMounts": "name",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
}
_QUANTITY_KEYS = frozenset({"sizeLimit", "cpu", "memory", "ephemeral-storage"})


def _same_scalar(key: str, want: Any, have: Any) -> bool:
    if want == have and type(want) is type(have):
        return True
    if key in _QUANTITY_KEYS and isinstance(want, str | int) and isinstance(have, str | int):
        # The API server stores quantities canonically ("1.5Gi" comes back "1536Mi").
        try:
            return parse_quantity(want) == parse_quantity(have)
        except ValueError:
            return False
    return False


def _diff(want: Any, have: Any, path: str, key: str, out: list[str]) -> None:
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            out.append(path or ".")
            return
        for k, v in want.items():
            if k not in have:
                # The API server leaves out empty maps and lists and, for most fields,
                # zero values (omitempty): false, 0, "".
                if v in ({}, [], False, 0, ""):
                    continue
                out.append(f"{path}.{k}")
            else:
                _diff(v, have[k], f"{path}.{k}", k, out)
        return
    if isinstance(want, list):
        if not isinstance(have, list):
            out.append(path)
            return
        merge_key = _KEYED_LISTS.get(key)
        if merge_key and all(isinstance(w, Mapping) and merge_key in w for w in want):
            by_key = {h.get(merge_key): h for h in have if isinstance(h, Mapping)}
            for w in want:
                k = w[merge_key]
                if k not in by_key:
                    out.append(f"{path}[{merge_key}={k}]")
                else:
                    _diff(w, by_key[k], f"{path}[{merge_key}={k}]", key, out)
            return
        if len(want) != len(have):
            out.append(path)
            return
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            _diff(w, h, f"{path}[{i}]", key, out)
        return
    if not _same_scalar(key, want, have):
        out.append(path)


def drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Paths of fields the operator sets that differ in ``live`` (empty: no drift).

    Fields the operator does not set (defaults, status, other managers' additions to
    merged lists) are ignored, exactly as server-side apply leaves them alone.
    """
    out: list[str] = []
    want = copy.copy(dict(desired))
    meta = want.pop("metadata", {}) or {}
    have_meta = live.get("metadata") or {}
    for k in ("labels", "annotations", "ownerReferences"):
        if k in meta:
            _diff(meta[k], have_meta.get(k) or ({} if k != "ownerReferences" else []),
                  f"metadata.{k}", k, out)
    for k, v in want.items():
        if k in ("apiVersion", "kind", "status"):
            continue
        if k not in live:
            out.append(k)
        else:
            _diff(v, live[k], k, k, out)
    return out

