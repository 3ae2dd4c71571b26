#!/usr/bin/env bash
# chromasnap on a kind cluster, for people with Docker:
#
#   hack/kind.sh up     create the cluster, build and load the image, install MinIO,
#                       the CRDs and the chart            (make kind-up)
#   hack/kind.sh e2e    apply examples/minio-collection.yaml, write through the writer
#                       Service and read back through the reader Service with the real
#                       chromadb.HttpClient (over kubectl port-forward)   (make kind-e2e)
#   hack/kind.sh down   delete the cluster                (make kind-down)
#
# NOT RUN on the development machine: it has no Docker engine. The same steps are
# covered there by the test suite on a real kube-apiserver (tests/integration/
# test_operator.py), with the pods' commands run as local processes.
#
# Needs: docker, kubectl, and the repository's virtualenv (`make venv`); kind and helm
# are built at pinned versions by hack/build-tools.sh (needs Go).
# Settings: KIND_CLUSTER (default chromasnap), IMAGE (default chromasnap:<chart appVersion>).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-chromasnap}"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/chromasnap/Chart.yaml)"
IMAGE="${IMAGE:-chromasnap:${APP_VERSION}}"
STATE="$ROOT/.cache/kind"
export KUBECONFIG="$STATE/kubeconfig"
PY="$ROOT/.venv/bin/python"
NS=search

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'kind.sh: error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }

tools() {
  BIN="$(bash hack/build-tools.sh --bin-dir)"
  bash hack/build-tools.sh kind helm
  KIND="$BIN/kind"
  HELM="$BIN/helm"
}

up() {
  need docker "https://docs.docker.com/get-docker/"
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
  tools
  mkdir -p "$STATE"
  if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "kind cluster $CLUSTER exists"
    "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
  else
    log "creating kind cluster $CLUSTER"
    "$KIND" create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s
  fi

  log "building $IMAGE from images/Dockerfile"
  docker build -f images/Dockerfile -t "$IMAGE" .
  "$KIND" load docker-image "$IMAGE" --name "$CLUSTER"

  log "installing MinIO (examples/minio.yaml)"
  kubectl apply -f examples/minio.yaml
  kubectl -n minio rollout status deployment/minio --timeout=180s
  # The bucket, with a one-off Job on the chromasnap image (boto3 is in it).
  kubectl -n minio delete job make-bucket --ignore-not-found
  kubectl apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: make-bucket
  namespace: minio
spec:
  backoffLimit: 6
  template:
    spec:
      restartPolicy: OnFailure
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: mb
          image: ${IMAGE}
          imagePullPolicy: IfNotPresent
          command: ["python", "-c"]
          args:
            - |
              import boto3
              s3 = boto3.client("s3", endpoint_url="http://minio.minio.svc:9000",
                                aws_access_key_id="chromasnap",
                                aws_secret_access_key="change-me-please",
                                region_name="us-east-1")
              if "chromasnap" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
                  s3.create_bucket(Bucket="chromasnap")
              print("bucket chromasnap ready")
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
EOF
  kubectl -n minio wait job/make-bucket --for=condition=Complete --timeout=180s

  log "installing the CRDs and the chart"
  kubectl apply --server-side -f crds/
  "$HELM" upgrade --install chromasnap charts/chromasnap \
    --namespace chromasnap-system --create-namespace \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
    --set image.pullPolicy=IfNotPresent --wait --timeout 180s
  log "ready: export KUBECONFIG=$KUBECONFIG; then hack/kind.sh e2e"
}

e2e() {
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
  [[ -x "$PY" ]] || die "no virtualenv: run \`make venv\` first"
  [[ -s "$KUBECONFIG" ]] || die "no cluster: run \`hack/kind.sh up\` first"
  kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
  kubectl apply -f examples/minio-collection.yaml
  log "waiting for ccol/docs to be Ready (the operator starts the first compaction)"
  kubectl -n "$NS" wait ccol/docs --for=condition=Ready --timeout=600s
  kubectl -n "$NS" get ccol docs -o wide

  local wport=18000 rport=18001 pids=()
  kubectl -n "$NS" port-forward svc/docs-writer "$wport:8000" >"$STATE/pf-writer.log" 2>&1 &
  pids+=($!)
  kubectl -n "$NS" port-forward svc/docs-reader "$rport:8000" >"$STATE/pf-reader.log" 2>&1 &
  pids+=($!)
  trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

  "$PY" - "$wport" "$rport" "$NS" <<'EOF'
"""Write through the writer Service, compact on demand, read back through the readers."""
import json
import subprocess
import sys
import time

import chromadb
import numpy as np

wport, rport, ns = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
DIM, N = 384, 200  # examples/minio-collection.yaml: dimension 384


def connect(port):
    deadline = time.time() + 60
    while True:
        try:
            c = chromadb.HttpClient(host="127.0.0.1", port=port)
            c.heartbeat()
            return c
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(1)


def status():
    out = subprocess.run(["kubectl", "-n", ns, "get", "ccol", "docs", "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out).get("status", {})


vecs = np.random.default_rng(1).standard_normal((N, DIM)).astype(np.float32)
ids = [f"kind-{i}" for i in range(N)]
writer = connect(wport).get_collection("docs")
writer.upsert(ids=ids, embeddings=vecs.tolist(), documents=[f"doc {i}" for i in range(N)])
print(f"wrote {N} records through svc/docs-writer")

reader = connect(rport).get_collection("docs")
deadline = time.time() + 60
while reader.count() < N:  # fresh reads: visible before any compaction
    if time.time() > deadline:
        sys.exit(f"readers see {reader.count()} of {N} records")
    time.sleep(1)
print(f"readers see all {N} records (fresh reads)")

subprocess.run(["kubectl", "-n", ns, "annotate", "ccol/docs", "--overwrite",
                f"chromasnap.dev/compact-now={time.time()}"], check=True)
deadline = time.time() + 600
while (status().get("snapshot") or {}).get("records", 0) < N:
    if time.time() > deadline:
        sys.exit(f"no snapshot with {N} records: {status()}")
    time.sleep(3)
print(f"compacted: {status()['snapshot']}")
got = reader.query(query_embeddings=[vecs[7].tolist()], n_results=1)
assert got["ids"] == [["kind-7"]], got
assert reader.count() >= N
print("kind e2e: OK")
EOF
}

down() {
  tools
  "$KIND" delete cluster --name "$CLUSTER"
  rm -rf "$STATE"
}

case "${1:-}" in
  up) up ;;
  e2e) e2e ;;
  down) down ;;
  *) die "usage: hack/kind.sh up|e2e|down" ;;
esac
