#!/usr/bin/env bash
# Make this machine cold for the project, as far as a session can, then run a fresh
# clone's `make test` and record the wall time of every step: the check that a new
# machine (CI may run on one) passes, and how long it takes there.
#
#   hack/cold-test.sh --yes     (destructive: needs root and the explicit flag)
#
# What "cold" removes: the kind cluster and dockerd this project started; Debian's
# docker.io, debootstrap and prometheus (purged, with what they pulled in), Docker's
# images and state; the Go module and build caches; ~/.cache/chromasnap (Go-built
# binaries, image work dirs), pip's cache. The clone is new, so it has no .venv and no
# .cache. What stays: the machine's own toolchains (Go, Python, gcc), as on a new one.
#
# The result (the clone's `make test` output, its per-step times, exit code and total)
# is kept in .cache/cold-test/<UTC time>.log of this checkout.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/.cache/cold-test"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT="$OUT/$STAMP.log"
PURGE=(docker.io debootstrap prometheus)

log() { printf '==> %s\n' "$*" | tee -a "$REPORT" >&2; }
die() { printf 'cold-test.sh: error: %s\n' "$*" >&2; exit 1; }

[[ "${1:-}" == --yes ]] || die "this purges packages, Docker state and caches; run with --yes"
[[ $(id -u) == 0 ]] || die "needs root (apt-get purge, Docker state)"
mkdir -p "$OUT"
: >"$REPORT"

make_cold() {
  local start; start=$(date +%s)
  log "stopping what the project started (kind cluster, dockerd)"
  if [[ -x "${CHROMASNAP_CACHE:-$HOME/.cache/chromasnap}/bin/kind" ]]; then
    (cd "$ROOT" && bash hack/kind.sh down) >/dev/null 2>&1 || true
  fi
  (cd "$ROOT" && bash hack/docker.sh stop) >/dev/null 2>&1 || true
  pkill -x dockerd 2>/dev/null || true
  pkill -x containerd 2>/dev/null || true
  local i
  for i in $(seq 1 60); do pgrep -x dockerd >/dev/null || pgrep -x containerd >/dev/null || break; sleep 1; done
  log "purging ${PURGE[*]} (and what they pulled in)"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 purge -y -qq --autoremove \
    "${PURGE[@]}" >>"$REPORT" 2>&1 || true
  log "removing Docker's state, the Go caches, ~/.cache/chromasnap and pip's cache"
  rm -rf /var/lib/docker /var/lib/containerd /etc/docker /var/run/docker.sock \
    /var/run/chromasnap-dockerd.pid
  if command -v go >/dev/null; then
    go clean -cache -modcache >/dev/null 2>&1 || true
    rm -rf "$(go env GOMODCACHE)" "$(go env GOCACHE)"
  fi
  rm -rf "${CHROMASNAP_CACHE:-$HOME/.cache/chromasnap}" "$HOME/.cache/pip"
  local p
  for p in "${PURGE[@]}"; do
    if dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      die "$p is still installed"
    fi
  done
  command -v dockerd >/dev/null && die "dockerd is still on PATH"
  log "cold in $(( $(date +%s) - start ))s"
}

run_fresh_clone() {
  local dir start rc=0
  dir=$(mktemp -d /tmp/chromasnap-cold.XXXXXX)
  git clone -q "$ROOT" "$dir/chromasnap"
  # ../shared beside the clone, as CI lays it out
  [[ -d "$ROOT/../shared" ]] && ln -s "$(cd "$ROOT/.." && pwd)/shared" "$dir/shared"
  log "fresh clone of $(git -C "$ROOT" rev-parse --short HEAD) in $dir/chromasnap; make test …"
  start=$(date +%s)
  (cd "$dir/chromasnap" && make test) 2>&1 | tee -a "$REPORT"
  rc=${PIPESTATUS[0]}
  log "cold make test: exit $rc after $(( $(date +%s) - start ))s ($(( ($(date +%s) - start) / 60 )) min)"
  rm -rf "$dir"
  return "$rc"
}

make_cold
run_fresh_clone
rc=$?
log "report: $REPORT"
exit "$rc"
