"""``kubectl chromasnap logs NAME [--role ...]``: the collection's pods' logs, by its labels.

Pods are found by the labels the operator puts on every pod template
(``app.kubernetes.io/{name,instance,component}``), so writers, readers, compaction
and purge Jobs' pods are all covered; each line is prefixed with its pod.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from chromasnap.cli.plugin.kube import Kube, PluginError, path
from chromasnap.cli.plugin.status import selector

ROLES = ("writer", "reader", "compactor", "purge")


@dataclass
class PodLog:
    """One container's recent log, or why it could not be read."""

    pod: str
    container: str
    text: str | None
    error: str | None


def pods(kube: Kube, name: str, role: str | None = None) -> list[dict[str, Any]]:
    """The collection's pods (of one role), oldest first."""
    found = kube.items("Pod", selector(name, role))
    return sorted(found, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))


def _containers(pod: Mapping[str, Any]) -> list[str]:
    return [str(c["name"]) for c in (pod.get("spec") or {}).get("containers") or []]


def read_logs(kube: Kube, pod_list: list[dict[str, Any]], *, tail: int | None = 200,
              since_seconds: int | None = None, previous: bool = False) -> Iterator[PodLog]:
    """Each container's log (errors kept per pod, so one bad pod hides nothing else)."""
    for pod in pod_list:
        pod_name = str(pod["metadata"]["name"])
        for container in _containers(pod):
            query = [("container", container)]
            if tail is not None:
                query.append(("tailLines", str(tail)))
            if since_seconds is not None:
                query.append(("sinceSeconds", str(since_seconds)))
            if previous:
                query.append(("previous", "true"))
            try:
                text = kube.request("GET", path("Pod", kube.namespace, pod_name, "log"),
                                    query=query, raw=True, timeout=30)
            except PluginError as e:
                yield PodLog(pod_name, container, None, str(e))
            else:
                yield PodLog(pod_name, container, str(text), None)


def logs(kube: Kube, name: str, role: str | None, *, tail: int | None, since: int | None,
         previous: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the logs; 1 if there were pods but no log could be read."""
    kube.collection(name)  # a clear error if the collection does not exist
    found = pods(kube, name, role)
    what = f"{role} pods" if role else "pods"
    if not found:
        print(f"no {what} of ChromaCollection {kube.namespace}/{name} right now (finished "
              "compaction Jobs' pods go after an hour; see `kubectl chromasnap status "
              f"{name}`)", file=err)
        return 0
    read = 0
    for entry in read_logs(kube, found, tail=tail, since_seconds=since, previous=previous):
        prefix = f"[{entry.pod}/{entry.container}]"
        if entry.error is not None:
            print(f"{prefix} logs unavailable: {entry.error}", file=err)
            continue
        read += 1
        for line in (entry.text or "").splitlines():
            print(f"{prefix} {line}", file=out)
    if read == 0:
        print(f"could not read the logs of any of the {len(found)} {what} (see above)",
              file=err)
        return 1
    return 0
