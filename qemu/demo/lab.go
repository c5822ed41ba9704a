package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/shoal-lab/shoal/qemu/lab"
)

// network is the demo's virtual lab: a bridge, the server's host, and a
// router host that only sends IPv6 router advertisements.
type network struct {
	l       *lab.Lab
	server  *lab.Host
	rtr     *exec.Cmd
	log     *slog.Logger
	logFile *os.File
	dhcp    string // the DHCP range shoal serves, e.g. 10.12.3.100-10.12.3.199
}

// startLab makes the lab. The router host runs dnsmasq with router
// advertisements only (no DHCP, no DNS), as a lab's router would: iPXE
// otherwise waits about 13 s for one each time it configures the NIC.
func (d *demo) startLab(ctx context.Context) (*network, error) {
	f, err := os.Create(filepath.Join(d.logs, "lab.log"))
	if err != nil {
		return nil, err
	}
	n := &network{logFile: f, log: slog.New(slog.NewTextHandler(f, nil))}
	if n.l, err = lab.New(ctx, lab.Config{Logger: n.log}); err != nil {
		f.Close()
		return nil, err
	}
	if n.server, err = n.l.AddHost("server"); err != nil {
		n.close()
		return nil, err
	}
	rtr, err := n.l.AddHost("router")
	if err != nil {
		n.close()
		return nil, err
	}
	if _, err := rtr.Run(ctx, "ip", "-6", "addr", "add", "fd5e:a1::1/64", "dev", rtr.Iface, "nodad"); err != nil {
		n.close()
		return nil, err
	}
	n.rtr = rtr.Command(ctx, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--no-resolv", "--no-hosts",
		"--interface="+rtr.Iface, "--bind-interfaces", "--enable-ra", "--dhcp-range=::,constructor:"+rtr.Iface+",ra-only",
		"--leasefile-ro", "--log-facility=-")
	n.rtr.Stdout, n.rtr.Stderr = f, f
	if err := n.rtr.Start(); err != nil {
		n.close()
		return nil, fmt.Errorf("dnsmasq (IPv6 router advertisements): %w", err)
	}
	sub := n.l.Subnet().Addr().As4()
	first, last := sub, sub
	first[3], last[3] = 100, 199
	n.dhcp = netip.AddrFrom4(first).String() + "-" + netip.AddrFrom4(last).String()
	d.say("virtual lab: a bridge in namespace %s; the server at %s; a router sending IPv6 advertisements at %s", n.l.SwitchNS(), n.server.Addr, rtr.Addr)
	return n, nil
}

// close removes the lab (and kills what still runs in it).
func (n *network) close() {
	n.l.Close()
	if n.rtr != nil && n.rtr.Process != nil {
		n.rtr.Wait()
	}
	n.logFile.Close()
}
