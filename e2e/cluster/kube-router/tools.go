//go:build tools

// Package kuberouterbuild pins kube-router, whose network policy controller
// is Tier B's NetworkPolicy enforcer (the router and service proxy stay off).
package kuberouterbuild

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
