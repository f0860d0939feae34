# Shared helpers of the test-cluster scripts. Sourced, never run.
# shellcheck shell=bash
_lib_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$_lib_here/versions.env"

# Builds live outside the repository, shared by every clone on the machine.
HERMES_CACHE=${HERMES_CACHE:-/var/cache/hermes}

log() { printf 'hermes-cluster: %s\n' "$*" >&2; }
die() { printf 'hermes-cluster: error: %s\n' "$*" >&2; exit 1; }

# A short digest of the pinned module sums: a change of pins is a new cache key.
_sum_key() { cat "$_lib_here/$1/go.mod" "$_lib_here/$1/go.sum" | sha256sum | cut -c1-12; }
k8s_bin_dir()  { echo "$HERMES_CACHE/kubernetes-${K8S_VERSION}-$(_sum_key k8s)/bin"; }
etcd_bin_dir() { echo "$HERMES_CACHE/etcd-${ETCD_VERSION}-$(_sum_key etcd)/bin"; }
# Tier B's NetworkPolicy enforcer and PVC provisioner.
netpol_bin_dir() { echo "$HERMES_CACHE/kube-router-${KUBE_ROUTER_VERSION}-$(_sum_key kube-router)/bin"; }
# The provisioner is our own main: its Go sources are part of its key too.
_src_key() { cat "$_lib_here/$1/go.mod" "$_lib_here/$1/go.sum" "$_lib_here/$1/"*.go | sha256sum | cut -c1-12; }
provisioner_bin_dir() { echo "$HERMES_CACHE/provisioner-${PROVISIONER_LIB_VERSION}-$(_src_key provisioner)/bin"; }
