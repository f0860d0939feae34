//go:build tools

// Package etcdbuild pins the etcd server the test clusters build.
package etcdbuild

import (
	_ "go.etcd.io/etcd/server/v3"
)
