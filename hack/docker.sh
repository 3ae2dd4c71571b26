#!/usr/bin/env bash
# Make a Docker engine answer on this machine, for the image build and the kind cluster.
#
#   hack/docker.sh ensure    install Debian's docker.io if dockerd is missing
#                            (hack/system-packages.sh, needs root), start dockerd in the
#                            background if nothing answers on its socket (no systemd
#                            needed), wait for it; parallel callers queue on a lock
#   hack/docker.sh cli       print the docker CLI to use (see below)
#   hack/docker.sh stop      stop a dockerd this script started (pid file)
#
# The CLI: Debian's own /usr/bin/docker (from docker.io) talks to dockerd's built-in
# BuildKit with DOCKER_BUILDKIT=1. A newer CLI without the buildx plugin may come first
# on PATH; it cannot build with BuildKit, so it is used only if it has buildx.
# Settings: DOCKER (force a CLI), DOCKERD_LOG (default /var/log/chromasnap-dockerd.log).
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/chromasnap-dockerd.log}"
PIDFILE="${DOCKERD_PIDFILE:-/var/run/chromasnap-dockerd.pid}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'docker.sh: error: %s\n' "$*" >&2; exit 1; }

docker_cli() {
  if [[ -n "${DOCKER:-}" ]]; then echo "$DOCKER"; return; fi
  if [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker; return; fi
  local d
  d=$(command -v docker 2>/dev/null || true)
  [[ -n "$d" ]] || return 1
  echo "$d"
}

answers() { "$1" info >/dev/null 2>&1; }

# True (and says so) when a CLI is there and the engine answers it.
up() {
  local cli
  cli=$(docker_cli || true)
  [[ -n "$cli" ]] && answers "$cli" || return 1
  log "docker: engine answers ($("$cli" version -f '{{.Server.Version}}' 2>/dev/null))"
}

ensure() {
  local cli
  up && return 0
  # one starter at a time: two callers must not both start a dockerd; the second finds
  # the first one's engine up
  exec 7>/var/lock/chromasnap-docker.lock
  flock 7
  up && return 0
  if ! command -v dockerd >/dev/null 2>&1 || [[ ! -x /usr/bin/docker ]]; then
    # through the one installer, so a parallel apt-get never races this one
    bash "$(dirname "${BASH_SOURCE[0]}")/system-packages.sh" docker.io
  fi
  cli=$(docker_cli)
  local i
  if ! answers "$cli" && pgrep -x dockerd >/dev/null 2>&1; then
    # starting or stopping: give it time rather than start a second one
    log "docker: a dockerd is running but does not answer yet; waiting"
    for i in $(seq 1 60); do
      answers "$cli" && break
      pgrep -x dockerd >/dev/null 2>&1 || break
      sleep 1
    done
  fi
  if ! answers "$cli"; then
    pgrep -x dockerd >/dev/null 2>&1 && die "dockerd runs but does not answer (see its log)"
    [[ $(id -u) == 0 ]] || die "dockerd is not running and this is not root: start it"
    log "docker: starting dockerd (log $DOCKERD_LOG)"
    # kind mounts /lib/modules from the host
    mkdir -p /lib/modules
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for i in $(seq 1 120); do
      answers "$cli" && break
      sleep 1
    done
    answers "$cli" || { tail -20 "$DOCKERD_LOG" >&2; die "dockerd did not answer in 120s"; }
  fi
  log "docker: engine answers ($("$cli" version -f '{{.Server.Version}}' 2>/dev/null))"
}

stop() {
  [[ -s "$PIDFILE" ]] || { log "docker: no dockerd started by this script"; return 0; }
  local pid
  pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    local i
    for i in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill -0 "$pid" 2>/dev/null && die "dockerd (pid $pid) did not stop in 60s"
    log "docker: stopped dockerd (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  ensure) ensure ;;
  cli) docker_cli ;;
  stop) stop ;;
  *) die "usage: hack/docker.sh ensure|cli|stop" ;;
esac
