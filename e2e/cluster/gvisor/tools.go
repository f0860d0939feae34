//go:build tools

// Package gvisorbuild pins gVisor's runsc and its containerd shim
// (containerd-shim-runsc-v1), which Tier B's node registers as the CRI runtime
// io.containerd.runsc.v1 for pods whose profile sets a gVisor runtimeClassName.
// Debian's runsc package has no shim, and the runc shim cannot drive runsc's
// multi-container sandboxes.
package gvisorbuild

import (
	_ "gvisor.dev/gvisor/runsc"
	_ "gvisor.dev/gvisor/shim"
)
