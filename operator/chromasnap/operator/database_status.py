"""A ChromaDatabase's status as the operator writes it (pure).

The operator owns the conditions, ``observedGeneration``, ``endpoint`` and
``pool`` (its pods); the pool's pods own the totals (collections, pending,
failing, last pass), which they patch after each compaction pass. A merge
patch of the operator's fields leaves theirs alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from chromasnap.operator.conditions import Verdict, conditions
from chromasnap.operator.observed import DeploymentState

CONDITION_READY = "Ready"


def ready_verdict(problem: str | None, dep: DeploymentState | None, desired: int) -> Verdict:
    """``Ready``: the spec is usable and at least one pool pod serves (all of them, for
    reason ``AllPodsReady``)."""
    if problem is not None:
        return Verdict(CONDITION_READY, "False", "InvalidSpec", problem)
    if dep is None:
        return Verdict(CONDITION_READY, "False", "Creating",
                       "the pool's Deployment is being created")
    if desired == 0:
        return Verdict(CONDITION_READY, "False", "ScaledToZero", "pool.replicas is 0")
    if dep.ready == 0:
        why = dep.stalled or "no pool pod is ready yet (loading the catalog, or not scheduled)"
        return Verdict(CONDITION_READY, "False", "NoPodReady", why)
    if dep.ready < desired:
        return Verdict(CONDITION_READY, "True", "SomePodsReady",
                       f"{dep.ready} of {desired} pool pods are ready")
    return Verdict(CONDITION_READY, "True", "AllPodsReady", f"{dep.ready} pool pods are ready")


def operator_fields(*, endpoint: str, selector: str, dep: DeploymentState | None,
                    desired: int, problem: str | None, generation: int | None,
                    previous: Sequence[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """The fields of ``status`` the operator owns."""
    verdict = ready_verdict(problem, dep, desired)
    return {
        "observedGeneration": generation,
        "endpoint": endpoint,
        "pool": {"replicas": dep.replicas if dep else 0, "ready": dep.ready if dep else 0,
                 "selector": selector},
        "conditions": conditions([verdict], previous, generation, now),
    }
