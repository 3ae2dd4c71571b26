"""Unit tests of :mod:`chromasnap.operator.specs.jobs`: compaction CronJob, on-demand and
purge Jobs.
"""

from __future__ import annotations

import json

import pytest
from specsupport import FAKE_SECRET, body, cc_of

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import jobs, naming

# --- compactor --------------------------------------------------------------------------


def test_cronjob_forbids_overlap(cc: ChromaCollection, settings: OperatorSettings) -> None:
    cron = jobs.compactor_cronjob(cc, settings)
    spec = cron["spec"]
    assert cron["metadata"]["name"] == "docs-compactor"
    assert spec["schedule"] == "*/5 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    assert spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 0
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["activeDeadlineSeconds"] == 3600
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_cronjob_follows_schedule_and_suspend(settings: OperatorSettings) -> None:
    cc = cc_of(body(compactor={"schedule": "@hourly", "suspend": True}))
    spec = jobs.compactor_cronjob(cc, settings)["spec"]
    assert spec["schedule"] == "@hourly"
    assert spec["suspend"] is True


def test_on_demand_job_is_the_cronjobs_template(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    cron = jobs.compactor_cronjob(cc, settings)
    job = jobs.compaction_job(cc, settings, "20240101")
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "docs-compactor-20240101"
    assert job["spec"] == cron["spec"]["jobTemplate"]["spec"]
    assert job["metadata"]["labels"][naming.LABEL_TRIGGER] == "manual"
    assert cron["spec"]["jobTemplate"]["metadata"]["labels"][naming.LABEL_TRIGGER] == "scheduled"
    # Building the Job must not alias the CronJob's dicts.
    job["spec"]["template"]["spec"]["containers"][0]["env"].clear()
    assert jobs.compactor_cronjob(cc, settings) == cron


@pytest.mark.parametrize("run_id", ["", "UPPER", "has-dash", "x" * 11])
def test_on_demand_job_run_id_is_checked(
    cc: ChromaCollection, settings: OperatorSettings, run_id: str
) -> None:
    with pytest.raises(ValueError, match="run id"):
        jobs.compaction_job(cc, settings, run_id)


# --- purge ------------------------------------------------------------------------------


def test_purge_job_outlives_the_collection_and_reports_back(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    job = jobs.purge_job(cc, settings)
    meta = job["metadata"]
    assert meta["name"] == "docs-purge"
    assert "ownerReferences" not in meta
    assert meta["labels"][naming.LABEL_COMPONENT] == "purge"
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["chromasnap", "purge", "--yes"]
    assert "envFrom" not in c  # the ConfigMap may be gone already
    env = {e["name"]: e for e in c["env"]}
    assert env["CHROMASNAP_BUCKET_URL"]["value"] == "s3://vectors/collections/docs"
    assert env["CHROMASNAP_STATUS_RESOURCE"]["value"] == "team-a/docs"
    assert "CHROMASNAP_LEASE_NAME" not in env
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert pod["serviceAccountName"] == "docs-chromasnap"
    assert pod["automountServiceAccountToken"] is True  # it patches the status
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert FAKE_SECRET not in json.dumps(job)

