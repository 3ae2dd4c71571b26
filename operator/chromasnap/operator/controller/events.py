"""core/v1 Events about a collection, posted by the operator itself.

kopf's own event posting is off (see :func:`.handlers.configure`) so that each
notable transition produces exactly one Event, with a CamelCase reason and a
clipped message, as ``kubectl describe`` shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chromasnap import logs
from chromasnap.operator.conditions import camel_reason, clip
from chromasnap.operator.controller.cache import meta
from chromasnap.operator.kubeapi import ApiError, Kube, path
from chromasnap.operator.specs.naming import MANAGED_BY
from chromasnap.resource import API_VERSION, KIND

log = logging.getLogger("chromasnap.operator")


def event_manifest(body: Mapping[str, Any], etype: str, reason: str, message: str,
                   instance: str, now: datetime) -> dict[str, Any]:
    """The Event object about collection ``body`` (pure: ``now`` is passed in)."""
    m = meta(body)
    micro = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{m.get('name')}.",
                     "namespace": m.get("namespace")},
        "involvedObject": {
            "apiVersion": API_VERSION, "kind": KIND, "name": m.get("name"),
            "namespace": m.get("namespace"), "uid": m.get("uid"),
        },
        "type": etype,
        "reason": camel_reason(reason, "Unknown"),
        "message": clip(message),
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
        "reportingInstance": instance,
        "firstTimestamp": micro[:19] + "Z",
        "lastTimestamp": micro[:19] + "Z",
        "eventTime": micro,
        "action": "Reconcile",
        "count": 1,
    }


class EventRecorder:
    """Posts Events as ``instance`` (the operator pod); failures are logged, never raised."""

    def __init__(self, kube: Kube, instance: str) -> None:
        self.kube = kube
        self.instance = instance

    async def post(self, body: Mapping[str, Any], etype: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about a collection."""
        m = meta(body)
        ev = event_manifest(body, etype, reason, message, self.instance, datetime.now(UTC))
        try:
            await self.kube.request("POST", path("v1", "Event", str(m.get("namespace"))),
                                    body=ev)
        except ApiError as e:
            log.warning("could not post event", extra=logs.fields(reason=reason, error=str(e)))
        log.info("event %s %s", etype, reason, extra=logs.fields(
            collection=f"{m.get('namespace')}/{m.get('name')}", message=message))
