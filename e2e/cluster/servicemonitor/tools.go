//go:build tools

// Package servicemonitorbuild pins controller-gen and the Prometheus
// Operator's API types: controller-gen generates the ServiceMonitor CRD from
// those types (as the Prometheus Operator's own build does), so the chart
// tests can validate the chart's ServiceMonitor against the real schema
// without downloading it.
package servicemonitorbuild

import (
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
