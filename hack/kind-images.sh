#!/usr/bin/env bash
# Build, without any container registry, the images chromasnap's kind cluster runs:
#
#   hack/kind-images.sh debian      chromasnap.local/debian:bookworm — `debootstrap
#                                   --variant=minbase` + `docker import` (no registry)
#   hack/kind-images.sh python      chromasnap.local/python:3.11-bookworm — the same with
#                                   Debian's python3 (3.11), python3-venv, ca-certificates
#   hack/kind-images.sh chromasnap  chromasnap:<chart appVersion> from images/Dockerfile
#                                   with BASE_IMAGE=chromasnap.local/python:3.11-bookworm
#   hack/kind-images.sh minio       chromasnap.local/minio:<pin> — the Debian base plus the
#                                   Go-built MinIO (hack/build-tools.sh)
#   hack/kind-images.sh node        chromasnap.local/kind-node:<k8s version>-<recipe> — a
#                                   kind node image from Debian packages, kind's own node
#                                   files and Go-built Kubernetes binaries, with the
#                                   control-plane, CoreDNS and pause images preloaded
#   hack/kind-images.sh bases       the four Debian root file systems and the chromasnap
#                                   image: what needs no Go-built binary (make test starts
#                                   it in the background at once)
#   hack/kind-images.sh all         all of the above (default); cold, the Go builds run in
#                                   the background while the four debootstraps run in
#                                   parallel and the chromasnap image builds
#   hack/kind-images.sh --print-node-image | --print-image | --print-minio-image
#
# Cached: a rootfs image whose recipe label matches, or a node image whose tag exists,
# is not rebuilt; the chromasnap image uses Docker's layer cache. Users with registry
# access do not need this: `kind create cluster` with kind's standard node image and
# `docker build -f images/Dockerfile .` on the default python:3.11-slim base work as is.
#
# Needs: root (debootstrap), Docker (hack/docker.sh ensure), Go (hack/build-tools.sh).
# Settings: DEBIAN_MIRROR (default: the first Debian mirror apt uses), IMAGE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${CHROMASNAP_CACHE:-$HOME/.cache/chromasnap}"
BIN="$CACHE/bin"
WORK="$CACHE/kind-images"
SUITE=bookworm
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/chromasnap/Chart.yaml)"
IMAGE="${IMAGE:-chromasnap:${APP_VERSION}}"
K8S_VERSION=$(sed -n 's/^K8S_VERSION=\([^ ]*\).*/\1/p' hack/build-tools.sh)
MINIO_VERSION=$(sed -n 's/^MINIO_VERSION=\([^ ]*\).*/\1/p' hack/build-tools.sh)
KIND_VERSION=$(sed -n 's/^KIND_VERSION=\([^ ]*\).*/\1/p' hack/build-tools.sh)

DEBIAN_IMAGE=chromasnap.local/debian:$SUITE
PYTHON_IMAGE=chromasnap.local/python:3.11-$SUITE
KPROXY_BASE_IMAGE=chromasnap.local/kube-proxy-base:$SUITE
NODE_BASE_IMAGE=chromasnap.local/kind-node-base:$SUITE
MINIO_IMAGE=chromasnap.local/minio:${MINIO_VERSION##*-}

PYTHON_PKGS="python3 python3-venv ca-certificates"
KPROXY_PKGS="iptables nftables conntrack ipset kmod"
# kind's images/base/Dockerfile, from Debian instead of kind's own builds
NODE_PKGS="systemd systemd-sysv dbus conntrack iptables nftables iproute2 ethtool util-linux
 mount kmod libseccomp2 pigz fuse-overlayfs bash ca-certificates curl jq procps
 containerd runc containernetworking-plugins"
# Bump when the node assembly below changes (the tag changes, so kind.sh picks it up).
NODE_RECIPE=4

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'kind-images.sh: error: %s\n' "$*" >&2; exit 1; }

DOCKER="$(bash "$ROOT/hack/docker.sh" cli 2>/dev/null || echo docker)"
export DOCKER_BUILDKIT=1
docker() { "$DOCKER" "$@"; }

timed() {  # label cmd...
  local label=$1 start rc=0; shift
  start=$(date +%s)
  log "$label …"
  # in the background so that `set -e` holds inside (it is off in an `||` context)
  "$@" &
  wait $! || rc=$?
  (( rc == 0 )) || die "$label failed (exit $rc)"
  log "$label … done in $(( $(date +%s) - start ))s"
  mkdir -p "$WORK"
  printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$label" "$(( $(date +%s) - start ))" >>"$WORK/times.log"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_label() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

debian_mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ {print $2}' | grep -v -- '-security' | grep '/debian/*$' | head -1 || true)
  [[ -n "$m" ]] || m=$(awk '$1=="deb" && $2 !~ /security/ && $2 ~ /\/debian\/?$/ {print $2; exit}' \
                         /etc/apt/sources.list 2>/dev/null || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# ---- root file systems with debootstrap ---------------------------------------------
debootstrap_image() {  # image-name "packages" [prepare-function]
  local name=$1 pkgs=$2 prepare=${3:-} recipe dir include=()
  recipe=$(printf '%s|%s|%s|%s' "$SUITE" "$(echo $pkgs)" "$prepare" \
    "$( [[ -n "$prepare" ]] && declare -f "$prepare")" | sha256sum | cut -c1-16)
  if [[ "$(image_label "$name" chromasnap.recipe)" == "$recipe" ]]; then
    log "$name: cached (recipe $recipe)"
    return 0
  fi
  # installed once by main() before any parallel build (hack/system-packages.sh)
  command -v debootstrap >/dev/null || die "debootstrap is not installed: run hack/system-packages.sh"
  dir="$WORK/rootfs/${name//[:\/]/_}"
  rm -rf "$dir"; mkdir -p "$dir"
  if [[ -n "$pkgs" ]]; then include=(--include="$(echo $pkgs | tr ' ' ,)"); fi
  debootstrap --variant=minbase "${include[@]}" "$SUITE" "$dir" "$(debian_mirror)" \
    >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; return 1; }
  if [[ -n "$prepare" ]]; then "$prepare" "$dir"; fi
  # smaller and closer to reproducible: no apt lists or caches, docs, man pages, logs
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/cache/debconf/*-old \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
    "$dir"/usr/share/locale/* "$dir"/var/log/* "$dir"/var/lib/dpkg/*-old "$dir"/tmp/* \
    "$dir"/etc/machine-id "$dir"/root/.cache
  : >"$dir/etc/resolv.conf"
  local changes=(--change "LABEL chromasnap.recipe=$recipe" --change 'CMD ["/bin/bash"]')
  if [[ "$name" == "$NODE_BASE_IMAGE" ]]; then
    changes=(--change "LABEL chromasnap.recipe=$recipe" --change 'ENV container=docker'
             --change 'ENTRYPOINT ["/usr/local/bin/chromasnap-node-entrypoint", "/usr/local/bin/entrypoint", "/sbin/init"]')
  fi
  tar --numeric-owner -C "$dir" -c . | docker import "${changes[@]}" - "$name" >/dev/null
  rm -rf "$dir" "$dir.log"
  log "$name: $(docker image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}')"
}

# kind's images/base/Dockerfile, applied to the Debian root file system.
prepare_node() {
  local dir=$1 kind_src f
  kind_src=$(cd "$WORK" && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [[ -d "$kind_src/images/base/files" ]] || die "no kind sources for $KIND_VERSION"
  local files="$kind_src/images/base/files"
  install -m 0755 "$files"/usr/local/bin/* "$dir/usr/local/bin/"
  mkdir -p "$dir/kind" "$dir/LICENSES"
  cp -r "$files/kind/." "$dir/kind/"
  chmod -R u+w,go-w "$dir/kind"
  find "$dir/kind" -type f -exec chmod 0644 {} +
  chmod 0755 "$dir/kind" "$dir/kind/bin" "$dir"/kind/bin/*
  install -m 0644 "$files"/LICENSES/* "$dir/LICENSES/"
  for f in "$files"/etc/*; do [[ -f "$f" ]] && install -m 0644 "$f" "$dir/etc/"; done
  mkdir -p "$dir/etc/containerd" "$dir/etc/default" "$dir/etc/sysctl.d" \
    "$dir/etc/systemd/system/kubelet.service.d"
  install -m 0644 "$files"/etc/containerd/* "$dir/etc/containerd/"
  install -m 0644 "$files"/etc/default/* "$dir/etc/default/"
  install -m 0644 "$files"/etc/sysctl.d/* "$dir/etc/sysctl.d/"
  find "$files/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$dir/etc/systemd/system/" \;
  install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* \
    "$dir/etc/systemd/system/kubelet.service.d/"
  # Debian's containerd, runc and CNI plugins where kind's unit files and config look
  ln -sf /usr/bin/containerd "$dir/usr/local/bin/containerd"
  ln -sf /usr/bin/containerd-shim-runc-v2 "$dir/usr/local/bin/containerd-shim-runc-v2"
  ln -sf /usr/bin/ctr "$dir/usr/local/bin/ctr"
  mkdir -p "$dir/opt/cni/bin"
  for f in host-local loopback ptp portmap bridge; do
    ln -sf "/usr/lib/cni/$f" "$dir/opt/cni/bin/$f"
  done
  # kind's base Dockerfile: prune systemd units, no kmsg in journald
  find "$dir/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
  rm -f "$dir"/lib/systemd/system/multi-user.target.wants/* "$dir"/etc/systemd/system/*.wants/* \
    "$dir"/lib/systemd/system/local-fs.target.wants/* \
    "$dir"/lib/systemd/system/sockets.target.wants/*udev* \
    "$dir"/lib/systemd/system/sockets.target.wants/*initctl* \
    "$dir"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$dir/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$dir/sbin/init"
  chroot "$dir" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
  chroot "$dir" systemctl mask systemd-binfmt.service >/dev/null 2>&1
  mkdir -p "$dir/etc/kubernetes/manifests"
  chroot "$dir" sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer| length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
  [[ -s "$dir/etc/containerd/cri-base.json" ]] || die "ctr oci spec failed in the node rootfs"
  # No kindnetd (a registry image): a static bridge network for the single node's pods
  # (kind.sh sets networking.disableDefaultCNI and the same pod subnet).
  mkdir -p "$dir/etc/cni/net.d"
  cat >"$dir/etc/cni/net.d/10-chromasnap-bridge.conflist" <<'JSON'
{
  "cniVersion": "1.0.0",
  "name": "kind-bridge",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/16"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

# Runs before kind's entrypoint. Where Docker could not give the node --privileged
# (hack/kind.sh's docker shim, used only on hosts without CAP_SYS_RESOURCE), the cgroup
# v1 hierarchies are mounted read-only; make each mount point read-write (a bind
# remount: the superblock is shared with the host). Does nothing where they are writable.
node_entrypoint() {
  cat <<'SH'
#!/bin/bash
set -e
if [[ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]]; then
  while read -r _ mnt fstype opts _; do
    case "$fstype" in
      tmpfs) [[ "$mnt" == /sys/fs/cgroup ]] || continue ;;
      cgroup) ;;
      *) continue ;;
    esac
    if [[ ",$opts," == *,ro,* ]]; then
      mount -o remount,bind,rw "$mnt" 2>/dev/null || mount -o remount,rw "$mnt" \
        || echo "chromasnap-node-entrypoint: cannot make $mnt read-write" >&2
    fi
  done </proc/self/mounts
fi
exec "$@"
SH
}

# ---- images ---------------------------------------------------------------------------
build_debian() { debootstrap_image "$DEBIAN_IMAGE" ""; }
build_python() { debootstrap_image "$PYTHON_IMAGE" "$PYTHON_PKGS"; }
build_kproxy_base() { debootstrap_image "$KPROXY_BASE_IMAGE" "$KPROXY_PKGS"; }
build_kube_proxy_base() { build_kproxy_base; }
build_node_base() { debootstrap_image "$NODE_BASE_IMAGE" "$NODE_PKGS" prepare_node; }

# Extra CA certificates the host's pip uses (a TLS-inspecting proxy), passed to the
# build stage as a BuildKit secret: never in a layer of the final image.
pip_ca_file() {
  local f="${PIP_CERT:-}"
  [[ -n "$f" ]] || f=$(python3 -m pip config get global.cert 2>/dev/null || true)
  [[ -n "$f" && -s "$f" ]] && echo "$f"
  return 0
}

build_chromasnap() {
  build_python
  local args=(--build-arg "BASE_IMAGE=$PYTHON_IMAGE" -f images/Dockerfile -t "$IMAGE")
  local ca
  ca=$(pip_ca_file)
  if [[ -n "$ca" ]]; then args+=(--secret "id=pip-ca,src=$ca"); fi
  docker build --progress=plain "${args[@]}" . >"$WORK/chromasnap-build.log" 2>&1 \
    || { tail -40 "$WORK/chromasnap-build.log" >&2; return 1; }
  log "$IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
}

# A tiny image: the Debian base plus one binary. Args: tag binary-path [entrypoint]
binary_image() {
  local tag=$1 bin=$2 entry=${3:-} from=${4:-$DEBIAN_IMAGE} ctx
  ctx=$(mktemp -d "$WORK/ctx.XXXXXX")
  cp "$bin" "$ctx/"
  {
    echo "FROM $from"
    echo "COPY $(basename "$bin") /usr/local/bin/$(basename "$bin")"
    if [[ -n "$entry" ]]; then echo "ENTRYPOINT [\"/usr/local/bin/$(basename "$bin")\"]"; fi
  } >"$ctx/Dockerfile"
  docker build -q -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx"
}

build_minio() {
  build_debian
  [[ -x "$BIN/minio" ]] || bash hack/build-tools.sh minio
  if image_exists "$MINIO_IMAGE"; then log "$MINIO_IMAGE: cached"; return 0; fi
  binary_image "$MINIO_IMAGE" "$BIN/minio" entry
}

node_image_tag() {
  local recipe
  recipe=$(printf '%s|%s|%s|%s|%s' "$NODE_RECIPE" "$(echo $NODE_PKGS)" "$KIND_VERSION" \
    "$(cat "$BIN"/.stamps/{kubelet,kubeadm,kubectl,kube-proxy,crictl,coredns,etcd,kube-apiserver} 2>/dev/null)" \
    "$(declare -f node_entrypoint)" \
    | sha256sum | cut -c1-10)
  echo "chromasnap.local/kind-node:$K8S_VERSION-$recipe"
}

# Privileges for the assembly container (it runs containerd to import images).
priv_flags() {
  if no_sys_resource; then
    echo "--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined"
  else
    echo "--privileged"
  fi
}
no_sys_resource() {  # CAP_SYS_RESOURCE (bit 24) missing from the bounding set
  local bnd
  bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  (( (0x$bnd >> 24 & 1) == 0 ))
}

build_node() {
  bash hack/build-tools.sh node etcd kube-apiserver kube-controller-manager kube-scheduler
  local tag
  tag=$(node_image_tag)
  if image_exists "$tag"; then log "$tag: cached"; echo "$tag" >"$WORK/node-image"; return 0; fi
  build_debian
  build_kproxy_base
  build_node_base

  # component images, tagged exactly as kubeadm lists them
  local images=() img name ver pause_tags=()
  mapfile -t images < <("$BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
  (( ${#images[@]} >= 6 )) || die "kubeadm config images list gave: ${images[*]}"
  for img in "${images[@]}"; do
    name=${img%:*}; name=${name##*/}; ver=${img##*:}
    case "$name" in
      kube-apiserver|kube-controller-manager|kube-scheduler) binary_image "$img" "$BIN/$name" ;;
      kube-proxy) binary_image "$img" "$BIN/kube-proxy" "" "$KPROXY_BASE_IMAGE" ;;
      etcd) binary_image "$img" "$BIN/etcd" ;;
      coredns) binary_image "$img" "$BIN/coredns" entry ;;
      pause) pause_tags+=("$img") ;;
      *) die "no recipe for image $img" ;;
    esac
  done
  # the sandbox image kind's containerd config names, too
  local sandbox
  sandbox=$("$DOCKER" run --rm --entrypoint cat "$NODE_BASE_IMAGE" /etc/containerd/config.toml \
    | sed -n 's/^ *sandbox_image *= *"\(.*\)"/\1/p')
  [[ -n "$sandbox" ]] && pause_tags+=("$sandbox")
  build_pause "${pause_tags[@]}"
  images+=("$sandbox")

  # assemble: binaries in, images imported into the node's containerd, commit
  local id
  id=$(docker run -d $(priv_flags) --entrypoint sleep "$NODE_BASE_IMAGE" infinity)
  trap 'docker rm -f -v "$id" >/dev/null 2>&1 || true' RETURN
  for b in kubelet kubeadm kubectl kube-proxy; do docker cp "$BIN/$b" "$id:/usr/bin/$b"; done
  docker cp "$BIN/crictl" "$id:/usr/local/bin/crictl"
  docker exec "$id" sh -c 'chown root:root /usr/bin/kube* /usr/local/bin/crictl && chmod 0755 /usr/bin/kube* /usr/local/bin/crictl'
  docker exec "$id" sh -c "echo $K8S_VERSION >/kind/version"
  node_entrypoint | docker exec -i "$id" sh -c \
    'cat >/usr/local/bin/chromasnap-node-entrypoint && chmod 0755 /usr/local/bin/chromasnap-node-entrypoint'
  docker exec -d "$id" sh -c 'containerd >/var/log/containerd-build.log 2>&1'
  local i
  for i in $(seq 1 30); do
    docker exec "$id" ctr version >/dev/null 2>&1 && break
    sleep 1
  done
  mapfile -t images < <(printf '%s\n' "${images[@]}" | sort -u)
  docker save "${images[@]}" \
    | docker exec -i "$id" ctr -n k8s.io images import --all-platforms --no-unpack --digests - >/dev/null
  docker exec "$id" sh -c 'pkill containerd; for i in $(seq 1 30); do pgrep containerd >/dev/null || exit 0; sleep 1; done; exit 1'
  docker exec "$id" sh -c 'rm -f /var/log/containerd-build.log'
  docker commit \
    --change 'ENTRYPOINT ["/usr/local/bin/chromasnap-node-entrypoint", "/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'ENV container=docker' \
    --change "LABEL chromasnap.kubernetes-version=$K8S_VERSION" \
    "$id" "$tag-commit" >/dev/null
  # systemd stops on SIGRTMIN+3 (what kind's image says); commit cannot set it
  printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$tag-commit" | docker build -q -t "$tag" - >/dev/null
  docker rmi "$tag-commit" >/dev/null
  echo "$tag" >"$WORK/node-image"
  log "$tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
}

# registry.k8s.io/pause from Kubernetes' own pause.c, compiled static (no registry)
build_pause() {  # tags...
  local src ctx t
  src=$(cd "$WORK" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')/build/pause/linux/pause.c
  [[ -f "$src" ]] || die "no pause.c in k8s.io/kubernetes@$K8S_VERSION"
  ctx=$(mktemp -d "$WORK/ctx.XXXXXX")
  gcc -Os -static -o "$ctx/pause" -DVERSION="${1##*:}" "$src"
  strip "$ctx/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
  local tagargs=()
  for t in "$@"; do tagargs+=(-t "$t"); done
  docker build -q "${tagargs[@]}" "$ctx" >/dev/null
  rm -rf "$ctx"
}

# The four Debian root file systems, in parallel (network and disk, little CPU).
build_bases() {
  local p pids=() rc=0
  for p in debian python kube-proxy-base node-base; do
    timed "base image $p" "build_${p//-/_}" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  (( rc == 0 )) || die "a base image failed (its error is above)"
}

main() {
  mkdir -p "$WORK"
  case "${1:-all}" in
    --print-node-image) node_image_tag; return ;;
    --print-image) echo "$IMAGE"; return ;;
    --print-minio-image) echo "$MINIO_IMAGE"; return ;;
  esac
  # Packages first, once, before anything runs in parallel (a second apt-get would race
  # for the dpkg lock); then one build at a time per cache: a second caller (make test's
  # background image build, then the e2e fixture) waits and finds the images cached.
  bash hack/system-packages.sh docker.io debootstrap
  bash hack/docker.sh ensure
  exec 6>"$WORK/.build.lock"
  if ! flock -n 6; then
    log "another kind-images.sh is building in $WORK; waiting for it"
    flock 6
  fi
  case "${1:-all}" in
    debian) timed "base image $DEBIAN_IMAGE" build_debian ;;
    python) timed "base image $PYTHON_IMAGE" build_python ;;
    chromasnap) timed "image $IMAGE" build_chromasnap ;;
    minio) timed "image $MINIO_IMAGE" build_minio ;;
    node) timed "kind node image" build_node ;;
    node-base) timed "base image $NODE_BASE_IMAGE" build_node_base ;;
    kube-proxy-base) timed "base image $KPROXY_BASE_IMAGE" build_kproxy_base ;;
    # what needs no Go-built binary: the root file systems and the chromasnap image
    bases)
      build_bases
      timed "image $IMAGE" build_chromasnap
      ;;
    all)
      # Cold, the Go builds (CPU) and the debootstraps (network, disk) overlap: the Go
      # build runs in the background, its output in a log (shown if it fails), while
      # the root file systems and the chromasnap image are made; the node image is
      # assembled when both are there.
      local gopid golog="$WORK/go-build.log"
      log "Go-built binaries in the background (log: $golog)"
      bash hack/build-tools.sh minio node etcd kube-apiserver kube-controller-manager \
        kube-scheduler >"$golog" 2>&1 &
      gopid=$!
      build_bases
      timed "image $IMAGE" build_chromasnap
      wait "$gopid" || { tail -40 "$golog" >&2; die "hack/build-tools.sh failed (last lines above; log $golog)"; }
      timed "image $MINIO_IMAGE" build_minio
      timed "kind node image" build_node
      ;;
    *) die "usage: hack/kind-images.sh [debian|python|chromasnap|minio|node|bases|all]" ;;
  esac
}

main "$@"
