#!/usr/bin/env bash
# Build the real infrastructure binaries the tests run (MinIO, etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok), the user tools (helm, kind, kubectl)
# and the
# parts of an offline kind node image (kubelet, kubeadm, kubectl, kube-proxy, crictl,
# CoreDNS) from the Go module proxy at pinned versions.
#
# Binaries go to ${CHROMASNAP_CACHE:-$HOME/.cache/chromasnap}/bin, outside the repo,
# so every checkout on the same machine reuses them. A tool already built at its
# pinned version is skipped (checked with `go version -m` against the pin, recorded
# in bin/.stamps/<tool>).
#
# Usage: hack/build-tools.sh [all|test|k8s|TOOL...]   (default: all)
#        hack/build-tools.sh --bin-dir                 (print the bin dir and exit)
#        hack/build-tools.sh --list                    (print tools, pins and state)
#   test = minio + k8s + kubectl + helm   (what the integration tests need; Prometheus and
#          promtool come from Debian's prometheus package, hack/system-packages.sh)
#   k8s  = etcd kube-apiserver kube-controller-manager kube-scheduler kwok
#   node = kubelet kubeadm kubectl kube-proxy crictl coredns   (hack/kind-images.sh)
#
# Needs: go (>= 1.26), network access to the Go module proxy. No Docker.
set -euo pipefail

# ---- pinned versions --------------------------------------------------------------
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
ETCD_MODULE=go.etcd.io/etcd/server/v3
ETCD_VERSION=v3.7.3            # Kubernetes v1.37 is tested against etcd 3.7.x
K8S_MODULE=k8s.io/kubernetes
K8S_VERSION=v1.37.1            # matches the Python client kubernetes==37.x
KWOK_MODULE=sigs.k8s.io/kwok
KWOK_VERSION=v0.8.0
HELM_MODULE=helm.sh/helm/v4
HELM_VERSION=v4.3.1
KIND_MODULE=sigs.k8s.io/kind
KIND_VERSION=v0.33.0
CRICTL_MODULE=sigs.k8s.io/cri-tools
CRICTL_VERSION=v1.36.0         # what kind v0.33's base image ships
COREDNS_MODULE=github.com/coredns/coredns
COREDNS_VERSION=v1.14.6        # `kubeadm config images list` for Kubernetes v1.37

ALL_TOOLS=(minio etcd kube-apiserver kube-controller-manager kube-scheduler kwok helm kind
           kubelet kubeadm kubectl kube-proxy crictl coredns)
K8S_TOOLS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
NODE_TOOLS=(kubelet kubeadm kubectl kube-proxy crictl coredns)
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)

CACHE="${CHROMASNAP_CACHE:-$HOME/.cache/chromasnap}"
BIN="$CACHE/bin"
STAMPS="$BIN/.stamps"
SRC="$CACHE/src"
TIMES_LOG="$CACHE/build-times.log"
LDFLAGS_STRIP="-s -w"
# The compiler spends less time collecting garbage with a larger heap target; two
# compile jobs at GOGC=400 stay well inside this machine's memory.
export GOGC="${GOGC:-400}"

log() { printf '%s\n' "$*" >&2; }
die() { log "build-tools: error: $*"; exit 1; }

# module and version each tool comes from
tool_module() {
  case "$1" in
    minio) echo "$MINIO_MODULE" ;;
    etcd) echo "$ETCD_MODULE" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kubeadm|kubectl|kube-proxy)
      echo "$K8S_MODULE" ;;
    kwok) echo "$KWOK_MODULE" ;;
    helm) echo "$HELM_MODULE" ;;
    kind) echo "$KIND_MODULE" ;;
    crictl) echo "$CRICTL_MODULE" ;;
    coredns) echo "$COREDNS_MODULE" ;;
    *) die "unknown tool: $1" ;;
  esac
}
tool_version() {
  case "$1" in
    minio) echo "$MINIO_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kubeadm|kubectl|kube-proxy)
      echo "$K8S_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    kind) echo "$KIND_VERSION" ;;
    crictl) echo "$CRICTL_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    *) die "unknown tool: $1" ;;
  esac
}
stamp_line() { echo "$1 $(tool_module "$1")@$(tool_version "$1")"; }

# The binary's own build info says which module version it was built from. A
# wrapper-module build records the real module as a dependency ("dep" line),
# a `go install mod@ver` build as the main module ("mod" line).
binary_matches_pin() {
  local tool=$1 bin="$BIN/$1" mod ver
  mod=$(tool_module "$tool"); ver=$(tool_version "$tool")
  [[ -x "$bin" ]] || return 1
  if [[ "$tool" == kwok && -z "${KWOK_BINARY_ONLY:-}" && ! -s "$(kwok_stages_file)" ]]; then
    return 1
  fi
  go version -m "$bin" 2>/dev/null \
    | awk -v m="$mod" -v v="$ver" '($1=="mod"||$1=="dep") && $2==m && $3==v {f=1} END {exit !f}'
}

is_built() {
  local tool=$1
  binary_matches_pin "$tool" || return 1
  # accept a binary built elsewhere at the pinned version (e.g. by a plain
  # `go install`) and record it
  if [[ ! -f "$STAMPS/$tool" ]] || [[ "$(cat "$STAMPS/$tool")" != "$(stamp_line "$tool")" ]]; then
    stamp "$tool"
  fi
  return 0
}

stamp() {
  mkdir -p "$STAMPS"
  stamp_line "$1" >"$STAMPS/$1"
}

record_time() {  # tool seconds
  mkdir -p "$CACHE"
  printf '%s %s %s %ss %s %s cores\n' "$(date -u +%FT%TZ)" "$1" "$(tool_version "$1")" "$2" \
    "$(go env GOVERSION)" "$(nproc)" >>"$TIMES_LOG"
}

# If someone else is already running `go install <module>@<version>` (for
# example a one-off manual build into the same bin dir), wait for it instead of
# compiling the same thing twice.
wait_for_foreign_install() {
  local spec=$1 waited=0
  while pgrep -f "go install ${spec}" >/dev/null 2>&1; do
    if (( waited == 0 )); then log "  waiting for a running 'go install ${spec}' to finish"; fi
    sleep 5; waited=$((waited + 5))
  done
}

go_install() {  # tool package@version [extra go flags...]
  local tool=$1 spec=$2; shift 2
  GOBIN="$BIN" go install -trimpath "$@" "$spec"
  [[ -x "$BIN/$tool" ]] || die "go install $spec did not produce $BIN/$tool"
}

build_minio() {
  wait_for_foreign_install "$MINIO_MODULE@$MINIO_VERSION"
  if is_built minio; then return 0; fi
  go_install minio "$MINIO_MODULE@$MINIO_VERSION" -ldflags "$LDFLAGS_STRIP"
}

# The kwok controller binary runs no stages unless given them with --config
# (kwokctl writes them for you). Publish kwok's own default stages from the same
# pinned module version next to the binary: node-initialize, node heartbeat with
# lease, and the "fast" pod stages (ready, complete, delete).
KWOK_STAGE_FILES=(
  kustomize/stage/node/fast/node-initialize.yaml
  kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  kustomize/stage/pod/fast/pod-ready.yaml
  kustomize/stage/pod/fast/pod-complete.yaml
  kustomize/stage/pod/fast/pod-delete.yaml
)
kwok_stages_file() { echo "$CACHE/share/kwok-$KWOK_VERSION/stages.yaml"; }

write_kwok_stages() {
  local dir out f
  dir=$(cd "$SRC" && go mod download -json "$KWOK_MODULE@$KWOK_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [[ -d "$dir" ]] || die "could not fetch $KWOK_MODULE@$KWOK_VERSION sources"
  out=$(kwok_stages_file)
  mkdir -p "$(dirname "$out")"
  {
    echo "# kwok default stages from $KWOK_MODULE@$KWOK_VERSION (written by hack/build-tools.sh)"
    for f in "${KWOK_STAGE_FILES[@]}"; do
      echo "---"
      echo "# $f"
      cat "$dir/$f"
    done
  } >"$out.tmp"
  mv -f "$out.tmp" "$out"
}

build_kwok() {
  if ! KWOK_BINARY_ONLY=1 binary_matches_pin kwok; then
    go_install kwok "$KWOK_MODULE/cmd/kwok@$KWOK_VERSION" -ldflags "$LDFLAGS_STRIP"
  fi
  write_kwok_stages
}

build_helm() {
  go_install helm "$HELM_MODULE/cmd/helm@$HELM_VERSION" \
    -ldflags "$LDFLAGS_STRIP -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
}

build_kind() {
  go_install kind "$KIND_MODULE@$KIND_VERSION" -ldflags "$LDFLAGS_STRIP"
}

# Static, like the crictl kind's base image ships.
build_crictl() {
  CGO_ENABLED=0 go_install crictl "$CRICTL_MODULE/cmd/crictl@$CRICTL_VERSION" \
    -ldflags "$LDFLAGS_STRIP -X $CRICTL_MODULE/pkg/version.Version=$CRICTL_VERSION"
}

# Static: the CoreDNS image of the offline kind node is the Debian base plus this binary.
build_coredns() {
  CGO_ENABLED=0 go_install coredns "$COREDNS_MODULE@$COREDNS_VERSION" \
    -ldflags "$LDFLAGS_STRIP -X $COREDNS_MODULE/coremain.GitCommit=$COREDNS_VERSION"
}

# etcd's server module has `replace` directives pointing at sibling directories,
# so `go install go.etcd.io/etcd/server/v3@ver` refuses to run. A wrapper module
# that requires it (the replaces of a dependency are ignored; its requirements
# name the matching tagged api/client/pkg modules) builds the same main package.
build_etcd() {
  local dir="$SRC/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<EOF
module chromasnap.local/etcd-build

go 1.26
EOF
  rm -f "$dir/go.sum"
  (
    cd "$dir"
    go get "$ETCD_MODULE@$ETCD_VERSION"
    go build -trimpath -o "$BIN/etcd" \
      -ldflags "$LDFLAGS_STRIP" \
      "$ETCD_MODULE"
  )
}

# k8s.io/kubernetes `replace`s every k8s.io/* staging module with ./staging/src/...,
# which a dependency cannot use. The wrapper module requires k8s.io/kubernetes and
# replaces each staging module with its published v0.X.Y twin; the list of staging
# modules is read from Kubernetes' own go.mod, so it stays exact for the release.
build_k8s() {  # binaries...
  local dir="$SRC/kubernetes-$K8S_VERSION" gomod minor staging_ver pkgs=() b m
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  staging_ver="v0.${K8S_VERSION#v1.}"
  mkdir -p "$dir"
  gomod=$(cd "$dir" && go mod download -json "$K8S_MODULE@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [[ -f "$gomod" ]] || die "could not fetch go.mod of $K8S_MODULE@$K8S_VERSION"
  {
    echo "module chromasnap.local/kubernetes-build"
    echo
    echo "go 1.26"
    echo
    echo "require $K8S_MODULE $K8S_VERSION"
    echo
    echo "replace ("
    awk '/=> \.\/staging\/src\// {print $1}' "$gomod" | sort -u | while read -r m; do
      echo "	$m => $m $staging_ver"
    done
    echo ")"
  } >"$dir/go.mod"
  grep -q "k8s.io/api => k8s.io/api $staging_ver" "$dir/go.mod" \
    || die "no staging replaces found in $gomod"
  rm -f "$dir/go.sum"
  for b in "$@"; do pkgs+=("$K8S_MODULE/cmd/$b"); done
  # the same -X flags Kubernetes' hack/lib/version.sh sets, so /version is right
  local vflags="" build_date
  build_date=$(cd "$dir" && go mod download -json "$K8S_MODULE@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"Time": "\(.*\)",*$/\1/p' | head -1)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    vflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    vflags+=" -X $p.gitTreeState=clean -X $p.buildDate=${build_date:-1970-01-01T00:00:00Z}"
  done
  (
    cd "$dir"
    local with_ver=()
    for p in "${pkgs[@]}"; do with_ver+=("$p@$K8S_VERSION"); done
    go get "${with_ver[@]}"
    mkdir -p "$dir/out"
    go build -trimpath -ldflags "$LDFLAGS_STRIP$vflags" -o "$dir/out/" "${pkgs[@]}"
  )
  for b in "$@"; do mv -f "$dir/out/$b" "$BIN/$b"; done
}

# ---- argument handling --------------------------------------------------------------
expand() {
  case "$1" in
    all) echo "${ALL_TOOLS[@]}" ;;
    k8s) echo "${K8S_TOOLS[@]}" ;;
    node) echo "${NODE_TOOLS[@]}" ;;
    test) echo minio "${K8S_TOOLS[@]}" kubectl helm ;;
    minio|etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok|helm|kind) echo "$1" ;;
    kubelet|kubeadm|kubectl|kube-proxy|crictl|coredns) echo "$1" ;;
    *) die "unknown tool or group '$1' (tools: ${ALL_TOOLS[*]}; groups: all test k8s node)" ;;
  esac
}

main() {
  local args=("$@") requested=() t
  if (( ${#args[@]} == 0 )); then args=(all); fi
  case "${args[0]}" in
    --bin-dir) echo "$BIN"; return 0 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; return 0 ;;
    --list)
      for t in "${ALL_TOOLS[@]}"; do
        if binary_matches_pin "$t"; then s=built; else s=missing; fi
        printf '%-24s %s@%s  %s\n' "$t" "$(tool_module "$t")" "$(tool_version "$t")" "$s"
      done
      return 0 ;;
  esac
  command -v go >/dev/null || die "go is not installed (need Go >= 1.26)"
  local expanded
  for a in "${args[@]}"; do
    expanded=$(expand "$a") || exit 2
    for t in $expanded; do
      [[ " ${requested[*]-} " == *" $t "* ]] || requested+=("$t")
    done
  done

  mkdir -p "$BIN" "$STAMPS" "$SRC"
  # one builder at a time per cache dir; a second caller waits, then skips
  exec 9>"$CACHE/.build.lock"
  if ! flock -n 9; then
    log "another build-tools.sh is running on $CACHE; waiting for it"
    flock 9
  fi

  local k8s_todo=() todo=() start secs
  for t in "${requested[@]}"; do
    if is_built "$t"; then
      log "$t $(tool_version "$t") already built"
    else
      todo+=("$t")
      case "$t" in kube-*|kubelet|kubeadm|kubectl) k8s_todo+=("$t") ;; esac
    fi
  done
  for t in "${todo[@]}"; do
    case "$t" in
      kube-*|kubelet|kubeadm|kubectl)
        # the Kubernetes binaries share almost all packages: one `go build`
        (( ${#k8s_todo[@]} > 0 )) || continue
        log "building ${k8s_todo[*]} $K8S_VERSION …"
        start=$(date +%s)
        build_k8s "${k8s_todo[@]}"
        secs=$(( $(date +%s) - start ))
        for b in "${k8s_todo[@]}"; do
          binary_matches_pin "$b" || die "$BIN/$b does not report $K8S_MODULE@$K8S_VERSION"
          stamp "$b"; record_time "$b" "$secs"
        done
        log "building ${k8s_todo[*]} $K8S_VERSION … done in ${secs}s"
        k8s_todo=()
        ;;
      *)
        log "building $t $(tool_version "$t") …"
        start=$(date +%s)
        "build_${t//-/_}"
        secs=$(( $(date +%s) - start ))
        binary_matches_pin "$t" \
          || die "$BIN/$t does not report $(tool_module "$t")@$(tool_version "$t")"
        stamp "$t"; record_time "$t" "$secs"
        log "building $t $(tool_version "$t") … done in ${secs}s"
        ;;
    esac
  done
  log "tools in $BIN"
}

main "$@"
