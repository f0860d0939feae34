# Tier B's node: containerd and runc (Debian), the CNI bridge, kubelet,
# kube-proxy, kube-router's NetworkPolicy controller, a host-path volume
# provisioner and the cluster DNS (CoreDNS, a Deployment in kube-system
# behind the kube-dns Service), started after the control plane by
# hermes-cluster. Sourced by hermes-cluster (which sets STATE, PKI, LOGS, RUN,
# NODE_IP, API_PORT and the start/running/healthy helpers), never run.
# shellcheck shell=bash

NODE_NAME=hermes-node
POD_CIDR=10.244.0.0/16
# kube-controller-manager gives the first (only) node the first /24.
NODE_POD_CIDR=10.244.0.0/24
BRIDGE=hermes0
NODE_COMPONENTS=(containerd kubelet kube-proxy kube-router hostpath-provisioner)

# containerd keeps its content store (the imported images) across `down`, so a
# new cluster does not import them again; everything that runs is removed.
CONTAINERD_ROOT=${HERMES_CONTAINERD_ROOT:-/var/lib/hermes/containerd}
CONTAINERD_STATE=/run/hermes/containerd
CONTAINERD_SOCK=$CONTAINERD_STATE/containerd.sock
KUBELET_DIR=$STATE/kubelet
VOLUMES_DIR=$STATE/volumes
CNI_CONF_DIR=$STATE/cni/net.d
CNI_BIN_DIR=/usr/lib/cni
CRICTL="$(crictl_bin_dir)/crictl"
STORAGE_CLASS=hermes-hostpath
# The cluster DNS Service's address (the kubelet's clusterDNS).
CLUSTER_DNS_IP=10.96.0.10
# Stand-ins for the outside world: addresses on the node's loopback
# interface in 198.18.0.0/15 (benchmarking), which is neither private, nor
# the cluster's, nor the node's own address, so the gateway's proxy may
# connect there while it refuses the node. The tests' stand-in package
# registry listens there. Beside them, a link-local address (as a cloud's
# metadata service or a node-local DNS cache has), which no profile's CIDR
# rule may reach unless it names it.
OUTSIDE_IPS=(198.18.0.10 169.254.77.77)

node_health_url() {
  case "$1" in
    kubelet) echo "http://127.0.0.1:10248/healthz" ;;
    kube-proxy) echo "http://127.0.0.1:10256/healthz" ;;
    kube-router) echo "http://127.0.0.1:20244/healthz" ;;
  esac
}

node_healthy() {
  case "$1" in
    containerd) ctr -a "$CONTAINERD_SOCK" version >/dev/null 2>&1 ;;
    kube-router) curl -fsS --max-time 3 "$(node_health_url kube-router)" >/dev/null 2>&1 ;;
    hostpath-provisioner) running hostpath-provisioner ;;
  esac
}

# What the node needs from the machine, checked before anything starts.
node_preflight() {
  local missing=() c
  for c in containerd containerd-shim-runc-v2 runc ctr iptables iptables-save ipset conntrack buildah mkfs.ext4; do
    command -v "$c" >/dev/null || missing+=("$c")
  done
  [ -x "$CNI_BIN_DIR/bridge" ] || missing+=("containernetworking-plugins")
  [ ${#missing[@]} -eq 0 ] || die "missing for Tier B: ${missing[*]} (scripts/install-deps installs them)"
  [ "$(id -u)" = 0 ] || die "Tier B runs a node: it needs root"
  [ -e /dev/loop-control ] || die "this machine has no loop devices: the test provisioner mounts each volume from a file"
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || die "this kernel has no bridge netfilter (br_netfilter): NetworkPolicies could not be enforced"
}

kubeconfig_for() { # user -> path
  local path=$STATE/$1.kubeconfig
  write_kubeconfig "$path" "$1"
  echo "$path"
}

write_node_configs() {
  mkdir -p "$CNI_CONF_DIR" "$KUBELET_DIR" "$VOLUMES_DIR" "$CONTAINERD_ROOT" "$CONTAINERD_STATE"
  cat > "$STATE/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$(pause_image_ref)"
  stream_server_address = "127.0.0.1"
  enable_unprivileged_ports = false
  # This VM refuses a negative oom_score_adj even to root; containerd then
  # clamps the kubelet's (-998 for sandboxes) to its own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
    # gVisor: its own shim and runsc, built from its Go module (build.sh).
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runsc.v1"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
        TypeUrl = "io.containerd.runsc.v1.options"
        ConfigPath = "$STATE/runsc.toml"
EOF
  # The platform is systrap (no KVM in these VMs); gVisor's own network
  # stack runs inside the pod's network namespace.
  cat > "$STATE/runsc.toml" <<EOF
binary_name = "$(gvisor_bin_dir)/runsc"
root = "$STATE/runsc"
[runsc_config]
  platform = "systrap"
EOF
  cat > "$CNI_CONF_DIR/10-hermes.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "hermes",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat > "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines mount cgroup v1 and run no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS_IP]
resolvConf: /etc/resolv.conf
# The images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
maxPods: 250
podPidsLimit: 4096
rotateCertificates: false
serverTLSBootstrap: false
EOF
  cat > "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $(kubeconfig_for kube-proxy)}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the machine's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0}
EOF
}

node_wait() { # description timeout-seconds command...
  local what=$1 timeout=$2 waited=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$waited" -lt $((timeout * 2)) ] || die "$what did not happen in ${timeout}s (logs: $LOGS)"
    sleep 0.5; waited=$((waited + 1))
  done
}

kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

node_up() {
  local t0
  t0=$(date +%s)
  # Pods on a Linux bridge: their traffic must traverse iptables (the
  # enforcer's chains) and be forwarded.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  write_node_configs
  node_addresses

  # containerd finds the gVisor shim on its PATH.
  start containerd env PATH="$(gvisor_bin_dir):$PATH" containerd --config "$STATE/containerd.toml"
  wait_healthy containerd 60
  # A node starts empty: what a crashed or rebooted node left in containerd's
  # metadata is not resumed (the kubelet recreates the pods it should run).
  node_purge_containers
  node_images

  start kubelet "$K8S_BIN/kubelet" \
    --config "$STATE/kubelet.yaml" \
    --kubeconfig "$(kubeconfig_for kubelet)" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --root-dir "$KUBELET_DIR" --cert-dir "$KUBELET_DIR/pki" \
    --v 1
  wait_healthy kubelet 120
  node_wait "node $NODE_NAME Ready" 120 \
    kc wait --for condition=Ready "node/$NODE_NAME" --timeout 1s

  start kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE/kube-proxy.yaml" --v 1
  wait_healthy kube-proxy 60

  node_objects
  node_start_enforcer
  node_start_provisioner
  node_dns
  log "node $NODE_NAME is Ready in $(( $(date +%s) - t0 ))s (pods: $NODE_POD_CIDR on $BRIDGE; containerd: $CONTAINERD_SOCK)"
}

# The cluster objects Tier B's tests and demo expect: the default
# StorageClass of the provisioner and the gVisor RuntimeClass.
node_objects() {
  kc apply --server-side --field-manager hermes-cluster -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: hermes.dev/hostpath
reclaimPolicy: Delete
volumeBindingMode: Immediate
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: gvisor}
handler: runsc
---
# kube-router's NetworkPolicy controller reads what policies select.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "hermes:kube-router"}
rules:
  - apiGroups: [""]
    resources: [pods, namespaces, nodes, services, endpoints]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "hermes:kube-router"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "hermes:kube-router"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "hermes:kube-router"}]
---
# The provisioner creates and deletes the PersistentVolumes of its class.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "hermes:provisioner"}
rules:
  - apiGroups: [""]
    resources: [persistentvolumes]
    verbs: [get, list, watch, create, delete]
  - apiGroups: [""]
    resources: [persistentvolumeclaims]
    verbs: [get, list, watch, update]
  - apiGroups: [storage.k8s.io]
    resources: [storageclasses]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch, update]
  - apiGroups: [""]
    resources: [nodes]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "hermes:provisioner"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "hermes:provisioner"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "hermes:provisioner"}]
EOF
}

# Before the components stop: the kubelet first (so nothing is restarted),
# then every pod sandbox through the CRI, so CNI releases each network
# namespace, veth and address.
node_drain() {
  if running kubelet; then
    kill "$(cat "$RUN/kubelet.pid")" 2>/dev/null || true
    sleep 1
  fi
  if running containerd && [ -x "$CRICTL" ]; then
    "$CRICTL" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 60s rmp --all --force >/dev/null 2>&1 || true
    node_purge_containers
  fi
}

# Every container containerd still records (a sandbox that never started, or
# all of them after a crash or a reboot: its root survives `down`). Only while
# no kubelet runs.
node_purge_containers() {
  local id
  for id in $(ctr -a "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    ctr -a "$CONTAINERD_SOCK" -n k8s.io containers rm "$id" >/dev/null 2>&1 || true
  done
}

# After the components stop: anything a crash left behind.
node_cleanup() {
  local m ns
  # Container shims of this containerd outlive it.
  pkill -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
  pkill -f "containerd-shim-runsc-v1.real .*-address $CONTAINERD_SOCK" 2>/dev/null || true
  # Mounts (container root filesystems, pod volumes, sandbox namespaces),
  # deepest first; again while any is left (unmounting one can uncover
  # another mounted beneath it).
  local pass
  for pass in 1 2 3 4 5; do
    local mounts
    mounts=$(findmnt -rn -o TARGET | grep -E "^($CONTAINERD_STATE|$CONTAINERD_ROOT|$KUBELET_DIR|$VOLUMES_DIR|$STATE/runsc|/run/netns/cni-)" | sort -r || true)
    [ -n "$mounts" ] || break
    for m in $mounts; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    [ "$pass" -lt 5 ] || log "warning: mounts left behind: $mounts"
  done
  rm -f /run/netns/cni-* 2>/dev/null || true
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
    ip netns delete "$ns" 2>/dev/null || true
  done
  ip link delete "$BRIDGE" 2>/dev/null || true
  local ip
  for ip in "${OUTSIDE_IPS[@]}"; do ip addr del "$ip/32" dev lo 2>/dev/null || true; done
  # Packet-filter state: kube-proxy's and kube-router's chains and sets, and
  # the bridge plugin's masquerade chains.
  [ -x "$K8S_BIN/kube-proxy" ] && "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  # No process of the node may rewrite rules while they are removed.
  pkill -9 -f "^$(netpol_bin_dir)/kube-router" 2>/dev/null || true
  pkill -9 -f "^$K8S_BIN/kube-proxy" 2>/dev/null || true
  pkill -9 -f "^$K8S_BIN/kubelet" 2>/dev/null || true
  # Whatever is left of the kubelet's, kube-proxy's, kube-router's and the
  # CNI plugins' chains: each table is written back without them.
  # (Read into a variable first: under pipefail, `save | grep -q` fails
  # whenever grep stops reading before a long save is written out, and the
  # table would be skipped.)
  local table save rules
  for save in iptables ip6tables; do
    for table in filter nat mangle; do
      rules=$("$save-save" -t "$table" 2>/dev/null || true)
      if grep -qE -- '(KUBE|CNI)-' <<<"$rules"; then
        grep -vE -- '(KUBE|CNI)-' <<<"$rules" | "$save-restore" -T "$table" ||
          log "warning: $save-restore -T $table failed"
      fi
    done
  done
  node_cleanup_enforcer
  rm -rf "$CONTAINERD_STATE"
  local left
  left=$( (iptables-save; ip6tables-save) 2>/dev/null | grep -cE -- '(KUBE|CNI)-' || true)
  [ "$left" = 0 ] || log "warning: $left packet-filter lines of the node are left (iptables-save | grep -E 'KUBE-|CNI-')"
}

# The NetworkPolicy enforcer: kube-router's policy controller alone (no
# routing, no service proxy; see docs/test-clusters.md for why this one).
node_start_enforcer() {
  start kube-router env NODE_NAME="$NODE_NAME" "$(netpol_bin_dir)/kube-router" \
    --run-firewall=true --run-router=false --run-service-proxy=false \
    --kubeconfig="$(kubeconfig_for kube-router)" --hostname-override="$NODE_NAME" \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
    --health-port=20244
  wait_healthy kube-router 60
  node_wait "kube-router's chains" 60 iptables -S KUBE-ROUTER-FORWARD
}

# kube-router leaves its chains and sets behind by design, and its
# --cleanup-config does not clean them in v2.1.0: node_cleanup removes the
# chains (with every KUBE- chain); the sets go once nothing references them.
node_cleanup_enforcer() {
  local set
  for set in $(ipset list -n 2>/dev/null | grep -E '^KUBE-(SRC|DST)-' || true); do
    ipset destroy "$set" 2>/dev/null || true
  done
}

# The sandbox and DNS images are imported, never pulled. Again on a node
# reused: under disk pressure the kubelet deletes unused images whatever the
# GC thresholds say, and without the sandbox image no pod starts.
node_images() {
  if ! ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -qxF "$(pause_image_ref)"; then
    ctr -a "$CONTAINERD_SOCK" -n k8s.io images import --no-unpack "$(pause_image_dir)/pause.tar" >/dev/null
  fi
  if ! ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -qxF "$(coredns_image_ref)"; then
    ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$(coredns_image_dir)/coredns.tar" >/dev/null
  fi
}

# On a node reused: a provisioner started from another build (its binary is
# keyed by its source) is replaced, so the volumes this checkout's tests make
# are this checkout's kind. Its state is all in the API and the volumes.
node_refresh_provisioner() {
  local pid exe want
  pid=$(cat "$RUN/hostpath-provisioner.pid" 2>/dev/null) || return 0
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 0
  want="$(provisioner_bin_dir)/hermes-hostpath-provisioner"
  [ "$exe" = "$want" ] && return 0
  [ -x "$want" ] || "$_lib_here/build.sh" tier-b
  log "restarting hostpath-provisioner: it runs $exe, this checkout builds $want"
  kill "$pid" 2>/dev/null || true
  local _
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  node_start_provisioner
}

node_start_provisioner() {
  start hostpath-provisioner "$(provisioner_bin_dir)/hermes-hostpath-provisioner" \
    --kubeconfig="$(kubeconfig_for provisioner)" --node-name="$NODE_NAME" \
    --provisioner-name=hermes.dev/hostpath --root="$VOLUMES_DIR"
  wait_healthy hostpath-provisioner 30
}

# The cluster DNS (coredns/coredns.yaml): CoreDNS behind the kube-dns Service.
# The stand-in addresses on the node's loopback (again on a node reused).
node_addresses() {
  local ip
  for ip in "${OUTSIDE_IPS[@]}"; do ip addr replace "$ip/32" dev lo; done
}

node_dns() {
  local rendered hash
  rendered=$(sed -e "s|@IMAGE@|$(coredns_image_ref)|" -e "s|@CLUSTER_DNS_IP@|$CLUSTER_DNS_IP|" \
    -e "s|@NODE_IP@|$NODE_IP|" -e "s|@REGISTRY_IP@|${OUTSIDE_IPS[0]}|" \
    "$_lib_here/coredns/coredns.yaml")
  hash=$(printf '%s' "$rendered" | sha256sum | cut -c1-16)
  printf '%s\n' "${rendered//@CONFIG_HASH@/$hash}" |
    kc apply --server-side --force-conflicts --field-manager hermes-cluster -f - >/dev/null
  node_wait "the cluster DNS (CoreDNS) ready" 120 \
    kc -n kube-system rollout status deployment/coredns --timeout 1s
}
