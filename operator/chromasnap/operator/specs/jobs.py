"""The run-to-completion workloads: compaction (scheduled and on demand) and the purge.

All three are the same pod: the compactor's template. On-demand Jobs copy the
CronJob's Job template so a manual run is exactly a scheduled one; the purge Job
bends that template so it can outlive the collection it cleans up after
(:func:`purge_job_from`, which bends a ChromaDatabase's pool pod the same way).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from chromasnap.config import ENV_PREFIX
from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.environment import compactor_env, config_data, config_hash
from chromasnap.operator.specs.naming import (
    COMPONENT_COMPACTOR,
    COMPONENT_PURGE,
    LABEL_TRIGGER,
    Manifest,
    labels,
    metadata,
    names,
    purge_job_name,
)
from chromasnap.operator.specs.pods import container, pod_spec, pod_template, volumes

RUN_ID_RE = re.compile(r"^[a-z0-9]{1,10}$")
#: Where ``chromasnap purge`` reports completion (``<namespace>/<name>``), and of which
#: kind (the resource's plural; a ChromaCollection's if unset).
STATUS_RESOURCE_ENV = ENV_PREFIX + "STATUS_RESOURCE"
STATUS_PLURAL_ENV = ENV_PREFIX + "STATUS_PLURAL"


def _compactor_job_spec(cc: ChromaCollection, settings: OperatorSettings) -> dict[str, Any]:
    c = cc.spec.compactor
    main = container(
        cc,
        settings,
        COMPONENT_COMPACTOR,
        compactor_env(cc),
        c.resources,
        serves_http=False,
        cache=True,
    )
    pod = pod_spec(
        cc,
        main,
        volumes(c.cache_size, cache=True),
        api_access=True,
        # A stopped compactor discards its work (the pointer is never half-written);
        # a short grace only lets it release the Lease.
        grace_seconds=30,
    )
    # Never: a failed run leaves its pod (and termination message) for inspection;
    # the Job starts a fresh pod, a fresh identity, for the retry.
    pod["restartPolicy"] = "Never"
    return {
        # Retries cover transient S3 or API errors; the next scheduled run covers the rest.
        "backoffLimit": 2,
        # Runs never overlap (Forbid), so a hung run would block the schedule forever.
        "activeDeadlineSeconds": c.active_deadline_seconds,
        # Finished Jobs go after an hour: the result is in the collection's status.
        "ttlSecondsAfterFinished": 3600,
        "template": pod_template(cc, COMPONENT_COMPACTOR, pod, config_hash(config_data(cc))),
    }


def compactor_cronjob(cc: ChromaCollection, settings: OperatorSettings) -> Manifest:
    """``<name>-compactor``: scheduled compaction, one run at a time."""
    c = cc.spec.compactor
    job_labels = labels(cc.name, COMPONENT_COMPACTOR) | {LABEL_TRIGGER: "scheduled"}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(cc, names(cc).compactor, COMPONENT_COMPACTOR),
        "spec": {
            "schedule": c.schedule,
            "suspend": c.suspend,
            # The Lease already keeps two runs from working at once; Forbid also keeps
            # the controller from piling up pods that would only find the Lease taken.
            "concurrencyPolicy": "Forbid",
            # A run missed by more than this (controller down) is skipped, not started
            # late; without a deadline the controller gives up after 100 misses.
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": job_labels},
                "spec": _compactor_job_spec(cc, settings),
            },
        },
    }


def compaction_job(cc: ChromaCollection, settings: OperatorSettings, run_id: str) -> Manifest:
    """An on-demand compaction run, ``<name>-compactor-<run_id>``, from the CronJob's template.

    ``run_id`` (1-10 of [a-z0-9]) makes the name deterministic, so a retried request
    creates the Job at most once (409 Conflict means it exists). The Job is owned by
    the ChromaCollection rather than the CronJob: the CronJob controller warns about
    Jobs it owns but did not create. It does not count against ``concurrencyPolicy``;
    the Lease keeps it from overlapping a scheduled run.
    """
    if not RUN_ID_RE.match(run_id):
        raise ValueError(f"run id {run_id!r} must be 1-10 characters of [a-z0-9]")
    template = compactor_cronjob(cc, settings)["spec"]["jobTemplate"]
    job_labels = dict(template["metadata"]["labels"]) | {LABEL_TRIGGER: "manual"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            cc, f"{names(cc).compactor}-{run_id}", COMPONENT_COMPACTOR, labels=job_labels
        ),
        "spec": copy.deepcopy(template["spec"]),
    }


def purge_job(cc: ChromaCollection, settings: OperatorSettings) -> Manifest:
    """The Job that empties ``s3://bucket/prefix/`` when the collection is deleted, from
    the compactor's Job template (:func:`purge_job_from`)."""
    template = compaction_job(cc, settings, "purge")["spec"]["template"]
    return purge_job_from(template, instance=cc.name, namespace=cc.namespace,
                          job_name=purge_job_name(cc.name), env=config_data(cc) | {
                              STATUS_RESOURCE_ENV: f"{cc.namespace}/{cc.name}"})


def purge_job_from(template: Mapping[str, Any], *, instance: str, namespace: str,
                   job_name: str, env: Mapping[str, str]) -> Manifest:
    """The Job that runs ``chromasnap purge`` on a resource's storage as it is deleted.

    Built from the pod ``template`` of one of the resource's workloads (same image,
    identity, credentials, security context), with these differences, each because
    the resource is going away while it runs:

    - no owner reference: a foreground deletion of the resource would otherwise
      garbage-collect the Job before it finished;
    - the settings are inline ``env`` (what the resource's ConfigMap holds, and
      where to report) rather than ``envFrom`` the ConfigMap, which the same
      garbage collection may already have removed;
    - it reports completion by adding a ``Purged`` condition to the resource's
      status (the resource's Role allows exactly that), because a Job's success
      alone says nothing about what the process did;
    - it serves nothing and runs once: no ports, probes or spread, never restarted
      in place (the Job starts a new pod for a retry).
    """
    purge_labels = labels(instance, COMPONENT_PURGE)
    tpl = copy.deepcopy(dict(template))
    tpl["metadata"] = {"labels": dict(purge_labels)}
    pod = tpl["spec"]
    pod["restartPolicy"] = "Never"
    pod.pop("topologySpreadConstraints", None)
    main = pod["containers"][0]
    main["name"] = COMPONENT_PURGE
    main["command"] = ["chromasnap", "purge", "--yes"]
    for serving in ("envFrom", "ports", "startupProbe", "livenessProbe", "readinessProbe"):
        main.pop(serving, None)
    common = [e for e in main["env"] if not str(e["name"]).startswith("CHROMASNAP_")]
    main["env"] = common + [{"name": k, "value": v} for k, v in env.items()]
    # Nothing to cache: only the scratch /tmp stays.
    main["volumeMounts"] = [m for m in main["volumeMounts"] if m["name"] == "tmp"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] == "tmp"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name, "namespace": namespace, "labels": purge_labels},
        "spec": {"backoffLimit": 3, "activeDeadlineSeconds": 3600,
                 "ttlSecondsAfterFinished": 86400, "template": tpl},
    }
