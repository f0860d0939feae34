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

# The address pods reach the node (and Tier B's API server) at: the source
# address of the default route, unless HERMES_NODE_IP says otherwise.
node_ip() {
  if [ -n "${HERMES_NODE_IP:-}" ]; then echo "$HERMES_NODE_IP"; return; fi
  local dev ip
  dev=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
  [ -n "$dev" ] || die "no IPv4 default route: set HERMES_NODE_IP to the node's address"
  ip=$(ip -4 -o addr show dev "$dev" scope global | awk '{split($4, a, "/"); print a[1]; exit}')
  [ -n "$ip" ] || die "no IPv4 address on $dev: set HERMES_NODE_IP to the node's address"
  echo "$ip"
}
# crictl and the pod sandbox (pause) image of Tier B's node.
crictl_bin_dir() { echo "$HERMES_CACHE/crictl-$(_sum_key crictl)/bin"; }
pause_image_dir() { echo "$HERMES_CACHE/pause-$(sha256sum "$_lib_here/pause/pause.c" | cut -c1-12)"; }
# Its reference names its content, so a changed pause.c is a new image.
pause_image_ref() { echo "hermes.local/pause:$(sha256sum "$_lib_here/pause/pause.c" | cut -c1-12)"; }
# Tier B's NetworkPolicy enforcer and PVC provisioner.
netpol_bin_dir() { echo "$HERMES_CACHE/kube-router-${KUBE_ROUTER_VERSION}-$(_sum_key kube-router)/bin"; }
# The provisioner is our own main: its Go sources are part of its key too.
_src_key() { cat "$_lib_here/$1/go.mod" "$_lib_here/$1/go.sum" "$_lib_here/$1/"*.go | sha256sum | cut -c1-12; }
provisioner_bin_dir() { echo "$HERMES_CACHE/provisioner-${PROVISIONER_LIB_VERSION}-$(_src_key provisioner)/bin"; }
# Tier B's cluster DNS: the CoreDNS binary and its image (an OCI archive
# imported into the node's containerd), named by its inputs.
coredns_key() { _src_key coredns; }
coredns_image_dir() { echo "$HERMES_CACHE/coredns-${COREDNS_VERSION}-$(coredns_key)"; }
coredns_image_ref() { echo "hermes.local/coredns:${COREDNS_VERSION}-$(coredns_key)"; }
# gVisor's runsc and containerd-shim-runsc-v1, for pods with a gVisor
# runtimeClassName. The shim's patch and its containerd 1.6 wrapper are part of
# the key.
gvisor_bin_dir() {
  local key
  key=$(cat "$_lib_here"/gvisor/{go.mod,go.sum,shim-oom-score.patch,containerd-shim-runsc-v1} | sha256sum | cut -c1-12)
  echo "$HERMES_CACHE/gvisor-$key/bin"
}
# Helm and kubeconform, for the chart (charts/hermes): its tests, the Tier B
# suite and the demo install the operator with Helm.
helm_bin_dir() { echo "$HERMES_CACHE/helm-${HELM_VERSION}-$(_sum_key helm)/bin"; }
kubeconform_bin_dir() { echo "$HERMES_CACHE/kubeconform-${KUBECONFORM_VERSION}-$(_sum_key kubeconform)/bin"; }
# controller-gen and the ServiceMonitor CRD it generates (bin/, crd/).
servicemonitor_dir() { echo "$HERMES_CACHE/servicemonitor-${PROMETHEUS_OPERATOR_VERSION}-$(_sum_key servicemonitor)"; }
