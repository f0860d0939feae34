//go:build tools

// Package helmbuild pins Helm, which installs, lints and renders the chart
// (charts/hermes) in the tests and the demo.
package helmbuild

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
