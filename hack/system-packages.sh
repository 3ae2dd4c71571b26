#!/usr/bin/env bash
# Install the Debian packages `make test` needs, in ONE apt-get step, before any
# parallel work starts.
#
#   hack/system-packages.sh            every package below (what `make test` runs first)
#   hack/system-packages.sh PKG...     only these (hack/docker.sh and hack/kind-images.sh
#                                      call it for theirs when run on their own)
#   hack/system-packages.sh --list     print the packages and whether they are installed
#
# Packages: docker.io (the Docker engine for the image builds and kind), debootstrap (the
# offline Debian base images) and prometheus (the prometheus server and promtool the
# observability tests run: Debian's 2.42 serves them, and building Prometheus from the Go
# module proxy took 440 s of a cold run).
#
# Why one step: apt-get holds the dpkg lock while it runs; two installs at once fail
# ("Could not get lock /var/lib/dpkg/lock-frontend"). Every caller goes through this
# script, which takes its own lock first (parallel callers queue, then find the packages
# installed) and asks apt-get to wait for the dpkg lock (DPkg::Lock::Timeout) rather
# than fail, so an unrelated apt-get on the machine does not break the run either.
# Services the packages ship (dockerd, prometheus) are not started by the install:
# the project's scripts start what a test needs and stop it afterwards.
set -euo pipefail

PACKAGES=(docker.io debootstrap prometheus)
LOCK_TIMEOUT=${APT_LOCK_TIMEOUT:-900}
LOCKFILE=/var/lock/chromasnap-system-packages.lock

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'system-packages.sh: error: %s\n' "$*" >&2; exit 1; }

installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_() {
  DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=$LOCK_TIMEOUT" "$@"
}

main() {
  local want=() missing=() p start
  if [[ "${1:-}" == --list ]]; then
    for p in "${PACKAGES[@]}"; do
      if installed "$p"; then echo "$p installed"; else echo "$p missing"; fi
    done
    return 0
  fi
  if (( $# > 0 )); then want=("$@"); else want=("${PACKAGES[@]}"); fi
  for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
  if (( ${#missing[@]} == 0 )); then
    log "system packages: ${want[*]} already installed"
    return 0
  fi
  [[ $(id -u) == 0 ]] || die "needs root to install ${missing[*]} (apt-get); install them and re-run"
  command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} by hand and re-run"

  exec 8>"$LOCKFILE"
  flock 8
  # a parallel caller may have installed them while this one waited for the lock
  local todo=()
  for p in "${missing[@]}"; do installed "$p" || todo+=("$p"); done
  (( ${#todo[@]} > 0 )) || { log "system packages: installed meanwhile"; return 0; }

  # No service starts during the install (Debian's own convention: policy-rc.d exit 101).
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# written by chromasnap hack/system-packages.sh for one install\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=1
    trap 'rm -f "$policy"' EXIT
  fi

  start=$(date +%s)
  log "system packages: apt-get update (lock wait up to ${LOCK_TIMEOUT}s)"
  apt_ update -qq
  log "system packages: apt-get install ${todo[*]}"
  # recommends as apt installs them (docker.io's cgroupfs-mount, apparmor, ...), except
  # prometheus-node-exporter: a host exporter nothing here uses ("pkg-" = do not install)
  apt_ install -y -qq "${todo[@]}" prometheus-node-exporter- >/tmp/chromasnap-apt.log 2>&1 \
    || { tail -30 /tmp/chromasnap-apt.log >&2; die "apt-get install ${todo[*]} failed (log above)"; }
  for p in "${todo[@]}"; do installed "$p" || die "$p is not installed after apt-get install"; done
  [[ -z "$made_policy" ]] || { rm -f "$policy"; trap - EXIT; }
  log "system packages: ${todo[*]} installed in $(( $(date +%s) - start ))s"
}

main "$@"
