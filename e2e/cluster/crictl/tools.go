//go:build tools

// Package crictlbuild pins crictl, which Tier B's teardown uses to stop and
// remove every pod sandbox through the CRI (so CNI releases each network
// namespace, veth and address) before containerd stops.
package crictlbuild

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
