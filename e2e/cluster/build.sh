#!/usr/bin/env bash
# Builds the test-cluster binaries from the Go module proxy into a cache
# outside the repository, keyed by version and by the pinned module sums, so
# only the first run on a machine compiles anything.
#
#   build.sh [tier-a|tier-b|tools]   (default tier-a)
#
# tier-b also builds Tier B's NetworkPolicy enforcer (kube-router), PVC
# provisioner (hermes-hostpath-provisioner) and cluster DNS (CoreDNS, with its
# image), each into its own cache entry.
# tools builds Helm and kubeconform (the chart's install and validation), each
# into its own cache entry, and generates the ServiceMonitor CRD (with
# controller-gen, from the Prometheus Operator's API types) that the chart
# tests validate the chart's ServiceMonitor against.
#
# Prints nothing but progress on stderr; `build.sh --print-dirs` prints the
# bin folders (Kubernetes, etcd, kube-router, provisioner, Helm, kubeconform)
# and the folder holding the ServiceMonitor CRD, one a line in that order, for
# other scripts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

k8s_bin=$(k8s_bin_dir)
etcd_bin=$(etcd_bin_dir)
netpol_bin=$(netpol_bin_dir)
provisioner_bin=$(provisioner_bin_dir)
helm_bin=$(helm_bin_dir)
kubeconform_bin=$(kubeconform_bin_dir)
servicemonitor=$(servicemonitor_dir)
if [ "${1:-}" = "--print-dirs" ]; then
  printf '%s\n' "$k8s_bin" "$etcd_bin" "$netpol_bin" "$provisioner_bin" "$helm_bin" "$kubeconform_bin" "$servicemonitor/crd"
  exit 0
fi

# One Go program of a wrapper module into its own cache entry:
#   build_tool NAME MODULE-DIR BIN-DIR PACKAGE [LDFLAGS]
build_tool() {
  local name=$1 dir=$2 bin=$3 pkg=$4 ldflags=${5:-}
  [ -x "$bin/$name" ] && return 0
  log "building $name (first run on this machine; later runs reuse $bin)"
  local start
  start=$(date +%s)
  mkdir -p "$bin"
  (cd "$here/$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name.partial" "$pkg")
  mv "$bin/$name.partial" "$bin/$name"
  log "built $name in $(( $(date +%s) - start ))s"
}

# An image whose only file is BINARY, at /<its name>, run as USER, written
# as an OCI archive (imported by the node, never pulled):
#   one_file_image BINARY USER REF ARCHIVE
one_file_image() {
  local binary=$1 user=$2 ref=$3 archive=$4 name store ctr
  name=$(basename "$binary")
  store=$(mktemp -d)
  local bstore=(--root "$store/storage" --runroot "$store/run" --storage-driver vfs)
  ctr=$(buildah "${bstore[@]}" from scratch)
  buildah "${bstore[@]}" copy "$ctr" "$binary" "/$name" >/dev/null
  buildah "${bstore[@]}" config --entrypoint "[\"/$name\"]" --user "$user" "$ctr"
  buildah "${bstore[@]}" commit -q --format oci "$ctr" "$ref" >/dev/null
  buildah "${bstore[@]}" rm "$ctr" >/dev/null
  mkdir -p "$(dirname "$archive")"
  buildah "${bstore[@]}" push -q "$ref" "oci-archive:$archive.partial:$ref"
  mv "$archive.partial" "$archive"
  buildah "${bstore[@]}" rmi -a >/dev/null 2>&1 || true
  rm -rf "$store"
}

if [ "${1:-}" = tools ]; then
  # Helm stamps its own version and the Kubernetes minor of its client
  # modules (its Makefile's flags), so `helm version` and the default
  # .Capabilities.KubeVersion say what was built.
  k8s_mod_minor=$(awk '$1 == "k8s.io/client-go" { v = $2; sub(/^v0\./, "", v); sub(/\..*/, "", v); print v }' "$here/helm/go.mod")
  [ -n "$k8s_mod_minor" ] || die "helm/go.mod names no k8s.io/client-go"
  hv=helm.sh/helm/v3
  build_tool helm helm "$helm_bin" "$hv/cmd/helm" \
    "-X $hv/internal/version.version=${HELM_VERSION} -X $hv/internal/version.gitTreeState=clean -X $hv/pkg/lint/rules.k8sVersionMajor=1 -X $hv/pkg/lint/rules.k8sVersionMinor=${k8s_mod_minor} -X $hv/pkg/chartutil.k8sVersionMajor=1 -X $hv/pkg/chartutil.k8sVersionMinor=${k8s_mod_minor}"
  build_tool kubeconform kubeconform "$kubeconform_bin" github.com/yannh/kubeconform/cmd/kubeconform "-X main.version=${KUBECONFORM_VERSION}"
  crd=monitoring.coreos.com_servicemonitors.yaml
  if [ ! -f "$servicemonitor/crd/$crd" ]; then
    build_tool controller-gen servicemonitor "$servicemonitor/bin" sigs.k8s.io/controller-tools/cmd/controller-gen
    log "generating the ServiceMonitor CRD (Prometheus Operator ${PROMETHEUS_OPERATOR_VERSION}) with controller-gen"
    tmp="$servicemonitor/crd.partial"
    rm -rf "$tmp" && mkdir -p "$tmp"
    (cd "$here/servicemonitor" && GOFLAGS=-mod=readonly "$servicemonitor/bin/controller-gen" crd:crdVersions=v1,maxDescLen=0 \
      paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 output:crd:dir="$tmp")
    [ -f "$tmp/$crd" ] || die "controller-gen wrote no $crd"
    mkdir -p "$servicemonitor/crd"
    mv "$tmp/$crd" "$servicemonitor/crd/$crd"
    rm -rf "$tmp"
  fi
  exit 0
fi

tier=${1:-tier-a}
case "$tier" in
  tier-a) k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl) ;;
  tier-b) k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy) ;;
  *) die "unknown target '$tier' (expected tier-a, tier-b or tools)" ;;
esac

missing=()
for c in "${k8s_cmds[@]}"; do
  [ -x "$k8s_bin/$c" ] || missing+=("$c")
done

export CGO_ENABLED=0 GOFLAGS=-mod=readonly
if [ ${#missing[@]} -gt 0 ]; then
  log "building Kubernetes ${K8S_VERSION}: ${missing[*]} (first run on this machine; later runs reuse $k8s_bin)"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor} -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
  tmp="$k8s_bin.partial"
  rm -rf "$tmp" && mkdir -p "$tmp"
  pkgs=()
  for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  start=$(date +%s)
  (cd "$here/k8s" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  mkdir -p "$k8s_bin"
  mv "$tmp"/* "$k8s_bin/" && rmdir "$tmp"
  log "built ${missing[*]} in $(( $(date +%s) - start ))s"
fi

if [ ! -x "$etcd_bin/etcd" ]; then
  log "building etcd ${ETCD_VERSION} (first run on this machine; later runs reuse $etcd_bin)"
  start=$(date +%s)
  mkdir -p "$etcd_bin"
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$etcd_bin/etcd.partial" go.etcd.io/etcd/server/v3)
  mv "$etcd_bin/etcd.partial" "$etcd_bin/etcd"
  log "built etcd in $(( $(date +%s) - start ))s"
fi

if [ "$tier" = tier-b ]; then
  crictl_bin=$(crictl_bin_dir)
  if [ ! -x "$crictl_bin/crictl" ]; then
    log "building crictl (first run on this machine; later runs reuse $crictl_bin)"
    start=$(date +%s)
    mkdir -p "$crictl_bin"
    (cd "$here/crictl" && go build -trimpath -ldflags "-s -w" -o "$crictl_bin/crictl.partial" sigs.k8s.io/cri-tools/cmd/crictl)
    mv "$crictl_bin/crictl.partial" "$crictl_bin/crictl"
    log "built crictl in $(( $(date +%s) - start ))s"
  fi
  # gVisor: runsc and its containerd shim (Debian's runsc has no shim), for
  # pods whose runtimeClassName selects the runtime io.containerd.runsc.v1.
  # The shim is built from a patched copy of the pinned module
  # (gvisor/shim-oom-score.patch) and runs behind gvisor/containerd-shim-runsc-v1,
  # which adapts its start output to containerd 1.6.
  gvisor_bin=$(gvisor_bin_dir)
  if [ ! -x "$gvisor_bin/runsc" ] || [ ! -x "$gvisor_bin/containerd-shim-runsc-v1.real" ]; then
    gvisor_version=$(awk '$1 == "require" && $2 == "gvisor.dev/gvisor" { print $3 }' "$here/gvisor/go.mod")
    log "building gVisor ${gvisor_version}: runsc, containerd-shim-runsc-v1 (first run on this machine; later runs reuse $gvisor_bin)"
    start=$(date +%s)
    tmp="$gvisor_bin.partial"
    rm -rf "$tmp" && mkdir -p "$tmp"
    (cd "$here/gvisor" &&
      go build -trimpath -ldflags "-s -w -X gvisor.dev/gvisor/runsc/version.version=${gvisor_version}" -o "$tmp/runsc" gvisor.dev/gvisor/runsc)
    # The patched copy: a -modfile with a replace, so gvisor/go.mod stays as pinned.
    src=$(cd "$here/gvisor" && go list -m -f '{{.Dir}}' gvisor.dev/gvisor)
    [ -n "$src" ] || die "gvisor.dev/gvisor is not in the module cache"
    cp -r "$src" "$tmp/src" && chmod -R u+w "$tmp/src"
    patch -s -p1 -d "$tmp/src" < "$here/gvisor/shim-oom-score.patch"
    cp "$here/gvisor/go.mod" "$here/gvisor/go.sum" "$tmp/"
    (cd "$here/gvisor" &&
      go mod edit -modfile="$tmp/go.mod" -replace "gvisor.dev/gvisor=$tmp/src" &&
      go build -modfile="$tmp/go.mod" -trimpath -ldflags "-s -w" -o "$tmp/containerd-shim-runsc-v1.real" gvisor.dev/gvisor/shim)
    install -m 0755 "$here/gvisor/containerd-shim-runsc-v1" "$tmp/containerd-shim-runsc-v1"
    rm -rf "$tmp/src" "$tmp/go.mod" "$tmp/go.sum"
    mkdir -p "$gvisor_bin"
    mv "$tmp"/* "$gvisor_bin/" && rmdir "$tmp"
    log "built runsc, containerd-shim-runsc-v1 in $(( $(date +%s) - start ))s"
  fi
  # The pod sandbox image: a static pause binary, the only file of its image.
  pause_dir=$(pause_image_dir)
  if [ ! -f "$pause_dir/pause.tar" ]; then
    command -v buildah >/dev/null || die "buildah is missing (apt-get install -y buildah)"
    log "building the pod sandbox image $(pause_image_ref)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    gcc -static -Os -Wall -Wextra -Werror -o "$tmp/pause" "$here/pause/pause.c"
    strip "$tmp/pause"
    one_file_image "$tmp/pause" 65535:65535 "$(pause_image_ref)" "$pause_dir/pause.tar"
    log "built $(pause_image_ref)"
  fi
fi
[ "$tier" = tier-b ] || exit 0

if [ ! -x "$netpol_bin/kube-router" ]; then
  log "building kube-router ${KUBE_ROUTER_VERSION} (first run on this machine; later runs reuse $netpol_bin)"
  start=$(date +%s)
  mkdir -p "$netpol_bin"
  pkg=github.com/cloudnativelabs/kube-router/v2/pkg/version
  (cd "$here/kube-router" && go build -trimpath -ldflags "-s -w -X $pkg.Version=${KUBE_ROUTER_VERSION} -X $pkg.BuildDate=1970-01-01T00:00:00Z" \
    -o "$netpol_bin/kube-router.partial" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
  mv "$netpol_bin/kube-router.partial" "$netpol_bin/kube-router"
  log "built kube-router in $(( $(date +%s) - start ))s"
fi

if [ ! -x "$provisioner_bin/hermes-hostpath-provisioner" ]; then
  log "building hermes-hostpath-provisioner (first run on this machine; later runs reuse $provisioner_bin)"
  start=$(date +%s)
  mkdir -p "$provisioner_bin"
  (cd "$here/provisioner" && go build -trimpath -ldflags "-s -w" -o "$provisioner_bin/hermes-hostpath-provisioner.partial" .)
  mv "$provisioner_bin/hermes-hostpath-provisioner.partial" "$provisioner_bin/hermes-hostpath-provisioner"
  log "built hermes-hostpath-provisioner in $(( $(date +%s) - start ))s"
fi

# The cluster DNS: CoreDNS (coredns/main.go) as the only file of its image, an
# OCI archive the node imports into its containerd (never pulled).
coredns_dir=$(coredns_image_dir)
if [ ! -f "$coredns_dir/coredns.tar" ]; then
  command -v buildah >/dev/null || die "buildah is missing (apt-get install -y buildah)"
  log "building CoreDNS ${COREDNS_VERSION} and its image $(coredns_image_ref) (first run on this machine; later runs reuse $coredns_dir)"
  start=$(date +%s)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$here/coredns" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}" -o "$tmp/coredns" .)
  one_file_image "$tmp/coredns" 65532:65532 "$(coredns_image_ref)" "$coredns_dir/coredns.tar"
  log "built CoreDNS and its image in $(( $(date +%s) - start ))s"
fi
