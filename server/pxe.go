package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/shoal-lab/shoal/internal/mcast"
)

// PXEConfig configures a PXEServer. The zero value of each optional field
// means the documented default.
type PXEConfig struct {
	// Interface to serve on; empty picks the default route's interface.
	// Its first IPv4 address is the server's address in every URL and
	// boot option.
	Interface string
	// DHCPRange, if set ("A-B"), runs a DHCP server leasing that range
	// with the boot options (DHCP server mode; see DHCPConfig).
	DHCPRange string
	// ProxyDHCP runs proxyDHCP beside the LAN's own DHCP server: boot
	// options only, to PXE clients only, on ports 67 and 4011. It excludes
	// DHCPRange. With neither, only TFTP and HTTP are served, for a DHCP
	// server configured by hand to point here.
	ProxyDHCP bool
	// IPXEDir holds the iPXE binaries (DefaultIPXEDir).
	IPXEDir string
	// EFIBinary is the iPXE binary for x86-64 UEFI clients: IPXEEFI
	// (default) or IPXESNP.
	EFIBinary string
	// Kernel and Initrd are the files the script boots. Required.
	Kernel, Initrd string
	// HTTPPort is the port of the HTTP server Register mounts the routes
	// on, for the URLs handed out. Required.
	HTTPPort int
	// Boot is what goes on the client's kernel command line.
	Boot BootParams
	// Chainload makes clients that already run iPXE (QEMU's NIC ROMs) load
	// the iPXE binary over TFTP first, as a real NIC's PXE ROM must,
	// before they get the script: see pxeBooter.
	Chainload bool
	// Logger receives a line per boot step (info); nil discards them.
	Logger *slog.Logger
}

// ErrPXEConfig is wrapped by NewPXEServer's errors about the
// configuration and the files (as opposed to sockets it cannot open).
var ErrPXEConfig = errors.New("pxe")

// PXEServer serves the whole network boot chain of the imaging client:
// DHCP (server or proxy) with the boot file, TFTP with the iPXE binaries,
// and, on the caller's HTTP server (Register), the iPXE script, the kernel
// and the initramfs.
//
//	PXE ROM ──DHCP──▶ "undionly.kpxe" (arch 0) or "ipxe.efi" (arch 7, 9)
//	        ──TFTP──▶ iPXE, which asks DHCP again as "iPXE"
//	iPXE    ──DHCP──▶ http://SERVER:PORT/pxe/boot.ipxe
//	        ──HTTP──▶ script: kernel + initramfs + shoal.session=… shoal.server=SERVER
//
// Create it with NewPXEServer, mount Register on the HTTP server, run
// Serve, and Close it.
type PXEServer struct {
	cfg      PXEConfig // with the defaults filled in
	log      *slog.Logger
	iface    mcast.Interface
	booter   *pxeBooter
	http     *pxeHTTP
	tftp     *tftpServer
	dhcp     *DHCPServer // DHCP server mode
	proxy    *proxyDHCP  // proxyDHCP mode, with its two sockets
	conn67   net.PacketConn
	conn4011 net.PacketConn

	closeOnce sync.Once
	closed    chan struct{}
	served    sync.WaitGroup
}

// NewPXEServer checks the configuration and the files, and opens the
// sockets: TFTP (69), and DHCP (67) or proxyDHCP (67 and 4011).
func NewPXEServer(cfg PXEConfig) (*PXEServer, error) {
	ifi, err := mcast.Pick(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPXEConfig, err)
	}
	p, err := newPXEServer(cfg, ifi)
	if err != nil {
		return nil, err
	}
	if err := p.open(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// newPXEServer checks cfg and builds the server for ifi, without sockets.
func newPXEServer(cfg PXEConfig, ifi mcast.Interface) (*PXEServer, error) {
	if cfg.DHCPRange != "" && cfg.ProxyDHCP {
		return nil, fmt.Errorf("%w: a DHCP range (DHCP server mode) and proxyDHCP exclude each other", ErrPXEConfig)
	}
	if cfg.HTTPPort <= 0 || cfg.HTTPPort > 65535 {
		return nil, fmt.Errorf("%w: HTTP port %d: want a fixed port, 1-65535", ErrPXEConfig, cfg.HTTPPort)
	}
	if err := cfg.Boot.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPXEConfig, err)
	}
	if cfg.IPXEDir == "" {
		cfg.IPXEDir = DefaultIPXEDir
	}
	switch cfg.EFIBinary {
	case "":
		cfg.EFIBinary = IPXEEFI
	case IPXEEFI, IPXESNP:
	default:
		return nil, fmt.Errorf("%w: UEFI binary %q: want %s or %s", ErrPXEConfig, cfg.EFIBinary, IPXEEFI, IPXESNP)
	}
	for _, f := range []struct{ path, what, hint string }{
		{cfg.Kernel, "kernel", "make kernel"},
		{cfg.Initrd, "initramfs", "make initramfs"},
		{filepath.Join(cfg.IPXEDir, IPXEBIOS), "iPXE for BIOS", "apt-get install ipxe"},
		{filepath.Join(cfg.IPXEDir, cfg.EFIBinary), "iPXE for UEFI", "apt-get install ipxe"},
	} {
		if f.path == "" {
			return nil, fmt.Errorf("%w: no %s file given", ErrPXEConfig, f.what)
		}
		if fi, err := os.Stat(f.path); err != nil || !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s %s is missing (%s): %w", ErrPXEConfig, f.what, f.path, f.hint, errOr(err, errors.New("not a regular file")))
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	self := ifi.Addr.Addr()
	cfg.Logger = log
	p := &PXEServer{
		cfg:    cfg,
		log:    log,
		iface:  ifi,
		booter: newPXEBooter(self, cfg.HTTPPort, cfg.EFIBinary, cfg.Chainload),
		closed: make(chan struct{}),
	}
	p.http = &pxeHTTP{log: log, self: netip.AddrPortFrom(self, uint16(cfg.HTTPPort)),
		kernel: cfg.Kernel, initrd: cfg.Initrd, params: cfg.Boot, booter: p.booter}
	switch {
	case cfg.DHCPRange != "":
		d, err := newDHCPServer(DHCPConfig{Interface: ifi.Name, Range: cfg.DHCPRange, Logger: log, Boot: p.dhcpBoot}, ifi)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPXEConfig, err)
		}
		p.dhcp = d // its socket comes with open
	case cfg.ProxyDHCP:
		p.proxy = &proxyDHCP{log: log, self: self, booter: p.booter}
	}
	return p, nil
}

func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// open opens the sockets.
func (p *PXEServer) open() error {
	self := p.iface.Addr.Addr()
	tc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: self.AsSlice(), Port: TFTPPort})
	if err != nil {
		return fmt.Errorf("pxe: TFTP: listen on %s port %d: %w", self, TFTPPort, err)
	}
	p.tftp = newTFTPServer(tc, p.cfg.IPXEDir, []string{IPXEBIOS, IPXEEFI, IPXESNP}, p.booter.binaryFetched, p.log)
	switch {
	case p.dhcp != nil:
		if p.dhcp.conn, err = server4.NewIPv4UDPConn(p.iface.Name, &net.UDPAddr{Port: dhcpv4.ServerPort}); err != nil {
			return fmt.Errorf("pxe: DHCP: listen on %s port %d: %w", p.iface.Name, dhcpv4.ServerPort, err)
		}
	case p.proxy != nil:
		if p.conn67, err = server4.NewIPv4UDPConn(p.iface.Name, &net.UDPAddr{Port: dhcpv4.ServerPort}); err != nil {
			return fmt.Errorf("pxe: proxyDHCP: listen on %s port %d: %w", p.iface.Name, dhcpv4.ServerPort, err)
		}
		if p.conn4011, err = server4.NewIPv4UDPConn(p.iface.Name, &net.UDPAddr{Port: PXEBootServerPort}); err != nil {
			return fmt.Errorf("pxe: proxyDHCP: listen on %s port %d: %w", p.iface.Name, PXEBootServerPort, err)
		}
	}
	return nil
}

// dhcpBoot is the DHCP server's Boot hook: the boot file for PXE and
// iPXE clients in offers and acks.
func (p *PXEServer) dhcpBoot(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType) []dhcpv4.Modifier {
	r := parsePXERequest(req)
	ans, ok := p.booter.decide(r)
	if !ok {
		if ans.Why != "" && typ == dhcpv4.MessageTypeAck {
			p.log.Info("PXE: no boot file for this client", "mac", r.MAC.String(), "why", ans.Why)
		}
		return nil
	}
	if typ == dhcpv4.MessageTypeAck {
		p.log.Info("PXE: DHCP boot file", "mac", r.MAC.String(), "firmware", r.Firmware, "ipxe", r.IPXE, "file", ans.File, "why", ans.Why)
	}
	return []dhcpv4.Modifier{withBootFile(ans.File)}
}

// Addr is the server's address and subnet.
func (p *PXEServer) Addr() netip.Prefix { return p.iface.Addr }

// Register adds the HTTP routes (/pxe/boot.ipxe, /pxe/vmlinuz,
// /pxe/initrd.cpio.gz) to mux.
func (p *PXEServer) Register(mux *http.ServeMux) { p.http.register(mux) }

// Serve runs the DHCP or proxyDHCP responders and the TFTP server until
// ctx ends or Close is called, then waits for them. It returns the first
// error that stopped one of them (and stops the others), or nil.
func (p *PXEServer) Serve(ctx context.Context) error {
	p.served.Add(1)
	defer p.served.Done()
	select {
	case <-p.closed:
		return nil
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { p.shut() })
	defer stop()

	mode := "TFTP and HTTP only (no DHCP)"
	switch {
	case p.dhcp != nil:
		mode = "DHCP server " + p.dhcp.first.String() + "-" + p.dhcp.last.String()
	case p.proxy != nil:
		mode = "proxyDHCP (ports 67 and 4011)"
	}
	p.log.Info("PXE boot chain ready", "interface", p.iface.Name, "addr", p.iface.Addr.Addr(), "dhcp", mode,
		"script", p.booter.scriptBase(), "chainload", p.booter.chainload)

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("pxe: %s: %w", name, err)
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	run("TFTP", func() error { return p.tftp.Serve(ctx) })
	if p.dhcp != nil {
		run("DHCP", func() error { return p.dhcp.Serve(ctx) })
	}
	if p.proxy != nil {
		run("proxyDHCP", func() error {
			return serveDHCPConn(ctx, p.conn67, p.closed, p.log, func(req *dhcpv4.DHCPv4, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
				return p.proxy.handle(req, dhcpv4.ServerPort, peer)
			})
		})
		run("PXE boot server", func() error {
			return serveDHCPConn(ctx, p.conn4011, p.closed, p.log, func(req *dhcpv4.DHCPv4, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
				return p.proxy.handle(req, PXEBootServerPort, peer)
			})
		})
	}
	wg.Wait()
	return first
}

// shut closes the sockets and stops the parts; it does not wait for Serve.
func (p *PXEServer) shut() {
	p.closeOnce.Do(func() {
		close(p.closed)
		if p.tftp != nil {
			p.tftp.shutdown()
			p.tftp.conn.Close()
		}
		if p.dhcp != nil {
			p.dhcp.Close()
		}
		for _, c := range []net.PacketConn{p.conn67, p.conn4011} {
			if c != nil {
				c.Close()
			}
		}
	})
}

// Close stops Serve, waits for it and closes the sockets. It is
// idempotent.
func (p *PXEServer) Close() error {
	p.shut()
	p.served.Wait()
	return nil
}
