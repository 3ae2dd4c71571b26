"""``kubectl chromasnap logs NAME [--role ...]``: the pods' logs of a ChromaCollection or a
ChromaDatabase, by the operator's labels.

Pods are found by the labels the operator puts on every pod template
(``app.kubernetes.io/{name,instance,component}``): a collection's writers, readers,
compaction and purge Jobs' pods (``--role`` picks one kind); a database's pool pods
(component ``pool``, the selector of its Deployment ``NAME-pool``). Each line is
prefixed with its pod.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from chromasnap.cli.plugin.kube import Kube, PluginError, path
from chromasnap.cli.plugin.status import selector
from chromasnap.operator.specs.database import COMPONENT_POOL
from chromasnap.resource import DATABASE_KIND, KIND

#: The roles of a ChromaCollection's pods.
ROLES = ("writer", "reader", "compactor", "purge")
#: What ``--role`` accepts: a collection's roles, and ``pool`` (a ChromaDatabase's only one).
ALL_ROLES = (*ROLES, COMPONENT_POOL)


@dataclass
class PodLog:
    """One container's recent log, or why it could not be read."""

    pod: str
    container: str
    text: str | None
    error: str | None


def pod_selector(kind: str, name: str, role: str | None = None) -> str:
    """Label selector of the pods of the ``kind`` (ChromaCollection or ChromaDatabase)
    ``name``, of one ``role`` (pure); a clear error for a role the kind has not."""
    if kind == DATABASE_KIND:
        if role not in (None, COMPONENT_POOL):
            raise PluginError(
                f"{name!r} is a ChromaDatabase: all its pods are pool pods (--role "
                f"{COMPONENT_POOL}, or no --role); --role {role} is a ChromaCollection's",
                exit_code=2)
        # the labels of the pool Deployment's selector (specs.database)
        return selector(name, COMPONENT_POOL)
    if role == COMPONENT_POOL:
        raise PluginError(
            f"{name!r} is a ChromaCollection: --role {COMPONENT_POOL} is a ChromaDatabase's; "
            f"a collection's roles are {', '.join(ROLES)}", exit_code=2)
    return selector(name, role)


def pods(kube: Kube, label_selector: str) -> list[dict[str, Any]]:
    """The namespace's pods matching ``label_selector`` (see :func:`pod_selector`),
    oldest first."""
    found = kube.items("Pod", label_selector)
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


def no_pods_hint(kind: str, name: str) -> str:
    """Why a resource may have no pods right now, and where to look (pure)."""
    if kind == KIND:
        return (f"finished compaction Jobs' pods go after an hour; see `kubectl chromasnap "
                f"status {name}`")
    return (f"scaled to zero, or the operator has not made its Deployment {name}-pool yet; "
            f"see `kubectl chromasnap status {name}`")


def logs(kube: Kube, name: str, role: str | None, *, tail: int | None, since: int | None,
         previous: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the logs of the ChromaCollection's or ChromaDatabase's pods; 1 if there were
    pods but no log could be read."""
    kind, _ = kube.resource(name)  # a clear error if neither exists
    found = pods(kube, pod_selector(kind, name, role))
    what = f"{role} pods" if role else "pods"
    if not found:
        print(f"no {what} of {kind} {kube.namespace}/{name} right now "
              f"({no_pods_hint(kind, name)})", file=err)
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
