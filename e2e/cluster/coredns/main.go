// Command coredns is Tier B's cluster DNS: CoreDNS, built from its module
// with only the plugins a cluster resolver needs (the stock build links
// every cloud provider's SDK). It answers the cluster's Service and Pod
// names (kubernetes), the test hosts' names under hermes.test (hosts), and
// forwards the rest to the node's resolver, as a cluster's CoreDNS does.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	// The order plugins run in, as CoreDNS's own plugin.cfg orders them.
	dnsserver.Directives = []string{
		"reload",
		"ready",
		"health",
		"errors",
		"log",
		"loadbalance",
		"cache",
		"hosts",
		"kubernetes",
		"forward",
	}
}

func main() {
	coremain.Run()
}
