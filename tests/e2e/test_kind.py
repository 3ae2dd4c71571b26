"""chromasnap as users deploy it: the real image, in real pods, on a kind cluster.

Installed exactly as the README says (``kubectl apply -f crds/``, ``helm install``),
with MinIO running in the cluster, and driven with the real ``chromadb.HttpClient``
through NodePorts of the collection's Services (published on 127.0.0.1 only).

The tests run in file order and share one collection (``examples/minio-collection.yaml``);
each one leaves it Ready for the next. Wall times per step are printed at the end.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from kind_support import (
    COLLECTION,
    MINIO_PORT,
    NAMESPACE,
    OPERATOR_NAMESPACE,
    READER_PORT,
    STATE,
    TIMINGS,
    WRITER_PORT,
    Load,
    ccol,
    collection,
    condition,
    diagnose,
    helm,
    kjson,
    kubectl,
    pods,
    running_ready,
    vectors,
    wait_for,
)

pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

#: Records written so far that must be present (every acknowledged write).
ACKED: set[str] = set()
MAX_FAILED_QUERIES = int(os.environ.get("CHROMASNAP_KIND_MAX_FAILED_QUERIES", "0"))


def _snapshot_records() -> int:
    return int((ccol().get("status", {}).get("snapshot") or {}).get("records") or 0)


def _last_compaction() -> dict[str, Any]:
    return dict(ccol().get("status", {}).get("lastCompaction") or {})


def _compact_now(value: str) -> None:
    kubectl("-n", NAMESPACE, "annotate", f"ccol/{COLLECTION}", "--overwrite",
            f"chromasnap.dev/compact-now={value}")


def _jobs(trigger: str | None = None) -> list[dict[str, Any]]:
    sel = f"app.kubernetes.io/instance={COLLECTION},app.kubernetes.io/component=compactor"
    if trigger:
        sel += f",chromasnap.dev/trigger={trigger}"
    items: list[dict[str, Any]] = kjson("-n", NAMESPACE, "get", "jobs", "-l", sel)["items"]
    return items


def _wait_all_present(ids: set[str], timeout: float = 180) -> None:
    reader = collection(READER_PORT)
    want = sorted(ids)

    def present() -> bool:
        found: set[str] = set()
        for i in range(0, len(want), 500):
            found.update(reader.get(ids=want[i:i + 500], include=[])["ids"])
        missing = len(want) - len(found)
        if missing:
            print(f"  {missing} of {len(want)} acknowledged records not visible yet")
        return missing == 0

    wait_for(f"all {len(want)} acknowledged records on the readers", present, timeout,
             interval=3, describe=diagnose)


def _wait_ready(timeout: float = 300) -> None:
    wait_for("ccol/docs Ready", lambda: condition(ccol(), "Ready").get("status") == "True",
             timeout, interval=3, describe=diagnose)


def _wait_compaction_succeeded(after: str, records: int, timeout: float = 300) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        last = _last_compaction()
        if (last.get("time") or "") > after and last.get("result") == "Succeeded" \
                and _snapshot_records() >= records:
            return last
        return None

    result: dict[str, Any] = wait_for(f"a compaction after {after} with >= {records} records",
                                      done, timeout, interval=3, describe=diagnose)
    return result


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- the smallest slice: install, Ready, one write and one read --------------------------
def test_ready_write_and_read_through_the_services(docs: dict[str, Any]) -> None:
    with TIMINGS.step("write 200 through the writer Service, read back on the readers"):
        writer = collection(WRITER_PORT)
        vecs = vectors(200, seed=1)
        ids = [f"first-{i}" for i in range(200)]
        writer.upsert(ids=ids, embeddings=vecs, documents=[f"doc {i}" for i in ids],
                      metadatas=[{"n": i} for i in range(200)])
        ACKED.update(ids)
        reader = collection(READER_PORT)
        wait_for("fresh reads see the 200 records", lambda: reader.count() >= 200, 60)
        got = reader.query(query_embeddings=[vecs[7]], n_results=1)
        assert got["ids"] == [["first-7"]]
        assert reader.get(ids=["first-3"])["documents"] == ["doc first-3"]


def _suspend_schedule(suspend: bool) -> None:
    """``spec.compactor.suspend``, waited for until the CronJob has it and runs nothing."""
    kubectl("-n", NAMESPACE, "patch", "ccol", COLLECTION, "--type=merge",
            "-p", f'{{"spec":{{"compactor":{{"suspend":{str(suspend).lower()}}}}}}}')

    def applied() -> bool:
        cj = kjson("-n", NAMESPACE, "get", "cronjob", f"{COLLECTION}-compactor")
        return bool(cj["spec"].get("suspend")) == suspend and (
            not suspend or not cj.get("status", {}).get("active"))

    wait_for(f"the compaction CronJob suspend={suspend}", applied, 120)


def test_compaction_on_demand(docs: dict[str, Any]) -> None:
    with TIMINGS.step("compaction by chromasnap.dev/compact-now"):
        # Only the on-demand run may fold these writes: with the schedule running, a
        # scheduled run that fires in between folds them first (and this one skips).
        _suspend_schedule(True)
        try:
            ids = [f"on-demand-{i}" for i in range(50)]
            collection(WRITER_PORT).add(ids=ids, embeddings=vectors(50, seed=3))
            ACKED.update(ids)
            before = _now()
            _compact_now(f"e2e-{time.time():.0f}")
            last = _wait_compaction_succeeded(before, len(ACKED))
            assert _jobs("manual"), "no on-demand compaction Job"
            assert last["recordsFolded"] >= len(ids), last
            TIMINGS.facts["compact-now run"] = last
        finally:
            _suspend_schedule(False)


def test_compaction_by_the_cronjob_schedule(docs: dict[str, Any]) -> None:
    with TIMINGS.step("compaction by the CronJob schedule (every minute)"):
        # `before` first: a run of the old schedule that folds these writes in between
        # is a scheduled run after `before` too (taken after the writes, it was missed)
        scheduled_before = {j["metadata"]["name"] for j in _jobs("scheduled")}
        before = _now()
        writer = collection(WRITER_PORT)
        ids = [f"cron-{i}" for i in range(100)]
        writer.add(ids=ids, embeddings=vectors(100, seed=2))
        ACKED.update(ids)
        kubectl("-n", NAMESPACE, "patch", "ccol", COLLECTION, "--type=merge",
                "-p", '{"spec":{"compactor":{"schedule":"* * * * *"}}}')
        try:
            _wait_compaction_succeeded(before, len(ACKED), timeout=240)

            def scheduled_run() -> list[dict[str, Any]] | None:
                # Waited for rather than checked once: another run (an on-demand one the
                # operator still had queued) may fold these writes before the schedule fires.
                new = [j for j in _jobs("scheduled")
                       if j["metadata"]["name"] not in scheduled_before
                       and j.get("status", {}).get("succeeded")]
                return new or None

            wait_for("a Job of the CronJob's schedule that succeeded", scheduled_run, 240,
                     interval=3, describe=diagnose)
        finally:
            kubectl("-n", NAMESPACE, "patch", "ccol", COLLECTION, "--type=merge",
                    "-p", '{"spec":{"compactor":{"schedule":"*/5 * * * *"}}}')


def test_get_ccol_columns_are_filled(docs: dict[str, Any]) -> None:
    out = kubectl("-n", NAMESPACE, "get", "ccol", COLLECTION, "-o", "wide")  # every column
    print(out)
    TIMINGS.facts["kubectl get ccol"] = out.strip().splitlines()
    header, row = out.strip().splitlines()[:2]
    # columns are separated by 2+ spaces; "LAST COMPACTION" has one inside
    import re

    cols = re.split(r"\s{2,}", header.strip())
    vals = re.split(r"\s{2,}", row.strip())
    assert len(cols) == len(vals), (cols, vals)
    table = dict(zip(cols, vals, strict=True))
    assert all(v and v != "<none>" for v in table.values()), table
    assert table["READY"] == "True"
    assert int(table["RECORDS"]) >= len(ACKED)
    assert table["READERS"] == "2" and table["WRITERS"] == "2"
    assert table["LAST COMPACTION"] == "Succeeded"


def test_security_settings_hold_in_the_runtime(docs: dict[str, Any]) -> None:
    op = kjson("-n", OPERATOR_NAMESPACE, "get", "pods",
               "-l", "app.kubernetes.io/name=chromasnap")["items"]
    targets = [(OPERATOR_NAMESPACE, op[0]["metadata"]["name"])]
    targets += [(NAMESPACE, pods(c)[0]["metadata"]["name"]) for c in ("writer", "reader")]
    probe = (
        "import os\n"
        "caps = {l.split(':')[0]: l.split()[1] for l in open('/proc/self/status')"
        " if l.startswith('Cap')}\n"
        "try:\n"
        "    open('/chromasnap-probe', 'w')\n"
        "    root = 'writable'\n"
        "except OSError as e:\n"
        "    root = type(e).__name__ + ':' + str(e.errno)\n"
        "print(os.getuid(), os.getgid(), root, caps['CapEff'], caps['CapPrm'], caps['CapBnd'])\n"
    )
    for ns, pod in targets:
        out = kubectl("-n", ns, "exec", pod, "--", "python", "-c", probe).split()
        uid, gid, root, eff, prm, bnd = out
        TIMINGS.facts[f"security {pod}"] = " ".join(out)
        assert (uid, gid) == ("65532", "65532"), out
        assert root.startswith("OSError:30"), f"writing to / gave {root} (want EROFS)"
        assert int(eff, 16) == int(prm, 16) == int(bnd, 16) == 0, out


def test_kill_a_writer_under_write_load_loses_no_acknowledged_write(
        docs: dict[str, Any]) -> None:
    acked: list[str] = []
    vec = vectors(1, seed=3)[0]

    def write(worker: int, i: int) -> None:
        c = collection(WRITER_PORT, timeout=5) if i % 20 == 0 else write.clients[worker]  # type: ignore[attr-defined]
        write.clients[worker] = c  # type: ignore[attr-defined]
        ids = [f"load-{worker}-{i}-{k}" for k in range(10)]
        c.add(ids=ids, embeddings=[vec] * 10)
        acked.extend(ids)  # only after the writer acknowledged

    write.clients = {}  # type: ignore[attr-defined]
    with TIMINGS.step("kill a writer pod under write load"):
        with Load(write, threads=3, pause=0.05) as load:
            time.sleep(5)
            victim = pods("writer")[0]["metadata"]["name"]
            kubectl("-n", NAMESPACE, "delete", "pod", victim, "--grace-period=0", "--force",
                    "--wait=false")
            time.sleep(10)
            wait_for("2 ready writers again",
                     lambda: sum(map(running_ready, pods("writer"))) >= 2, 180)
            time.sleep(3)
        TIMINGS.facts["writer kill: acknowledged/failed write requests"] = (
            f"{load.ok}/{load.failed}")
        assert load.ok > 0
        ACKED.update(acked)
        _wait_all_present(set(acked))


def test_kill_the_compactor_mid_run_loses_nothing(docs: dict[str, Any]) -> None:
    with TIMINGS.step("kill the compactor pod mid-run, then the next run"):
        # a big enough fold that the run lasts several seconds
        writer = collection(WRITER_PORT)
        for b in range(6):
            ids = [f"big-{b}-{i}" for i in range(1000)]
            writer.add(ids=ids, embeddings=vectors(1000, seed=10 + b))
            ACKED.update(ids)
        kubectl("-n", NAMESPACE, "patch", "ccol", COLLECTION, "--type=merge",
                "-p", '{"spec":{"compactor":{"leaseDurationSeconds":15}}}')
        _wait_ready()
        before_version = (ccol()["status"].get("snapshot") or {}).get("version")
        run = f"kill-{time.time():.0f}"
        _compact_now(run)

        def mid_run() -> str | None:
            lease = kjson("-n", NAMESPACE, "get", "lease", f"{COLLECTION}-compactor")
            holder = lease["spec"].get("holderIdentity")
            for p in pods("compactor"):
                if p["status"].get("phase") == "Running" and holder \
                        and p["metadata"]["name"] in holder:
                    return str(p["metadata"]["name"])
            return None

        victim = wait_for("a compactor pod holding the Lease", mid_run, 180, interval=0.5)
        killed_at = _now()
        kubectl("-n", NAMESPACE, "delete", "pod", victim, "--grace-period=0", "--force",
                "--wait=false")
        TIMINGS.facts["compactor killed"] = victim
        # the pointer did not move to a half-made version
        time.sleep(2)
        assert condition(ccol(), "SnapshotAvailable").get("status") != "False"
        # The Lease expires; a later run (the killed Job's retry, the schedule, or this
        # request, whichever comes first) folds everything; the others find nothing to do.
        time.sleep(16)
        _compact_now(run + "-next")

        def folded() -> dict[str, Any] | None:
            st = ccol().get("status", {})
            snap, last = st.get("snapshot") or {}, st.get("lastCompaction") or {}
            if snap.get("version") != before_version and int(snap.get("records") or 0) \
                    >= len(ACKED) and (last.get("time") or "") > killed_at \
                    and last.get("result") in ("Succeeded", "Skipped"):
                return dict(last)
            return None

        last = wait_for("a run after the kill with every record", folded, 300, interval=3,
                        describe=diagnose)
        TIMINGS.facts["run after the killed compactor"] = last
        failed = [j["metadata"]["name"] for j in _jobs() if any(
            c.get("type") == "Failed" and c.get("status") == "True"
            for c in (j.get("status") or {}).get("conditions") or [])]
        TIMINGS.facts["compaction Jobs failed after the kill"] = failed
        _wait_all_present(ACKED)


def test_reader_deletion_and_rollout_under_query_load(docs: dict[str, Any], image: str) -> None:
    q = vectors(8, seed=4)

    def query(worker: int, i: int) -> None:
        clients = query.clients  # type: ignore[attr-defined]
        if worker not in clients:
            clients[worker] = collection(READER_PORT, timeout=5)
        got = clients[worker].query(query_embeddings=[q[i % len(q)]], n_results=3)
        assert len(got["ids"][0]) == 3

    query.clients = {}  # type: ignore[attr-defined]
    with TIMINGS.step("delete a reader pod under query load"), \
            Load(query, threads=3) as load:
        time.sleep(3)
        victim = pods("reader")[0]["metadata"]["name"]
        kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=true", timeout=180)
        wait_for("2 ready readers", lambda: sum(map(running_ready, pods("reader"))) >= 2, 240)
        time.sleep(3)
    TIMINGS.facts["reader delete: ok/failed queries"] = f"{load.ok}/{load.failed}"
    TIMINGS.facts["reader delete: first errors"] = load.errors[:5]

    repo, tag = image.rsplit(":", 1)
    new_tag = f"{tag}-rolled"
    node = "chromasnap-control-plane"
    # the same image under a new tag, as a registry would serve it
    from kind_support import run, tool

    docker = run(["bash", "hack/docker.sh", "cli"]).stdout.strip()
    run([docker, "exec", node, "ctr", "-n", "k8s.io", "images", "tag", "--force",
         f"docker.io/library/{repo}:{tag}", f"docker.io/library/{repo}:{new_tag}"])
    del tool
    query.clients = {}  # type: ignore[attr-defined]
    with TIMINGS.step("roll the readers (helm upgrade to a new image tag) under query load"), \
            Load(query, threads=3) as roll:
        time.sleep(3)
        helm("upgrade", "chromasnap", "charts/chromasnap", "--namespace", OPERATOR_NAMESPACE,
             "--reuse-values", "--set", f"image.tag={new_tag}", "--wait", "--timeout", "300s")

        def rolled() -> bool:
            ps = pods("reader")
            return len(ps) == 2 and all(running_ready(p) and p["spec"]["containers"][0]["image"]
                                        .endswith(new_tag) for p in ps)

        wait_for("readers rolled to the new tag", rolled, 420, interval=3, describe=diagnose)
        time.sleep(3)
    TIMINGS.facts["reader rollout: ok/failed queries"] = f"{roll.ok}/{roll.failed}"
    TIMINGS.facts["reader rollout: first errors"] = roll.errors[:5]
    _wait_ready()
    assert load.failed <= MAX_FAILED_QUERIES, load.errors
    assert roll.failed <= MAX_FAILED_QUERIES, roll.errors


def test_operator_restart_then_kubectl_scale(docs: dict[str, Any]) -> None:
    with TIMINGS.step("delete the operator pod; it comes back and reconciles a scale"):
        sel = "app.kubernetes.io/name=chromasnap"
        old = kjson("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", sel)["items"][0]
        kubectl("-n", OPERATOR_NAMESPACE, "delete", "pod", old["metadata"]["name"])

        def new_operator() -> bool:
            items = kjson("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", sel)["items"]
            return any(p["metadata"]["uid"] != old["metadata"]["uid"] and running_ready(p)
                       for p in items)

        wait_for("a new operator pod, ready", new_operator, 180)
        kubectl("-n", NAMESPACE, "scale", f"ccol/{COLLECTION}", "--replicas=3")
        wait_for("3 ready readers reported in status",
                 lambda: (ccol()["status"].get("readers") or {}).get("ready") == 3, 300,
                 interval=3, describe=diagnose)
        dep = kjson("-n", NAMESPACE, "get", "deployment", f"{COLLECTION}-reader")
        assert dep["spec"]["replicas"] == 3
        kubectl("-n", NAMESPACE, "scale", f"ccol/{COLLECTION}", "--replicas=2")
        wait_for("2 readers", lambda: (ccol()["status"].get("readers") or {}).get("ready") == 2
                 and len(pods("reader")) == 2, 300, interval=3)
        _wait_ready()


def test_delete_with_deletion_policy_delete_purges_the_prefix(docs: dict[str, Any]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{MINIO_PORT}",
                      aws_access_key_id="chromasnap",
                      aws_secret_access_key="change-me-please",  # noqa: S106 (examples/minio.yaml)
                      region_name="us-east-1")
    prefix = ccol()["spec"]["storage"]["prefix"].rstrip("/") + "/"

    def keys() -> list[str]:
        out = s3.list_objects_v2(Bucket="chromasnap", Prefix=prefix)
        return [o["Key"] for o in out.get("Contents", [])]

    with TIMINGS.step("deletionPolicy: Delete purges the prefix"):
        assert keys(), f"nothing under s3://chromasnap/{prefix} before the delete"
        kubectl("-n", NAMESPACE, "patch", "ccol", COLLECTION, "--type=merge",
                "-p", '{"spec":{"deletionPolicy":"Delete"}}')
        kubectl("-n", NAMESPACE, "delete", "ccol", COLLECTION, "--wait=true", timeout=300)
        wait_for(f"s3://chromasnap/{prefix} empty", lambda: not keys(), 120)
        wait_for("the collection's pods gone", lambda: not pods("writer") and not pods("reader"),
                 180)
    (STATE / "e2e-passed").write_text(_now() + "\n")
