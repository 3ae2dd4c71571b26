"""Applies a collection's children: check the spec, apply everything, refresh the status.

The builders are pure (:mod:`chromasnap.operator.specs`); this is where their
output meets the API server, with server-side apply, under the collection's lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from chromasnap import logs
from chromasnap.operator.checks import (
    REASON_APPLY_REJECTED,
    SECRET_PROBLEM_REASONS,
    Problem,
    auth_secret_problem,
    check_spec,
    secret_problem,
    spec_problem,
)
from chromasnap.operator.controller.cache import ClusterCache, Key, meta
from chromasnap.operator.controller.compactions import CompactionLauncher
from chromasnap.operator.controller.memory import Memory
from chromasnap.operator.controller.retry import backoff
from chromasnap.operator.controller.statuswriter import StatusWriter
from chromasnap.operator.crd import ChromaCollection, SpecError
from chromasnap.operator.kubeapi import ApiError, Kube, path
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.children import desired_children, unwanted_children

log = logging.getLogger("chromasnap.operator")

#: Applied in the second wave, once what their pods or bindings refer to exists.
WORKLOAD_KINDS = frozenset({"RoleBinding", "Deployment", "PodDisruptionBudget", "CronJob"})


class Reconciler:
    """Brings one collection's children to its spec (create, spec change, resume, resync)."""

    def __init__(self, kube: Kube, settings: OperatorSettings, cache: ClusterCache,
                 memory: Memory, status: StatusWriter, compactions: CompactionLauncher,
                 max_concurrent: int) -> None:
        self.kube = kube
        self.settings = settings
        self.cache = cache
        self.memory = memory
        self.status = status
        self.compactions = compactions
        self._slots = asyncio.Semaphore(max_concurrent)

    async def reconcile(self, body: Mapping[str, Any], retry: int) -> None:
        """Check the spec, apply every child, refresh the status.

        Raises ``kopf.TemporaryError`` when retrying later can help (a Secret that may
        yet be created, API trouble); a spec that needs a human returns normally with
        ``Ready=False`` (the next spec change runs this again).
        """
        m = meta(body)
        key: Key = (str(m["namespace"]), str(m["name"]))
        uid = str(m.get("uid"))
        async with self.memory.lock(key), self._slots:
            cc: ChromaCollection | None = None
            try:
                cc = ChromaCollection.from_body(body)
                problem = check_spec(cc)
            except SpecError as e:
                problem = spec_problem(e)
            try:
                if problem is None and cc is not None:
                    problem = await self._check_secrets(cc)
                if problem is not None or cc is None:
                    assert problem is not None
                    self.memory.judge(uid, m.get("generation"), problem)
                    await self.status.refresh_locked(key, body)
                    if problem.reason in SECRET_PROBLEM_REASONS:
                        # Secrets are not watched (get only): look again later.
                        raise kopf.TemporaryError(problem.message, delay=backoff(retry, 30))
                    return
                await self._apply_all(cc, body)
                await self._drop_unwanted(cc)
                log.info("applied children", extra=logs.fields(
                    collection=f"{key[0]}/{key[1]}", generation=m.get("generation")))
                self.memory.judge(uid, m.get("generation"), None)
                await self.compactions.bootstrap(cc, body)
                await self.status.refresh_locked(key, body)
            except ApiError as e:
                if e.transient or e.status in (403, 404, 409):
                    raise kopf.TemporaryError(f"API call failed: {e}", delay=backoff(retry)) from e
                raise

    async def _check_secrets(self, cc: ChromaCollection) -> Problem | None:
        """Check the Secrets the spec names (credentials, auth tokens): they exist and have
        the keys. Only key names (and, for tokens, emptiness) are looked at."""
        fetched: dict[str, Mapping[str, Any] | None] = {}
        checks = []
        ref = cc.spec.storage.credentials_secret_ref
        if ref is not None:
            checks.append((ref.name, secret_problem))
        if cc.spec.auth is not None:
            checks.append((cc.spec.auth.secret_ref.name, auth_secret_problem))
        for name, judge in checks:
            if name not in fetched:
                try:
                    fetched[name] = await self.kube.get(path("v1", "Secret", cc.namespace, name))
                except ApiError as e:
                    if e.status == 403:
                        # The chart's rbac.readSecrets=false: pods will report the problem
                        # instead (a missing token Secret keeps them from starting).
                        log.debug("not allowed to check a Secret",
                                  extra=logs.fields(secret=name, namespace=cc.namespace))
                        continue
                    raise
            problem = judge(cc, fetched[name])
            if problem is not None:
                return problem
        return None

    async def _apply_all(self, cc: ChromaCollection, body: Mapping[str, Any]) -> None:
        """Apply the children in two waves: what pods need first, then the workloads.

        Within a wave the applies run concurrently (one round trip instead of many); the
        waves keep a pod from being created before its ConfigMap or ServiceAccount, and
        the RoleBinding from being checked against a Role that does not exist yet (RBAC's
        escalation check resolves the Role when the binding is created).
        """
        children = desired_children(cc, self.settings)
        for wave in ([c for c in children if c["kind"] not in WORKLOAD_KINDS],
                     [c for c in children if c["kind"] in WORKLOAD_KINDS]):
            results = await asyncio.gather(*(self.kube.apply(c) for c in wave),
                                           return_exceptions=True)
            for child, res in zip(wave, results, strict=True):
                if isinstance(res, ApiError) and res.status in (400, 422):
                    problem = Problem(
                        REASON_APPLY_REJECTED,
                        f"the API server rejected {child['kind']} {child['metadata']['name']}: "
                        f"{res.message}",
                    )
                    self.memory.judge(cc.uid, cc.generation, problem)
                    await self.status.refresh_locked((cc.namespace, cc.name), body)
                    raise kopf.PermanentError(problem.message)
                if isinstance(res, BaseException):
                    raise res
        self.memory.applied.add(cc.uid)

    async def _drop_unwanted(self, cc: ChromaCollection) -> None:
        """Delete optional children the spec no longer asks for (NetworkPolicies once
        ``networkPolicy.enabled`` is off), if this collection owns them."""
        unwanted = unwanted_children(cc)
        if not unwanted:
            return
        for child in self.cache.network_policies((cc.namespace, cc.name)):
            if ("NetworkPolicy", child.name) not in unwanted or child.owner_uid != cc.uid:
                continue
            if await self.kube.delete(path("networking.k8s.io/v1", "NetworkPolicy",
                                           cc.namespace, child.name), uid=child.uid):
                log.info("deleted a NetworkPolicy the spec no longer asks for",
                         extra=logs.fields(collection=f"{cc.namespace}/{cc.name}",
                                           name=child.name))
