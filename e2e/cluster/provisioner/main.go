// Command hermes-hostpath-provisioner is Tier B's dynamic provisioner for
// PersistentVolumeClaims. It runs as a host process on the single node (no
// pod, no helper image) and drives the controller of
// sigs.k8s.io/sig-storage-lib-external-provisioner, which watches claims of
// storage classes naming this provisioner, creates PersistentVolume objects
// and calls Delete on reclaim.
//
// A volume is a filesystem of the claim's size, as a real volume is: a
// sparse file <root>/<pv-name>.img formatted ext4 and loop-mounted on the
// directory <root>/<pv-name>, whose root is made mode 0777 so that a
// non-root pod can write to it whatever its uid. A pod that writes past the
// size gets ENOSPC, never the node's disk. It is exposed as a hostPath
// PersistentVolume pinned to the node by node affinity. Delete unmounts it
// and removes the directory and the file (reclaimPolicy Delete, the default
// of a StorageClass); Retain leaves them. Block volumes are refused.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
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
	size, ok := opts.PVC.Spec.Resources.Requests[v1.ResourceStorage]
	if !ok {
		return nil, controller.ProvisioningFinished, errors.New("the claim requests no storage size")
	}
	bytes := size.Value()
	if bytes < minVolumeBytes || bytes > maxVolumeBytes {
		return nil, controller.ProvisioningFinished, fmt.Errorf("size %s is outside %d MiB..%d GiB", size.String(), minVolumeBytes>>20, maxVolumeBytes>>30)
	}
	dir := filepath.Join(p.root, opts.PVName)
	if err := p.makeFilesystem(dir, bytes); err != nil {
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
	if mounted(dir) {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("unmounting %s: %v: %s", dir, err, out)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Remove(dir + ".img"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	klog.Infof("deleted %s (%s)", pv.Name, dir)
	return nil
}

// The sizes a volume may have: ext4's own floor, and a bound on what a
// claim may take of the node's disk (the file is sparse, so only what is
// written takes room).
const (
	minVolumeBytes = 16 << 20
	maxVolumeBytes = 64 << 30
)

// makeFilesystem makes dir a mounted ext4 filesystem of the given size,
// backed by the sparse file dir.img, its root mode 0777. A half-made volume
// is undone.
func (p *hostPathProvisioner) makeFilesystem(dir string, bytes int64) (err error) {
	img := dir + ".img"
	defer func() {
		if err != nil {
			if mounted(dir) {
				_ = exec.Command("umount", dir).Run()
			}
			_ = os.RemoveAll(dir)
			_ = os.Remove(img)
		}
	}()
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(bytes); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// No blocks reserved for root: the pods write as non-root, and the
	// claim's whole size is theirs.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1", img).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %v: %s", img, err, out)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("mount", "-o", "loop,nosuid,nodev", img, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("mounting %s: %v: %s", img, err, out)
	}
	return os.Chmod(dir, 0o777) // the filesystem's root, once mounted
}

// mounted says whether dir is a mount point (listed in /proc/self/mounts).
func mounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 1 && fields[1] == dir {
			return true
		}
	}
	return false
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
