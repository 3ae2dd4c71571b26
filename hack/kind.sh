#!/usr/bin/env bash
# chromasnap on a kind cluster, with the real image in real pods:
#
#   hack/kind.sh up       the cluster (below), then the install the README documents:
#                         `kubectl apply -f crds/` and `helm install` of the chart  (make kind-up)
#   hack/kind.sh cluster  Docker (hack/docker.sh), the images (hack/kind-images.sh), a kind
#                         cluster with NodePorts on 127.0.0.1, the images loaded, MinIO
#                         (examples/minio.yaml) and its bucket — no chromasnap install
#   hack/kind.sh e2e      the end-to-end tests (tests/e2e) on that cluster   (make kind-e2e)
#   hack/kind.sh down     delete the cluster                                  (make kind-down)
#   hack/kind.sh env      print the KUBECONFIG and image settings, for a shell
#
# The node image: by default one built offline by hack/kind-images.sh (Debian packages,
# kind's node files, Go-built Kubernetes binaries; no registry). With registry access,
# KIND_NODE_IMAGE=standard uses kind's own default node image (kindest/node) and kind's
# default CNI; KIND_NODE_IMAGE=<image> uses that image.
#
# Host quirks, each detected and worked around only where present:
#   - no CAP_SYS_RESOURCE in the bounding set: `docker run --privileged` fails, so kind
#     runs with a docker shim that swaps --privileged for every capability but that one,
#     and containerd in the node gets restrict_oom_score_adj = true;
#   - cgroup v1: kubelet >= 1.35 refuses it unless KubeletConfiguration failCgroupV1: false;
#   - no /lib/modules (kind mounts it): created.
#
# Needs: root or a docker group member, Go (hack/build-tools.sh builds kind, helm and the
# node's binaries at pinned versions), kubectl (Go-built too if missing), the venv for e2e.
# Settings: KIND_CLUSTER (default chromasnap), IMAGE (default chromasnap:<chart appVersion>),
# KIND_NODE_IMAGE (offline | standard | an image), CHROMASNAP_CACHE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-chromasnap}"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/chromasnap/Chart.yaml)"
export IMAGE="${IMAGE:-chromasnap:${APP_VERSION}}"
NODE_IMAGE_MODE="${KIND_NODE_IMAGE:-offline}"
STATE="$ROOT/.cache/kind"
export KUBECONFIG="$STATE/kubeconfig"
CACHE="${CHROMASNAP_CACHE:-$HOME/.cache/chromasnap}"
BIN="$CACHE/bin"
PY="$ROOT/.venv/bin/python"
# Go-built tools (kubectl too, if the host has none) after whatever is on PATH
export PATH="$PATH:$BIN"
# NodePorts published on 127.0.0.1 (tests/e2e uses them): writer, reader, MinIO
NODE_PORTS=(31800 31801 31900)
TIMES="$STATE/times.log"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'kind.sh: error: %s\n' "$*" >&2; exit 1; }

timed() {  # label cmd...
  local label=$1 start rc=0 secs logf; shift
  start=$(date +%s)
  mkdir -p "$STATE/logs"
  logf="$STATE/logs/$(printf '%s' "$label" | tr -c 'A-Za-z0-9._-' _ | cut -c1-60).log"
  log "$label …"
  # streamed and kept in a log of its own; `set -e` holds inside the subshell (it would
  # be off in an `||` context)
  { ( set -e; "$@" ) 2>&1 | tee "$logf" >&2; exit "${PIPESTATUS[0]}"; } &
  wait $! || rc=$?
  secs=$(( $(date +%s) - start ))
  if (( rc != 0 )); then
    # the cause is often hundreds of lines up: repeat the step's own last lines here,
    # at the end, where a reader (and the e2e fixture's error) looks first
    { echo "---- last 40 lines of: $label (full log: $logf) ----"
      tail -40 "$logf"
      echo "----"; } >&2
    die "$label failed after ${secs}s (exit $rc)"
  fi
  log "$label … done in ${secs}s"
  printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$label" "$secs" >>"$TIMES"
}

# ---- quirks -----------------------------------------------------------------------------
no_sys_resource() {
  local bnd
  bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  (( (0x$bnd >> 24 & 1) == 0 ))
}
cgroup_v1() { [[ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]]; }

quirks() {
  local q=()
  no_sys_resource && q+=("no-CAP_SYS_RESOURCE")
  cgroup_v1 && q+=("cgroup-v1")
  [[ -d /lib/modules ]] || q+=("no-/lib/modules")
  echo "${q[*]:-none}"
}

# kind (and only kind) runs docker through this shim where --privileged cannot work.
docker_shim() {
  local real shim="$STATE/shim"
  real=$(bash hack/docker.sh cli)
  mkdir -p "$shim"
  if no_sys_resource; then
    cat >"$shim/docker" <<EOF
#!/usr/bin/env bash
# Written by hack/kind.sh: this host has no CAP_SYS_RESOURCE, so runc cannot apply
# --privileged. Give kind's node every capability but that one, the devices and the
# unmasked /proc paths --privileged would give (the node image remounts cgroups rw).
args=()
case "\${1:-}" in
  run|create)
    for a in "\$@"; do
      if [[ "\$a" == --privileged ]]; then
        args+=(--cap-add ALL --cap-drop SYS_RESOURCE --security-opt systempaths=unconfined
               --device-cgroup-rule 'a *:* rwm' --device /dev/kmsg)
      else
        args+=("\$a")
      fi
    done ;;
  exec)
    for a in "\$@"; do [[ "\$a" == --privileged ]] || args+=("\$a"); done ;;
  *) args=("\$@") ;;
esac
exec $real "\${args[@]}"
EOF
  else
    printf '#!/bin/sh\nexec %s "$@"\n' "$real" >"$shim/docker"
  fi
  chmod +x "$shim/docker"
  echo "$shim"
}

kind_() { PATH="$(docker_shim):$PATH" "$BIN/kind" "$@"; }

node_image() {
  case "$NODE_IMAGE_MODE" in
    offline) bash hack/kind-images.sh --print-node-image ;;
    standard) echo "" ;;
    *) echo "$NODE_IMAGE_MODE" ;;
  esac
}

kind_config() {  # node-image
  local offline=false
  [[ "$NODE_IMAGE_MODE" == offline ]] && offline=true
  echo "kind: Cluster"
  echo "apiVersion: kind.x-k8s.io/v1alpha4"
  echo "networking:"
  echo "  apiServerAddress: 127.0.0.1"
  echo "  podSubnet: 10.244.0.0/16"
  if $offline; then
    echo "  # no kindnetd (a registry image): the node image has a static bridge CNI config"
    echo "  disableDefaultCNI: true"
  fi
  if no_sys_resource; then
    echo "containerdConfigPatches:"
    echo "  - |-"
    echo "    # quirk: no CAP_SYS_RESOURCE, pause's oom_score_adj -998 would fail"
    echo "    [plugins.\"io.containerd.grpc.v1.cri\"]"
    echo "      restrict_oom_score_adj = true"
  fi
  echo "nodes:"
  echo "  - role: control-plane"
  echo "    extraPortMappings:"
  local p
  for p in "${NODE_PORTS[@]}"; do
    echo "      - {containerPort: $p, hostPort: $p, listenAddress: 127.0.0.1}"
  done
  if cgroup_v1; then
    echo "    kubeadmConfigPatches:"
    echo "      - |"
    echo "        # quirk: cgroup v1 host; kubelet >= 1.35 refuses it by default"
    echo "        kind: KubeletConfiguration"
    echo "        failCgroupV1: false"
  fi
}

tools() {
  local want=(kind helm)
  command -v kubectl >/dev/null 2>&1 || want+=(kubectl)
  bash hack/build-tools.sh "${want[@]}"

}

create_cluster() {
  local image cfg
  mkdir -p "$STATE" /lib/modules
  image=$(node_image)
  if kind_ get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    # e.g. left by an earlier run: reuse it if its API answers (a restarted dockerd
    # does not restart kind's nodes), else make a new one
    "$(bash hack/docker.sh cli)" start "$CLUSTER-control-plane" >/dev/null 2>&1 || true
    kind_ export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >/dev/null 2>&1 || true
    local i
    for i in $(seq 1 30); do
      if kubectl get --raw /readyz >/dev/null 2>&1; then
        log "kind cluster $CLUSTER exists and answers: reusing it"
        return 0
      fi
      sleep 2
    done
    log "kind cluster $CLUSTER exists but its API does not answer: re-creating it"
    kind_ delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
  fi
  for p in "${NODE_PORTS[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "127.0.0.1:$p is in use"; fi
  done
  cfg="$STATE/kind-config.yaml"
  kind_config >"$cfg"
  log "host quirks: $(quirks); node image: ${image:-kind default}"
  kind_ create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --config "$cfg" \
    ${image:+--image "$image"} --wait 180s
}

load_images() {
  local img todo=() node
  node="$CLUSTER-control-plane"
  for img in "$@"; do
    # skip what the node already has with the same image id
    local id have
    id=$("$(bash hack/docker.sh cli)" image inspect -f '{{.Id}}' "$img")
    have=$("$(bash hack/docker.sh cli)" exec "$node" crictl inspecti -o go-template \
      --template '{{.status.id}}' "$img" 2>/dev/null || true)
    if [[ "$have" == "$id" ]]; then log "$img: already on the node"; else todo+=("$img"); fi
  done
  (( ${#todo[@]} == 0 )) || kind_ load docker-image --name "$CLUSTER" "${todo[@]}"
}

minio_image() {
  if [[ "$NODE_IMAGE_MODE" == offline ]]; then bash hack/kind-images.sh --print-minio-image; fi
}

install_minio() {
  local img
  img=$(minio_image)
  if [[ -n "$img" ]]; then
    # the example with the offline MinIO image (the Debian base plus the Go-built server)
    sed -e "s#^\( *\)image: quay.io/minio/minio:.*#\1image: $img\n\1imagePullPolicy: IfNotPresent#" \
      examples/minio.yaml | kubectl apply -f -
  else
    kubectl apply -f examples/minio.yaml
  fi
  # the S3 port on 127.0.0.1:31900 of the host, for tests and for looking at the bucket
  kubectl apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: minio-nodeport, namespace: minio}
spec:
  type: NodePort
  selector: {app.kubernetes.io/name: minio}
  ports: [{name: s3, port: 9000, targetPort: s3, nodePort: ${NODE_PORTS[2]}}]
EOF
  kubectl -n minio rollout status deployment/minio --timeout=180s
  # The bucket, with a one-off Job on the chromasnap image (boto3 is in it).
  kubectl -n minio delete job make-bucket --ignore-not-found >/dev/null
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
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
EOF
  kubectl -n minio wait job/make-bucket --for=condition=Complete --timeout=180s
}

# What the README says, with the image this script built.
install_chromasnap() {
  kubectl apply --server-side -f crds/
  "$BIN/helm" upgrade --install chromasnap charts/chromasnap \
    --namespace chromasnap-system --create-namespace \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
    --set image.pullPolicy=IfNotPresent --wait --timeout 180s
}

cluster() {
  timed "docker" bash hack/docker.sh ensure
  timed "tools (kind, helm)" tools
  if [[ "$NODE_IMAGE_MODE" == offline ]]; then
    timed "images (chromasnap, MinIO, kind node)" bash hack/kind-images.sh all
  else
    timed "image $IMAGE" bash hack/kind-images.sh chromasnap
  fi
  timed "kind cluster $CLUSTER" create_cluster
  local imgs=("$IMAGE") m
  m=$(minio_image)
  [[ -z "$m" ]] || imgs+=("$m")
  timed "kind load ${imgs[*]}" load_images "${imgs[@]}"
  timed "MinIO in the cluster" install_minio
  log "cluster ready: export KUBECONFIG=$KUBECONFIG"
}

up() {
  cluster
  timed "install: kubectl apply -f crds/ + helm install" install_chromasnap
  log "ready: export KUBECONFIG=$KUBECONFIG; kubectl apply -f examples/minio-collection.yaml"
}

e2e() {
  [[ -x "$PY" ]] || die "no virtualenv: run \`make venv\` first"
  # keep a cluster that `make kind-up` made; the tests delete one they created
  if [[ -x "$BIN/kind" ]] && kind_ get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    export CHROMASNAP_KIND_KEEP="${CHROMASNAP_KIND_KEEP:-1}"
  fi
  CHROMASNAP_KIND_E2E=1 "$PY" -m pytest tests/e2e -ra -v ${PYTEST_ARGS:-}
}

down() {
  [[ -x "$BIN/kind" ]] || bash hack/build-tools.sh kind
  local start; start=$(date +%s)
  if kind_ get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind_ delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
  fi
  rm -rf "$STATE/kubeconfig" "$STATE/shim"
  log "kind cluster $CLUSTER deleted in $(( $(date +%s) - start ))s"
}

case "${1:-}" in
  up) up ;;
  cluster) cluster ;;
  install) install_chromasnap ;;
  e2e) e2e ;;
  down) down ;;
  quirks) quirks ;;
  config) kind_config ;;
  env)
    echo "export KUBECONFIG=$KUBECONFIG"
    echo "export IMAGE=$IMAGE"
    ;;
  *) die "usage: hack/kind.sh up|cluster|e2e|down|env|quirks|config" ;;
esac
