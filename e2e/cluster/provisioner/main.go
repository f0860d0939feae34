// Command hermes-hostpath-provisioner is Tier B's dynamic provisioner for
// PersistentVolumeClaims. It runs as a host process on the single node (no
// pod, no helper image) and drives the controller of
// sigs.k8s.io/sig-storage-lib-external-provisioner, which watches claims of
// storage classes naming this provisioner, creates PersistentVolume objects
// and calls Delete on reclaim.
//
// A volume is a directory <root>/<pv-name>, created mode 0777 (umask
// bypassed) so that a non-root pod can write to it whatever its uid; it is
// exposed as a hostPath PersistentVolume pinned to the node by node
// affinity. Delete removes the directory (reclaimPolicy Delete, the default
// of a StorageClass); Retain leaves it. Block volumes are refused.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// annDir records the directory a volume lives in; Delete trusts nothing else.
const annDir = "hermes.dev/hostpath-dir"

type hostPathProvisioner struct {
	root string // absolute, cleaned
	node string
}

func (p *hostPathProvisioner) Provision(_ context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	if opts.PVC.Spec.VolumeMode != nil && *opts.PVC.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, errors.New("block volumes are not supported")
	}
	if opts.SelectedNodeName != "" && opts.SelectedNodeName != p.node {
		return nil, controller.ProvisioningFinished, fmt.Errorf("claim is for node %q; this provisioner serves %q", opts.SelectedNodeName, p.node)
	}
	dir := filepath.Join(p.root, opts.PVName)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if err := os.Chmod(dir, 0o777); err != nil { // MkdirAll is subject to the umask
		return nil, controller.ProvisioningFinished, err
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	dirType := v1.HostPathDirectory
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        opts.PVName,
			Annotations: map[string]string{annDir: dir},
		},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   opts.PVC.Spec.AccessModes,
			MountOptions:                  opts.StorageClass.MountOptions,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: opts.PVC.Spec.Resources.Requests[v1.ResourceStorage]},
			PersistentVolumeSource: v1.PersistentVolumeSource{
				HostPath: &v1.HostPathVolumeSource{Path: dir, Type: &dirType},
			},
			NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{
				NodeSelectorTerms: []v1.NodeSelectorTerm{{MatchExpressions: []v1.NodeSelectorRequirement{{
					Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{p.node},
				}}}},
			}},
		},
	}
	klog.Infof("provisioned %s for claim %s/%s in %s", opts.PVName, opts.PVC.Namespace, opts.PVC.Name, dir)
	return pv, controller.ProvisioningFinished, nil
}

func (p *hostPathProvisioner) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	dir := pv.Annotations[annDir]
	// Remove only a direct child of the root that this provisioner created.
	if dir == "" || filepath.Dir(dir) != p.root || filepath.Base(dir) != pv.Name {
		return &controller.IgnoredError{Reason: "not a volume of this provisioner's root " + p.root}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	klog.Infof("deleted %s (%s)", pv.Name, dir)
	return nil
}

func main() {
	klog.InitFlags(nil)
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server (empty: in-cluster config)")
	name := flag.String("provisioner-name", "hermes.dev/hostpath", "the StorageClass provisioner this process serves")
	node := flag.String("node-name", "", "the node the volumes live on (required; its kubernetes.io/hostname label)")
	root := flag.String("root", "/var/lib/hermes/tier-b/volumes", "directory under which each volume is a directory")
	flag.Parse()
	if *node == "" {
		klog.Exit("--node-name is required")
	}
	if !filepath.IsAbs(*root) || filepath.Clean(*root) == "/" || strings.ContainsAny(*root, "\n") {
		klog.Exitf("--root must be an absolute path other than /, got %q", *root)
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		klog.Exit(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Exit(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		klog.Exit(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := &hostPathProvisioner{root: filepath.Clean(*root), node: *node}
	klog.Infof("serving provisioner %s on node %s, volumes under %s", *name, *node, p.root)
	// One process on one node: no leader election (it would need a Lease
	// namespace and delay the first provisioning).
	controller.NewProvisionController(ctx, client, *name, p, controller.LeaderElection(false)).Run(ctx)
}
