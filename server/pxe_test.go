package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/shoal-lab/shoal/internal/mcast"
)

var (
	pxeSelf  = netip.MustParseAddr("10.77.0.1")
	pxeIface = mcast.Interface{Name: "eth0", Index: 2, MAC: net.HardwareAddr{2, 0, 10, 77, 0, 1}, Addr: netip.MustParsePrefix("10.77.0.1/24")}
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// pxeClient describes a request a test sends.
type pxeClient struct {
	vendor    string      // option 60
	userClass string      // option 77, raw as iPXE sends it
	opt175    bool        // iPXE's encapsulated options
	arch      []iana.Arch // option 93; nil: absent
}

func (c pxeClient) request(t testing.TB, typ dhcpv4.MessageType, hw net.HardwareAddr) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(typ), dhcpv4.WithHwAddr(hw)}
	if c.vendor != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(c.vendor)))
	}
	if c.userClass != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptUserClass(c.userClass)))
	}
	if c.opt175 {
		mods = append(mods, dhcpv4.WithGeneric(optionIPXEEncap, []byte{177, 5, 1, 0x1a, 0xf4, 0x10, 0})) // bus id
	}
	if c.arch != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientArch(c.arch...)))
	}
	mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, bytes.Repeat([]byte{0xab}, 16)...)))
	req, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

const biosVendor = "PXEClient:Arch:00000:UNDI:002001"

// pxeCases are the clients every DHCP mode is tested with; want is the
// boot file ("" for none), with MAC standing for the client's MAC with
// dashes.
var pxeCases = []struct {
	name   string
	client pxeClient
	want   string
}{
	{"BIOS PXE ROM, arch 0", pxeClient{vendor: biosVendor, arch: []iana.Arch{iana.INTEL_X86PC}}, "undionly.kpxe"},
	{"PXE ROM without option 93", pxeClient{vendor: "PXEClient"}, "undionly.kpxe"},
	{"UEFI, arch 7", pxeClient{vendor: "PXEClient:Arch:00007:UNDI:003016", arch: []iana.Arch{iana.EFI_X86_64}}, "ipxe.efi"},
	{"UEFI, arch 9", pxeClient{vendor: "PXEClient:Arch:00009:UNDI:003016", arch: []iana.Arch{iana.EFI_BC}}, "ipxe.efi"},
	{"iPXE by user class", pxeClient{vendor: biosVendor, userClass: "iPXE", opt175: true, arch: []iana.Arch{iana.INTEL_X86PC}}, "http://10.77.0.1:8080/pxe/boot.ipxe?mac=MAC"},
	{"iPXE by option 175 only", pxeClient{vendor: biosVendor, opt175: true, arch: []iana.Arch{iana.INTEL_X86PC}}, "http://10.77.0.1:8080/pxe/boot.ipxe?mac=MAC"},
	{"iPXE on UEFI", pxeClient{vendor: "PXEClient:Arch:00007:UNDI:003016", userClass: "iPXE", arch: []iana.Arch{iana.EFI_X86_64}}, "http://10.77.0.1:8080/pxe/boot.ipxe?mac=MAC"},
	{"32-bit UEFI, arch 6: no binary", pxeClient{vendor: "PXEClient:Arch:00006:UNDI:003016", arch: []iana.Arch{iana.EFI_IA32}}, ""},
	{"ARM64 UEFI, arch 11: no binary", pxeClient{vendor: "PXEClient:Arch:00011:UNDI:003016", arch: []iana.Arch{iana.EFI_ARM64}}, ""},
	{"plain DHCP client", pxeClient{}, ""},
	{"Windows DHCP client", pxeClient{vendor: "MSFT 5.0"}, ""},
}

func wantFile(want string, hw net.HardwareAddr) string {
	return strings.ReplaceAll(want, "MAC", macDashes(hw))
}

func testBooter(chainload bool) *pxeBooter {
	return newPXEBooter(pxeSelf, 8080, IPXEEFI, chainload)
}

// TestPXEDHCPServerMode: the DHCP server leases to everyone and adds the
// boot file to the offers and acks of PXE and iPXE clients.
func TestPXEDHCPServerMode(t *testing.T) {
	for i, tt := range pxeCases {
		t.Run(tt.name, func(t *testing.T) {
			p := &PXEServer{log: testLog(t), booter: testBooter(false)}
			d, err := newDHCPServer(DHCPConfig{Range: "10.77.0.100-10.77.0.200", Boot: p.dhcpBoot}, pxeIface)
			if err != nil {
				t.Fatal(err)
			}
			hw := mac(byte(i + 1))
			offer, _ := d.handle(tt.client.request(t, dhcpv4.MessageTypeDiscover, hw))
			if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("no offer: %v", offer)
			}
			req := tt.client.request(t, dhcpv4.MessageTypeRequest, hw)
			req.UpdateOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))
			req.UpdateOption(dhcpv4.OptServerIdentifier(pxeSelf.AsSlice()))
			ack, _ := d.handle(req)
			if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				t.Fatalf("no ack: %v", ack)
			}
			want := wantFile(tt.want, hw)
			for _, m := range []*dhcpv4.DHCPv4{offer, ack} {
				if m.BootFileName != want {
					t.Errorf("%s: boot file %q, want %q", m.MessageType(), m.BootFileName, want)
				}
				if !m.ServerIPAddr.Equal(pxeSelf.AsSlice()) {
					t.Errorf("%s: next server %v", m.MessageType(), m.ServerIPAddr)
				}
				if !ip4(m.YourIPAddr).IsValid() {
					t.Errorf("%s: no address for the client", m.MessageType())
				}
			}
		})
	}
}

// TestPXEProxyDHCP: proxyDHCP offers no address, answers PXE clients only,
// on port 67 (discover → offer, broadcast) and 4011 (request → ack, to the
// client).
func TestPXEProxyDHCP(t *testing.T) {
	for i, tt := range pxeCases {
		t.Run(tt.name, func(t *testing.T) {
			p := &proxyDHCP{log: testLog(t), self: pxeSelf, booter: testBooter(false)}
			hw := mac(byte(i + 1))
			want := wantFile(tt.want, hw)
			if !strings.HasPrefix(tt.client.vendor, "PXEClient") {
				want = "" // proxyDHCP answers PXE clients only
			}
			peer := &net.UDPAddr{IP: net.ParseIP("10.77.0.123"), Port: 68}
			steps := []struct {
				port     int
				typ      dhcpv4.MessageType
				reply    dhcpv4.MessageType
				wantDest *net.UDPAddr
			}{
				{dhcpv4.ServerPort, dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeOffer, &net.UDPAddr{IP: net.IPv4bcast, Port: 68}},
				{PXEBootServerPort, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeAck, peer},
			}
			for _, st := range steps {
				resp, dest := p.handle(tt.client.request(t, st.typ, hw), st.port, peer)
				if want == "" {
					if resp != nil {
						t.Errorf("port %d: answered %s with %q, want silence", st.port, resp.MessageType(), resp.BootFileName)
					}
					continue
				}
				if resp == nil {
					t.Fatalf("port %d: no answer to %s", st.port, st.typ)
				}
				if resp.MessageType() != st.reply || resp.BootFileName != want {
					t.Errorf("port %d: %s with %q, want %s with %q", st.port, resp.MessageType(), resp.BootFileName, st.reply, want)
				}
				if ip4(resp.YourIPAddr).IsValid() {
					t.Errorf("port %d: proxyDHCP offered address %v", st.port, resp.YourIPAddr)
				}
				if resp.ClassIdentifier() != "PXEClient" || !resp.ServerIdentifier().Equal(pxeSelf.AsSlice()) || !resp.ServerIPAddr.Equal(pxeSelf.AsSlice()) {
					t.Errorf("port %d: vendor class %q, server id %v, next server %v", st.port, resp.ClassIdentifier(), resp.ServerIdentifier(), resp.ServerIPAddr)
				}
				if resp.Options.Get(dhcpv4.OptionClientMachineIdentifier) == nil {
					t.Errorf("port %d: option 97 not copied", st.port)
				}
				bypass := resp.Options.Get(dhcpv4.OptionVendorSpecificInformation) != nil
				if wantBypass := want == "undionly.kpxe"; bypass != wantBypass {
					t.Errorf("port %d: option 43 (skip boot server discovery) present %v, want %v", st.port, bypass, wantBypass)
				}
				if dest.String() != st.wantDest.String() {
					t.Errorf("port %d: sent to %v, want %v", st.port, dest, st.wantDest)
				}
			}
		})
	}
	// A discover on 4011 or a request on 67 is not proxyDHCP's to answer.
	p := &proxyDHCP{log: testLog(t), self: pxeSelf, booter: testBooter(false)}
	c := pxeCases[0].client
	if resp, _ := p.handle(c.request(t, dhcpv4.MessageTypeRequest, mac(1)), dhcpv4.ServerPort, nil); resp != nil {
		t.Errorf("answered a request on port 67")
	}
	if resp, _ := p.handle(c.request(t, dhcpv4.MessageTypeDiscover, mac(1)), PXEBootServerPort, nil); resp != nil {
		t.Errorf("answered a discover on port 4011")
	}
}

// TestPXEEFIBinary: --pxe-efi snponly.efi changes what UEFI clients load.
func TestPXEEFIBinary(t *testing.T) {
	b := newPXEBooter(pxeSelf, 8080, IPXESNP, false)
	c := pxeClient{vendor: "PXEClient", arch: []iana.Arch{iana.EFI_X86_64}}
	if a, ok := b.decide(parsePXERequest(c.request(t, dhcpv4.MessageTypeDiscover, mac(1)))); !ok || a.File != "snponly.efi" {
		t.Errorf("got %+v, want snponly.efi", a)
	}
}

// TestPXEChainload: with chainload, an iPXE client gets the iPXE binary
// under its MAC until it fetched it, then the script, and after the
// script the binary again (the next power-on). Plain PXE ROMs always get
// the binary.
func TestPXEChainload(t *testing.T) {
	b := testBooter(true)
	hw := mac(7)
	ipxe := parsePXERequest(pxeClient{vendor: biosVendor, userClass: "iPXE", arch: []iana.Arch{iana.INTEL_X86PC}}.request(t, dhcpv4.MessageTypeDiscover, hw))
	rom := parsePXERequest(pxeClient{vendor: biosVendor, arch: []iana.Arch{iana.INTEL_X86PC}}.request(t, dhcpv4.MessageTypeDiscover, hw))
	binary, script := macDashes(hw)+"/undionly.kpxe", "http://10.77.0.1:8080/pxe/boot.ipxe?mac="+macDashes(hw)
	steps := []struct {
		name string
		do   func()
		r    pxeRequest
		want string
	}{
		{"first request", nil, ipxe, binary},
		{"a retransmission", nil, ipxe, binary},
		{"a plain PXE ROM", nil, rom, "undionly.kpxe"},
		{"after the TFTP fetch", func() { b.binaryFetched(hw) }, ipxe, script},
		{"the request of the same exchange", nil, ipxe, script},
		{"after the script fetch: next power-on", func() { b.scriptFetched(hw) }, ipxe, binary},
	}
	for _, st := range steps {
		if st.do != nil {
			st.do()
		}
		a, ok := b.decide(st.r)
		if !ok || a.File != st.want {
			t.Errorf("%s: got %q (%v), want %q", st.name, a.File, ok, st.want)
		}
	}
	if other, _ := b.decide(parsePXERequest(pxeClient{vendor: biosVendor, userClass: "iPXE"}.request(t, dhcpv4.MessageTypeDiscover, mac(8)))); other.File != macDashes(mac(8))+"/undionly.kpxe" {
		t.Errorf("another MAC got %q", other.File)
	}
}

func TestBootParamsCheck(t *testing.T) {
	tests := []struct {
		name string
		p    BootParams
		ok   bool
	}{
		{"typical", BootParams{Session: "lab1", Disk: "auto", After: "poweroff"}, true},
		{"device and extra args", BootParams{Session: "room-2.b", Disk: "/dev/nvme0n1", After: "reboot", Args: []string{"shoal.zero=skip", "quiet"}}, true},
		{"ask", BootParams{Session: "lab1", Disk: "ask"}, true},
		{"no session", BootParams{Disk: "auto"}, false},
		{"space in session", BootParams{Session: "lab 1"}, false},
		{"iPXE expansion in session", BootParams{Session: "x${net0/ip}"}, false},
		{"quote in disk", BootParams{Session: "a", Disk: `/dev/sda"`}, false},
		{"bad after", BootParams{Session: "a", After: "halt"}, false},
		{"newline in args", BootParams{Session: "a", Args: []string{"quiet\nshell"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.p.Check(); (err == nil) != tt.ok {
				t.Errorf("Check() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestIPXEScript(t *testing.T) {
	tests := []struct {
		name    string
		p       BootParams
		cmdline string
	}{
		{"auto, poweroff", BootParams{Session: "lab1", Disk: "auto", After: "poweroff"},
			"initrd=initrd.cpio.gz console=ttyS0 console=tty0 shoal.session=lab1 shoal.server=10.77.0.1 shoal.disk=auto shoal.after=poweroff"},
		{"ask, client default after, extra args", BootParams{Session: "lab1", Disk: "ask", Args: []string{"shoal.zero=skip", "quiet"}},
			"initrd=initrd.cpio.gz console=ttyS0 console=tty0 shoal.session=lab1 shoal.server=10.77.0.1 shoal.zero=skip quiet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ipxeScript("http://10.77.0.1:8080/pxe/", pxeSelf, tt.p)
			for _, want := range []string{
				"#!ipxe\n",
				"\nkernel http://10.77.0.1:8080/pxe/vmlinuz " + tt.cmdline + " || goto failed\n",
				"\ninitrd --name initrd.cpio.gz http://10.77.0.1:8080/pxe/initrd.cpio.gz || goto failed\n",
				"\nboot || goto failed\n",
				"\n:failed\n", "\ngoto retry\n",
			} {
				if !strings.Contains(s, want) {
					t.Errorf("script lacks %q:\n%s", want, s)
				}
			}
			if !strings.HasPrefix(s, "#!ipxe\n") {
				t.Errorf("script does not start with #!ipxe")
			}
		})
	}
}

// TestPXEHTTP serves the script, the kernel and the initramfs; fetching
// the script ends a chainloaded client's cycle.
func TestPXEHTTP(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	os.WriteFile(kernel, []byte("KERNEL"), 0o644)
	os.WriteFile(initrd, bytes.Repeat([]byte("I"), 100000), 0o644)
	b := testBooter(true)
	h := &pxeHTTP{log: testLog(t), self: netip.MustParseAddrPort("10.77.0.1:8080"), kernel: kernel, initrd: initrd,
		params: BootParams{Session: "web", Disk: "auto"}, booter: b}
	mux := http.NewServeMux()
	h.register(mux)
	ts := httptest.NewServer(mux)
	defer ts.Close()

	hw := mac(9)
	b.binaryFetched(hw)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	code, script := get("/pxe/boot.ipxe?mac=" + macDashes(hw))
	host := strings.TrimPrefix(ts.URL, "http://")
	if code != 200 || !strings.Contains(script, "kernel http://"+host+"/pxe/vmlinuz ") || !strings.Contains(script, "shoal.server=10.77.0.1 ") {
		t.Errorf("script (%d):\n%s", code, script)
	}
	if b.hasFetched(hw) {
		t.Errorf("fetching the script did not end the chainload cycle")
	}
	if code, body := get("/pxe/vmlinuz"); code != 200 || body != "KERNEL" {
		t.Errorf("kernel: %d %q", code, body)
	}
	if code, body := get("/pxe/initrd.cpio.gz"); code != 200 || len(body) != 100000 {
		t.Errorf("initrd: %d, %d bytes", code, len(body))
	}
	if code, _ := get("/pxe/other"); code != 404 {
		t.Errorf("unknown file: %d", code)
	}
	os.Remove(kernel)
	if code, _ := get("/pxe/vmlinuz"); code != 404 {
		t.Errorf("missing kernel: %d", code)
	}
}

func TestNewPXEServerConfig(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	os.WriteFile(kernel, []byte("K"), 0o644)
	os.WriteFile(initrd, []byte("I"), 0o644)
	ipxeDir := filepath.Join(dir, "ipxe")
	os.Mkdir(ipxeDir, 0o755)
	for _, f := range []string{IPXEBIOS, IPXEEFI} {
		os.WriteFile(filepath.Join(ipxeDir, f), []byte(f), 0o644)
	}
	good := PXEConfig{Kernel: kernel, Initrd: initrd, IPXEDir: ipxeDir, HTTPPort: 8080, Boot: BootParams{Session: "s", Disk: "auto"}}
	tests := []struct {
		name   string
		change func(*PXEConfig)
		errHas string // "" for success
	}{
		{"good", func(*PXEConfig) {}, ""},
		{"range and proxy", func(c *PXEConfig) { c.DHCPRange, c.ProxyDHCP = "10.77.0.100-10.77.0.200", true }, "exclude each other"},
		{"no HTTP port", func(c *PXEConfig) { c.HTTPPort = 0 }, "fixed port"},
		{"missing kernel", func(c *PXEConfig) { c.Kernel = filepath.Join(dir, "nope") }, "make kernel"},
		{"missing initramfs", func(c *PXEConfig) { c.Initrd = "" }, "no initramfs"},
		{"no ipxe package", func(c *PXEConfig) { c.IPXEDir = filepath.Join(dir, "none") }, "apt-get install ipxe"},
		{"snponly missing", func(c *PXEConfig) { c.EFIBinary = IPXESNP }, "snponly.efi is missing"},
		{"unknown EFI binary", func(c *PXEConfig) { c.EFIBinary = "grub.efi" }, "want ipxe.efi or snponly.efi"},
		{"bad session", func(c *PXEConfig) { c.Boot.Session = "a b" }, "kernel command line"},
		{"DHCP mode", func(c *PXEConfig) { c.DHCPRange = "10.77.0.100-10.77.0.200" }, ""},
		{"DHCP range off the subnet", func(c *PXEConfig) { c.DHCPRange = "10.9.0.100-10.9.0.200" }, "not inside"},
		{"proxy mode", func(c *PXEConfig) { c.ProxyDHCP = true }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			_, err := newPXEServer(cfg, pxeIface)
			switch {
			case tt.errHas == "" && err != nil:
				t.Errorf("error %v", err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Errorf("error %v, want one with %q", err, tt.errHas)
			case err != nil && !errors.Is(err, ErrPXEConfig):
				t.Errorf("error %v does not wrap ErrPXEConfig", err)
			}
		})
	}
}

// TestPXEServerServeClose runs the parts on loopback sockets: Serve
// returns nil when ctx ends, Close is idempotent and waits.
func TestPXEServerServeClose(t *testing.T) {
	for _, how := range []string{"cancel", "close", "close before serve"} {
		t.Run(how, func(t *testing.T) {
			p := &PXEServer{log: testLog(t), iface: pxeIface, booter: testBooter(false), closed: make(chan struct{})}
			p.proxy = &proxyDHCP{log: p.log, self: pxeSelf, booter: p.booter}
			tc := listenLoopback(t)
			p.tftp = newTFTPServer(tc, t.TempDir(), []string{IPXEBIOS}, nil, p.log)
			p.conn67, p.conn4011 = listenLoopback(t), listenLoopback(t)
			if how == "close before serve" {
				p.Close()
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- p.Serve(ctx) }()
			time.Sleep(50 * time.Millisecond)
			if how == "cancel" {
				cancel()
			} else {
				p.Close()
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return")
			}
			p.Close()
			p.Close()
		})
	}
}

func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
