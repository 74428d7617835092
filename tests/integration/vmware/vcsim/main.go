// vcsim for safehold's tests: govmomi's vSphere simulator (Debian's
// golang-github-vmware-govmomi-dev ships the simulator package but not vcsim's
// main). Serves one simulated vCenter (VPX model: 1 datacenter, clusters,
// hosts, VMs, datastores) plus the vAPI REST endpoints (tags) on the given
// address, prints the SDK URL on stdout as `VCSIM_URL=...` once it listens,
// and runs until SIGTERM or SIGINT.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "address to listen on")
	cert := flag.String("tlscert", "", "PEM certificate (TLS when given with -tlskey, else plain HTTP)")
	key := flag.String("tlskey", "", "PEM private key")
	vms := flag.Int("vm", 2, "VMs per host and per cluster")
	username := flag.String("username", "", "the only user name accepted (default: any non-empty one)")
	password := flag.String("password", "", "its password")
	flag.Parse()

	model := simulator.VPX()
	model.Machine = *vms
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	model.Service.RegisterEndpoints = true
	model.Service.Listen = &url.URL{Host: *listen}
	if *username != "" {
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatal(err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	server := model.Service.NewServer()
	fmt.Printf("VCSIM_URL=%s\n", server.URL.String())
	os.Stdout.Sync()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	server.Close()
	model.Remove()
}
