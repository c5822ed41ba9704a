package server

import (
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzPXEDHCP feeds arbitrary packets to proxyDHCP (both ports) and to the
// DHCP server's boot hook: no panic, never an address from proxyDHCP, an
// answer only to a PXE client, and a boot file that is one of ours.
func FuzzPXEDHCP(f *testing.F) {
	for i, c := range pxeCases {
		for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest} {
			f.Add(c.client.request(f, typ, mac(byte(i))).ToBytes())
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		booter := newPXEBooter(pxeSelf, 8080, IPXEEFI, true)
		p := &proxyDHCP{log: slog.New(slog.DiscardHandler), self: pxeSelf, booter: booter}
		peer := &net.UDPAddr{IP: net.IPv4(10, 77, 0, 9), Port: 68}
		for _, port := range []int{dhcpv4.ServerPort, PXEBootServerPort} {
			resp, dest := p.handle(req, port, peer)
			if resp == nil {
				continue
			}
			if dest == nil || ip4(resp.YourIPAddr).IsValid() || !strings.HasPrefix(req.ClassIdentifier(), "PXEClient") {
				t.Fatalf("port %d: answered %s to %v with address %v", port, resp.MessageType(), dest, resp.YourIPAddr)
			}
			checkBootFile(t, resp.BootFileName)
		}
		srv := &PXEServer{log: slog.New(slog.DiscardHandler), booter: booter}
		for _, m := range srv.dhcpBoot(req, dhcpv4.MessageTypeAck) {
			var d dhcpv4.DHCPv4
			m(&d)
			checkBootFile(t, d.BootFileName)
		}
	})
}

func checkBootFile(t *testing.T, f string) {
	t.Helper()
	base := f[strings.LastIndex(f, "/")+1:]
	ok := base == IPXEBIOS || base == IPXEEFI || strings.HasPrefix(f, "http://10.77.0.1:8080/pxe/boot.ipxe?mac=")
	if !ok {
		t.Fatalf("boot file %q is none of ours", f)
	}
}

// FuzzTFTPResolve: whatever name a TFTP client asks for, the server opens
// nothing but an iPXE binary in its directory.
func FuzzTFTPResolve(f *testing.F) {
	for _, s := range []string{"undionly.kpxe", "/ipxe.efi", "52-54-00-12-34-56/undionly.kpxe", "../etc/passwd", "a/../../undionly.kpxe", "52-54-00-12-34-56/../../x"} {
		f.Add(s)
	}
	dir := "/srv/ipxe"
	ts := newTFTPServer(nil, dir, []string{IPXEBIOS, IPXEEFI, IPXESNP}, nil, slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, name string) {
		file, mac, err := ts.resolve(name)
		if err != nil {
			return
		}
		if filepath.Dir(file) != dir || !ts.files[filepath.Base(file)] {
			t.Fatalf("%q resolved to %q", name, file)
		}
		if mac != nil && len(mac) != 6 {
			t.Fatalf("%q: MAC %v", name, mac)
		}
	})
}
