#!/usr/bin/env bash
# `make test`: everything CI runs, in the order that keeps a cold run (a machine that
# never ran it) short, with the wall time of every step printed at the end.
#
#   1. system packages, once, before anything runs in parallel (hack/system-packages.sh:
#      docker.io, debootstrap, prometheus; one apt-get with a dpkg lock wait)
#   2. in the background, logged to .cache/logs/:
#        tools   the Go-built binaries in the order the tests need them: first what the
#                integration tests run (MinIO, the control plane, kubectl, kwok, helm),
#                then the kind node's (kind, kubelet, kubeadm, kube-proxy, crictl,
#                CoreDNS), then the MinIO and kind node images (hack/kind-images.sh all)
#        images  the Debian base images and the chromasnap image (hack/kind-images.sh
#                bases): network and disk, not CPU, so it overlaps the Go builds
#   3. the virtualenv, ruff and mypy
#   4. pytest: unit tests first (they need no binary), then the integration tests that
#      need only MinIO, then those that need the control plane, the kind e2e last. A
#      test whose binary is still being built waits for it (hack/cluster.py tool()).
#
# Warm, every step finds its output cached and the background jobs end in seconds.
# Settings: PYTEST_ARGS (extra pytest arguments), CHROMASNAP_CACHE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${CHROMASNAP_CACHE:-$HOME/.cache/chromasnap}"
export CHROMASNAP_CACHE="$CACHE"
LOGS="$ROOT/.cache/logs"
TIMES="$ROOT/.cache/test-times.log"
mkdir -p "$LOGS"

log() { printf '==> %s\n' "$*" >&2; }

STEPS=()
RUN_START=$(date +%s)
step() {  # label cmd...: run in the foreground, record its wall time
  local label=$1 start rc=0; shift
  start=$(date +%s)
  log "$label"
  "$@" || rc=$?
  STEPS+=("$(printf '%6ss  %s%s' "$(( $(date +%s) - start ))" "$label" \
    "$( (( rc == 0 )) || echo " (FAILED, exit $rc)")")")
  return "$rc"
}

# Background jobs run in their own process group, so that leaving (Ctrl-C, a failed
# step) stops their go builds and debootstraps too.
BG_PIDS=()
background() {  # name cmd...: output to .cache/logs/<name>.log; progress lines to the terminal
  local name=$1; shift
  : >"$LOGS/$name.log"
  setsid bash -c '
    set -o pipefail
    name=$1; log=$2; shift 2
    start=$(date +%s)
    "$@" 2>&1 | tee -a "$log" \
      | grep --line-buffered -v "^go: downloading" \
      | grep --line-buffered -E "done in|cached|already built|\<error|failed" \
      | sed -u "s/^/    [$name] /" >&2
    rc=$?
    echo "$(( $(date +%s) - start )) $rc" >"$log.result"
    exit $rc' _ "$name" "$LOGS/$name.log" "$@" &
  BG_PIDS+=($!)
  log "started in the background: $name (log: $LOGS/$name.log)"
}
stop_background() {
  local p
  for p in "${BG_PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
}
trap stop_background EXIT

tools_then_node_images() {
  bash hack/build-tools.sh minio etcd kube-apiserver kube-controller-manager kube-scheduler \
    kubectl kwok helm
  bash hack/build-tools.sh kind kubelet kubeadm kube-proxy crictl coredns
  bash hack/kind-images.sh all
}

summary() {
  local name f
  {
    echo
    echo "==> make test: wall time per step ($(date -u +%FT%TZ), $(nproc) cores)"
    printf '%s\n' "${STEPS[@]}"
    for name in tools images; do
      f="$LOGS/$name.log.result"
      if [[ -f "$f" ]]; then
        read -r secs rc <"$f"
        printf '%6ss  background: %s (exit %s)\n' "$secs" "$name" "$rc"
      else
        printf '%7s  background: %s (still running, stopped)\n' "-" "$name"
      fi
    done
    # the background steps' own timings: "building helm v4.3.1 … done in 240s",
    # "==> base image debian … done in 31s"
    sed -n 's/^\(==> \)\{0,1\}\(.*\) … done in \([0-9]*\)s$/\3 \2/p' \
      "$LOGS/tools.log" "$LOGS/images.log" 2>/dev/null \
      | while read -r secs label; do printf '%6ss    %s\n' "$secs" "$label"; done
    printf '%6ss  total\n' "$(( $(date +%s) - RUN_START ))"
  } | tee -a "$TIMES" >&2
}

main() {
  local rc=0
  step "system packages (one apt-get, before anything runs in parallel)" \
    bash hack/system-packages.sh
  background tools tools_then_node_images
  background images bash hack/kind-images.sh bases
  step "virtualenv (.venv, pinned dependencies)" make --no-print-directory venv
  step "ruff + mypy --strict" make --no-print-directory lint || { summary; return 1; }
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
  step "pytest (unit, integration on real MinIO / chromadb / kube-apiserver, kind e2e)" \
    env CHROMASNAP_REQUIRE_CLUSTER=1 CHROMASNAP_KIND_E2E=1 \
    CHROMASNAP_TOOLS_LOG="$LOGS/tools.log" \
    .venv/bin/python -m pytest -q -ra ${PYTEST_ARGS:-} || rc=$?
  summary
  return "$rc"
}

export -f tools_then_node_images
main "$@"
