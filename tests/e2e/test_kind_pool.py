"""kind end-to-end of a pool: a ChromaDatabase installed as the README says, in real pods.

After the ChromaCollection tests (tests/e2e/test_kind.py, same cluster and install):
``examples/database.yaml`` applied, then 1,000 collections created through
``chromadb.HttpClient`` by two clients at once, a declared ``ChromaCollection`` in
the pool, queries over all of them with a loaded-collection cache far smaller than
what is written (evictions happen, answers stay right), a pool pod deleted under
query load and one killed under write load, a collection deleted and created again
under its name, and a ``helm upgrade`` that rolls the pool's pods under query load.

The pool's Service is reached through a NodePort twin on the writer's host port
(the ChromaCollection tests are done with it by then).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kind_support import (
    NAMESPACE,
    OPERATOR_NAMESPACE,
    ROOT,
    TIMINGS,
    WRITER_PORT,
    Load,
    client,
    condition,
    helm,
    kjson,
    kubectl,
    pods,
    run,
    running_ready,
    wait_for,
)

pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]

POOL = "team-a"  # examples/database.yaml
PORT = WRITER_PORT
DIM = 8
COLLECTIONS = 1000
WRITTEN = 40  # collections with records; the rest stay empty
LOADED = 12  # the pool's maxLoadedCollections in this test: far below WRITTEN
MAX_FAILED_QUERIES = 0


def cdb() -> dict[str, Any]:
    obj: dict[str, Any] = kjson("-n", NAMESPACE, "get", "cdb", POOL)
    return obj


def pool_pods() -> list[dict[str, Any]]:
    return pods("pool", POOL)


def describe() -> str:
    parts = [kubectl("-n", NAMESPACE, "get", "cdb,ccol,pods,deploy", "-o", "wide", check=False),
             json.dumps(cdb().get("status", {}), indent=1)[-3000:],
             kubectl("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp",
                     check=False)[-3000:]]
    return "\n".join(parts)


def vec(name: str, k: int) -> list[float]:
    rng = random.Random(f"{name}/{k}")
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def name_of(i: int) -> str:
    return f"customer-{i:04d}"


def _rolled_out(timeout: float = 420) -> None:
    kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{POOL}-pool",
            f"--timeout={int(timeout)}s", timeout=timeout + 30)
    wait_for("2 ready pool pods", lambda: sum(map(running_ready, pool_pods())) == 2
             and len(pool_pods()) == 2, timeout, interval=2, describe=describe)


@pytest.fixture(scope="module")
def pool(installed: str) -> dict[str, Any]:
    with TIMINGS.step("pool: apply examples/database.yaml until Ready"):
        kubectl("create", "namespace", NAMESPACE, check=False)
        kubectl("apply", "-f", str(ROOT / "examples" / "database.yaml"))
        # For the test: few loaded collections (evictions), frequent passes.
        kubectl("-n", NAMESPACE, "patch", "cdb", POOL, "--type=merge", "-p", json.dumps(
            {"spec": {"pool": {"maxLoadedCollections": LOADED},
                      "compactor": {"intervalSeconds": 5}}}))
        wait_for("the patched spec applied", lambda: cdb().get("status", {}).get(
            "observedGeneration") == cdb()["metadata"]["generation"], 120, describe=describe)
        _rolled_out()
        wait_for("cdb Ready", lambda: condition(cdb(), "Ready").get("status") == "True",
                 300, describe=describe)
        kubectl("-n", NAMESPACE, "delete", "service", "docs-writer-nodeport",
                "--ignore-not-found")
        selector = "\n".join(f"    {k}: {v}" for k, v in kjson(
            "-n", NAMESPACE, "get", "service", POOL)["spec"]["selector"].items())
        kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Service
metadata:
  name: {POOL}-nodeport
  namespace: {NAMESPACE}
spec:
  type: NodePort
  sessionAffinity: ClientIP
  selector:
{selector}
  ports:
  - {{name: http, port: 8000, targetPort: 8000, nodePort: {PORT}}}
""")
        wait_for("the pool on the host port", lambda: client(PORT).heartbeat(), 120)
    return cdb()


def test_1000_collections_created_by_two_clients_at_once(pool: dict[str, Any]) -> None:
    clients = [client(PORT), client(PORT)]
    with TIMINGS.step(f"create {COLLECTIONS} collections with 2 clients, write {WRITTEN}"):
        def create(i: int) -> str:
            c = clients[i % 2]
            return str(c.create_collection(name_of(i), embedding_function=None,
                                           metadata={"customer": i}).id)

        with ThreadPoolExecutor(8) as ex:
            ids = list(ex.map(create, range(COLLECTIONS)))
            # both clients ask for the same new names at once: one collection each
            raced = list(ex.map(lambda j: str(clients[j % 2].get_or_create_collection(
                f"shared-{j // 2}", embedding_function=None).id), range(20)))

        assert len(set(ids)) == COLLECTIONS
        assert all(raced[j] == raced[j + 1] for j in range(0, 20, 2)), raced
        assert clients[0].count_collections() == COLLECTIONS + 10
        page = clients[1].list_collections(limit=100, offset=500)
        assert len(page) == 100

        def write(i: int) -> None:
            n = name_of(i)
            c = clients[i % 2].get_collection(n)
            c.add(ids=[f"{n}/{k}" for k in range(5)], embeddings=[vec(n, k) for k in range(5)],
                  documents=[f"doc {k} of {n}" for k in range(5)])

        with ThreadPoolExecutor(8) as ex:
            list(ex.map(write, range(WRITTEN)))
    # the pods' passes fold the writes, and RECORDS counts them across every collection
    wait_for("RECORDS of the pool", lambda: (cdb().get("status") or {}).get("records")
             == WRITTEN * 5, 120, interval=1, describe=describe)
    TIMINGS.facts["kubectl get cdb"] = kubectl("-n", NAMESPACE, "get", "cdb").splitlines()


def test_compact_now_runs_a_pass_on_a_pool_pod(pool: dict[str, Any]) -> None:
    kubectl("-n", NAMESPACE, "annotate", "cdb", POOL, "chromasnap.dev/compact-now=e2e-1",
            "--overwrite")
    last = wait_for("a pass answering the request", lambda: (
        (p := (cdb().get("status") or {}).get("lastPass") or {}).get("request") == "e2e-1"
        and p), 60, interval=0.5, describe=describe)
    assert last["identity"].startswith(f"{POOL}-pool-")


def test_a_declared_collection_joins_the_pool(pool: dict[str, Any]) -> None:
    with TIMINGS.step("a ChromaCollection declared in the pool until Ready"):
        kubectl("apply", "-f", "-", input=f"""
apiVersion: chromasnap.dev/v1alpha1
kind: ChromaCollection
metadata:
  name: handbook
  namespace: {NAMESPACE}
spec:
  database: {POOL}
  collection: {{name: handbook, dimension: {DIM}, space: cosine}}
""")
        t0 = time.monotonic()
        wait_for("ccol/handbook Ready", lambda: condition(kjson(
            "-n", NAMESPACE, "get", "ccol", "handbook"), "Ready").get("status") == "True",
            120, interval=0.5, describe=describe)
        TIMINGS.facts["declared collection Ready after (s)"] = round(time.monotonic() - t0, 2)
    c = client(PORT)
    assert c.get_collection("handbook").configuration_json["hnsw"]["space"] == "cosine"
    with pytest.raises(Exception, match="declared by ChromaCollection"):
        c.delete_collection("handbook")


def _metric(name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def test_queries_over_all_collections_with_evictions(pool: dict[str, Any]) -> None:
    c = client(PORT)
    with TIMINGS.step(f"query all {COLLECTIONS}, the written ones twice ({LOADED} loaded)"):
        unloads = _metric("chromasnap_pool_unloads_total")
        order = list(range(COLLECTIONS))
        random.Random(7).shuffle(order)
        for i in order:
            n = name_of(i)
            coll = c.get_collection(n)
            if i >= WRITTEN:
                assert coll.count() == 0, n
                continue
            k = i % 5
            got = coll.query(query_embeddings=[vec(n, k)], n_results=2)
            assert got["ids"][0][0] == f"{n}/{k}", (n, got["ids"])
        for i in random.Random(8).sample(range(WRITTEN), WRITTEN):
            n = name_of(i)
            got = c.get_collection(n).get(ids=[f"{n}/3"], include=["documents"])
            assert got["documents"] == [f"doc 3 of {n}"], n
        evicted = _metric("chromasnap_pool_unloads_total") - unloads
    TIMINGS.facts["pool: collections closed to stay within maxLoadedCollections"] = evicted
    assert evicted >= WRITTEN - LOADED, evicted


def _query_load() -> Load:
    """Queries with known answers over the written collections, 3 threads."""
    clients: dict[int, Any] = {}

    def query(worker: int, i: int) -> None:
        if worker not in clients:
            clients[worker] = client(PORT)
        # (the last written one is deleted and created again by a test below)
        n = name_of((worker * 7 + i) % (WRITTEN - 1))
        k = i % 5
        got = clients[worker].get_collection(n).query(query_embeddings=[vec(n, k)],
                                                      n_results=1)
        assert got["ids"][0] == [f"{n}/{k}"], got["ids"]

    return Load(query, threads=3)


def test_pool_pods_deleted_under_query_load_and_killed_under_write_load(
        pool: dict[str, Any]) -> None:
    with TIMINGS.step("delete each pool pod in turn under query load"):
        load = _query_load()
        with load:
            time.sleep(3)
            for victim in [p["metadata"]["name"] for p in pool_pods()]:
                kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=true", timeout=180)
                _rolled_out()
            time.sleep(3)
    TIMINGS.facts["pool pod delete: ok/failed queries"] = f"{load.ok}/{load.failed}"
    assert load.ok > 0 and load.failed <= MAX_FAILED_QUERIES, load.errors

    acked: dict[str, list[str]] = {}
    lock = threading.Lock()
    clients: dict[int, Any] = {}

    def write(worker: int, i: int) -> None:
        if worker not in clients or i % 20 == 0:
            clients[worker] = client(PORT)
        n = name_of((worker * 11 + i) % WRITTEN)
        ids = [f"{n}/load-{worker}-{i}-{k}" for k in range(3)]
        clients[worker].get_collection(n).add(ids=ids, embeddings=[vec(n, 9)] * 3)
        with lock:
            acked.setdefault(n, []).extend(ids)  # only once the pool acknowledged

    with TIMINGS.step("kill a pool pod under write load"):
        with Load(write, threads=3, pause=0.05) as wl:
            time.sleep(5)
            victim = pool_pods()[0]["metadata"]["name"]
            kubectl("-n", NAMESPACE, "delete", "pod", victim, "--grace-period=0", "--force",
                    "--wait=false")
            time.sleep(5)
            _rolled_out()
            time.sleep(3)
        TIMINGS.facts["pool pod kill: acknowledged/failed write requests"] = (
            f"{wl.ok}/{wl.failed}")
        assert wl.ok > 0
        c = client(PORT)

        def all_present() -> bool:
            missing = 0
            for n, ids in acked.items():
                missing += len(ids) - len(c.get_collection(n).get(ids=ids, include=[])["ids"])
            return missing == 0

        wait_for("every acknowledged write", all_present, 120, describe=describe)


def test_delete_then_create_the_same_name(pool: dict[str, Any]) -> None:
    c = client(PORT)
    n = name_of(WRITTEN - 1)
    old = c.get_collection(n)
    assert old.count() >= 5
    c.delete_collection(n)
    new = c.create_collection(n, embedding_function=None)
    assert new.id != old.id and new.count() == 0
    new.add(ids=["fresh"], embeddings=[vec(n, 0)])
    assert c.get_collection(n).get(ids=[f"{n}/0"])["ids"] == []
    assert c.get_collection(n).count() == 1


def test_helm_upgrade_rolls_the_pool_under_query_load(pool: dict[str, Any], image: str) -> None:
    repo, tag = image.rsplit(":", 1)
    current = pool_pods()[0]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
    new_tag = f"{tag}-pool" if current != f"{tag}-pool" else tag
    docker = run(["bash", "hack/docker.sh", "cli"]).stdout.strip()
    run([docker, "exec", "chromasnap-control-plane", "ctr", "-n", "k8s.io", "images", "tag",
         "--force", f"docker.io/library/{repo}:{tag}", f"docker.io/library/{repo}:{new_tag}"])
    load = _query_load()
    with TIMINGS.step("roll the pool (helm upgrade to a new image tag) under query load"), load:
        time.sleep(3)
        helm("upgrade", "chromasnap", "charts/chromasnap", "--namespace", OPERATOR_NAMESPACE,
             "--reuse-values", "--set", f"image.tag={new_tag}", "--wait", "--timeout", "300s")

        def rolled() -> bool:
            ps = pool_pods()
            return len(ps) == 2 and all(running_ready(p) and p["spec"]["containers"][0]["image"]
                                        .endswith(":" + new_tag) for p in ps)

        wait_for("pool pods rolled to the new tag", rolled, 420, interval=3, describe=describe)
        time.sleep(3)
    TIMINGS.facts["pool rollout: ok/failed queries"] = f"{load.ok}/{load.failed}"
    TIMINGS.save()
    assert load.ok > 0 and load.failed <= MAX_FAILED_QUERIES, load.errors
