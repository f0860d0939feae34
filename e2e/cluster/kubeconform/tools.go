//go:build tools

// Package kubeconformbuild pins kubeconform, which validates the chart's
// rendered manifests against JSON schemas generated from the test cluster's
// own OpenAPI document (no schema is downloaded).
package kubeconformbuild

import (
	_ "github.com/yannh/kubeconform/cmd/kubeconform"
)
