"""How GitOps tools judge a ChromaCollection, as small pure functions for the tests.

- :func:`kstatus`: the rules of kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) for a
  custom resource, which Flux's health checks use: deleting -> Terminating;
  ``status.observedGeneration`` present and not ``metadata.generation`` -> InProgress;
  a ``Reconciling=True`` condition -> InProgress, ``Stalled=True`` -> Failed; then, as
  Flux reads kstatus-compatible resources, the ``Ready`` condition: True -> Current,
  False or Unknown -> InProgress; no conditions at all -> Current.
- :func:`argocd_health`: ``docs/argocd-health.lua`` run with a Lua 5.1 interpreter (Argo CD
  runs health scripts with gopher-lua, a Lua 5.1), with the object as the global ``obj``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEALTH_LUA = ROOT / "docs" / "argocd-health.lua"

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or []
            if isinstance(c, Mapping)}


def kstatus(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(status, message) as kstatus computes it for a custom resource."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return IN_PROGRESS, (f"{obj.get('kind')} generation is {generation}, but latest "
                             f"observed generation is {observed}")
    conds = _conditions(obj)
    if conds.get("Reconciling", {}).get("status") == "True":
        return IN_PROGRESS, str(conds["Reconciling"].get("message") or "")
    if conds.get("Stalled", {}).get("status") == "True":
        return FAILED, str(conds["Stalled"].get("message") or "")
    ready = conds.get("Ready")
    if ready is not None:
        if ready.get("status") == "True":
            return CURRENT, str(ready.get("message") or "")
        return IN_PROGRESS, f"{ready.get('reason')}: {ready.get('message')}"
    return CURRENT, "Resource is current"


def _lua() -> Any:
    import lupa.lua51  # Argo CD's gopher-lua is a Lua 5.1

    return lupa.lua51.LuaRuntime(unpack_returned_tuples=True)


def argocd_health(obj: Mapping[str, Any], script: str | None = None) -> dict[str, str]:
    """``{"status": ..., "message": ...}`` from the Argo CD health script."""
    lua = _lua()
    lua.globals().obj = lua.table_from(_plain(obj), recursive=True)
    # Argo CD runs the script as a chunk whose return value is the health table.
    fn = lua.execute(f"return function() {script or HEALTH_LUA.read_text()} end")
    result = fn()
    return {k: str(v) for k, v in dict(result).items()}


def _plain(obj: Any) -> Any:
    """JSON-like data with lists as they are (lupa turns them into 1-based tables)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
