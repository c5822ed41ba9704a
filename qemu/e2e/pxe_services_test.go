package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"
	"github.com/shoal-lab/shoal/qemu/lab"
)

// ipxeBIOS is the BIOS iPXE binary of Debian's ipxe package.
const ipxeBIOS = "/usr/lib/ipxe/undionly.kpxe"

// pxeMods are the DHCP options a network-booting client sends.
func pxeMods(arch iana.Arch, ipxe bool) []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
	}
	if ipxe {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")))
	}
	return mods
}

// dhcpBootFile runs a DHCP exchange from host h with mods and returns the
// boot file of the ack.
func dhcpBootFile(ctx context.Context, t *testing.T, h *lab.Host, mods ...dhcpv4.Modifier) string {
	t.Helper()
	var c *nclient4.Client
	if err := h.Do(func() error {
		var err error
		c, err = nclient4.New(h.Iface, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	lease, err := c.Request(ctx, mods...)
	if err != nil {
		t.Fatalf("%s: DHCP: %v", h.Name, err)
	}
	return lease.ACK.BootFileName
}

// tftpGetIn fetches name from server with pin/tftp's client, in host h's
// namespace.
func tftpGetIn(h *lab.Host, server, name string) ([]byte, error) {
	var buf bytes.Buffer
	err := h.Do(func() error {
		c, err := tftp.NewClient(server)
		if err != nil {
			return err
		}
		c.SetTimeout(2 * time.Second)
		c.SetBlockSize(1432)
		wt, err := c.Receive(name, "octet")
		if err != nil {
			return err
		}
		_, err = wt.WriteTo(&buf)
		return err
	})
	return buf.Bytes(), err
}

// pxeFiles writes a stand-in kernel and initramfs and a small image.
func pxeFiles(t *testing.T) (kernel, initrd, image string) {
	t.Helper()
	dir := t.TempDir()
	kernel, initrd, image = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.gz"), filepath.Join(dir, "img")
	os.WriteFile(kernel, bytes.Repeat([]byte("kernel "), 1000), 0o644)
	os.WriteFile(initrd, bytes.Repeat([]byte("initramfs "), 30000), 0o644)
	makeImage(t, image, 1<<20)
	return kernel, initrd, image
}

// TestPXEServicesDHCPMode runs `shoal serve --pxe --dhcp --pxe-chainload`
// in a lab host and walks a client host through the chain as QEMU's iPXE
// ROM does, with insomniacslk's DHCP client, pin/tftp's client and HTTP:
// the iPXE binary under the client's MAC, the TFTP fetch, the script URL
// on the next request, the script, kernel and initramfs, and the cycle
// starting over. Plain PXE ROMs get the binary for their architecture,
// and plain DHCP clients a lease without a boot file.
func TestPXEServicesDHCPMode(t *testing.T) {
	requireLab(t)
	bin := shoalBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	l, srvHost := newLab(t)
	c, err := l.AddHost("c1")
	if err != nil {
		t.Fatal(err)
	}
	kernel, initrd, image := pxeFiles(t)
	srv := startShoal(ctx, t, srvHost, bin, "--session", "svc", "--image", image, "--interface", "eth0",
		"--dhcp", dhcpRange, "--pxe", "--pxe-chainload", "--pxe-kernel", kernel, "--pxe-initrd", initrd,
		"--pxe-args", "shoal.zero=skip", "--min-clients", "1")
	if err := srv.waitOutput(ctx, regexp.MustCompile(`PXE boot chain ready`)); err != nil {
		t.Fatal(err)
	}
	mac := strings.ReplaceAll(c.MAC.String(), ":", "-")
	binary := mac + "/undionly.kpxe"
	script := "http://10.77.0.1:8080/pxe/boot.ipxe?mac=" + mac

	// iPXE's first request: the binary, under the MAC (--pxe-chainload).
	if got := dhcpBootFile(ctx, t, c, pxeMods(iana.INTEL_X86PC, true)...); got != binary {
		t.Fatalf("first iPXE request: boot file %q, want %q", got, binary)
	}
	want, err := os.ReadFile(ipxeBIOS)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tftpGetIn(c, "10.77.0.1:69", binary)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("TFTP %s: %d bytes (want %d), %v", binary, len(got), len(want), err)
	}
	if _, err := tftpGetIn(c, "10.77.0.1:69", "../../etc/passwd"); err == nil {
		t.Errorf("TFTP served a file outside the iPXE binaries")
	}
	// The chainloaded iPXE asks again: the script.
	if got := dhcpBootFile(ctx, t, c, pxeMods(iana.INTEL_X86PC, true)...); got != script {
		t.Fatalf("iPXE request after the TFTP fetch: boot file %q, want %q", got, script)
	}
	resp, body, err := httpGetIn(c, script)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %v %v", script, resp, err)
	}
	for _, want := range []string{
		"#!ipxe\n",
		"kernel http://10.77.0.1:8080/pxe/vmlinuz initrd=initrd.cpio.gz console=ttyS0 console=tty0 shoal.session=svc shoal.server=10.77.0.1 shoal.disk=auto shoal.after=poweroff shoal.zero=skip || goto failed\n",
		"initrd --name initrd.cpio.gz http://10.77.0.1:8080/pxe/initrd.cpio.gz || goto failed\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("script lacks %q:\n%s", want, body)
		}
	}
	for url, file := range map[string]string{"http://10.77.0.1:8080/pxe/vmlinuz": kernel, "http://10.77.0.1:8080/pxe/initrd.cpio.gz": initrd} {
		want, _ := os.ReadFile(file)
		resp, body, err := httpGetIn(c, url)
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, want) {
			t.Errorf("GET %s: %v, %d bytes (want %d), %v", url, resp.Status, len(body), len(want), err)
		}
	}
	// The status API is on the same HTTP server.
	if resp, _, err := httpGetIn(c, "http://10.77.0.1:8080/api/status"); err != nil || resp.StatusCode != 200 {
		t.Errorf("GET /api/status: %v %v", resp, err)
	}
	// The script was fetched: the next power-on starts from the binary.
	if got := dhcpBootFile(ctx, t, c, pxeMods(iana.INTEL_X86PC, true)...); got != binary {
		t.Errorf("iPXE request after the script: boot file %q, want %q", got, binary)
	}
	// A plain UEFI PXE ROM, and a plain DHCP client.
	if got := dhcpBootFile(ctx, t, c, pxeMods(iana.EFI_X86_64, false)...); got != "ipxe.efi" {
		t.Errorf("UEFI PXE ROM: boot file %q, want ipxe.efi", got)
	}
	if got := dhcpBootFile(ctx, t, c); got != "" {
		t.Errorf("plain DHCP client: boot file %q, want none", got)
	}
	out := srv.out.String()
	for _, want := range []string{"PXE: TFTP sent undionly.kpxe", "PXE: HTTP sent the iPXE script", "PXE: HTTP sent vmlinuz", "TFTP: refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("server log lacks %q", want)
		}
	}
}

// startDnsmasq runs dnsmasq as the LAN's plain DHCP server (no DNS, no
// TFTP, no boot options) in host h, leasing 10.77.0.100-150.
func startDnsmasq(ctx context.Context, t *testing.T, h *lab.Host) *syncBuffer {
	t.Helper()
	return runDnsmasq(ctx, t, h, "dnsmasq", true, "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h",
		"--dhcp-authoritative", "--no-ping", "--dhcp-option=3", "--log-dhcp")
}

// TestPXEServicesProxyMode: dnsmasq hands out addresses while `shoal
// serve --pxe --proxy-dhcp` answers PXE clients only: an offer without an
// address on port 67, beside dnsmasq's, and an ack with the boot file on
// port 4011.
func TestPXEServicesProxyMode(t *testing.T) {
	requireLab(t)
	bin := shoalBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	l, srvHost := newLab(t)
	dhcpHost, err := l.AddHost("dhcp")
	if err != nil {
		t.Fatal(err)
	}
	c, err := l.AddHost("c1")
	if err != nil {
		t.Fatal(err)
	}
	kernel, initrd, image := pxeFiles(t)
	startDnsmasq(ctx, t, dhcpHost)
	srv := startShoal(ctx, t, srvHost, bin, "--session", "svc", "--image", image, "--interface", "eth0",
		"--pxe", "--proxy-dhcp", "--pxe-kernel", kernel, "--pxe-initrd", initrd, "--min-clients", "1", "--log-level", "debug")
	if err := srv.waitOutput(ctx, regexp.MustCompile(`PXE boot chain ready`)); err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	if err := c.Do(func() error {
		var err error
		conn, err = server4.NewIPv4UDPConn(c.Iface, &net.UDPAddr{Port: dhcpv4.ClientPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// exchange sends req to dest and collects the replies to it for 2 s.
	exchange := func(req *dhcpv4.DHCPv4, dest *net.UDPAddr) []*dhcpv4.DHCPv4 {
		t.Helper()
		if _, err := conn.WriteTo(req.ToBytes(), dest); err != nil {
			t.Fatal(err)
		}
		var got []*dhcpv4.DHCPv4
		buf := make([]byte, 1500)
		deadline := time.Now().Add(2 * time.Second)
		for {
			conn.SetReadDeadline(deadline)
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return got
			}
			if m, err := dhcpv4.FromBytes(buf[:n]); err == nil && m.TransactionID == req.TransactionID && m.OpCode == dhcpv4.OpcodeBootReply {
				got = append(got, m)
			}
		}
	}
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	newReq := func(typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		req, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(typ), dhcpv4.WithHwAddr(c.MAC), dhcpv4.WithBroadcast(true)}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}

	// A PXE ROM's discover: dnsmasq offers an address, shoal the boot file.
	offers := exchange(newReq(dhcpv4.MessageTypeDiscover, pxeMods(iana.INTEL_X86PC, false)...), bcast)
	var lease, proxy *dhcpv4.DHCPv4
	for _, o := range offers {
		switch o.ServerIdentifier().String() {
		case dhcpHost.Addr.String():
			lease = o
		case srvHost.Addr.String():
			proxy = o
		}
	}
	if lease == nil || proxy == nil {
		t.Fatalf("offers from %d servers, want dnsmasq's and shoal's: %v", len(offers), offers)
	}
	if lease.BootFileName != "" || !lease.YourIPAddr.IsPrivate() {
		t.Errorf("dnsmasq's offer: address %v, boot file %q", lease.YourIPAddr, lease.BootFileName)
	}
	if proxy.MessageType() != dhcpv4.MessageTypeOffer || !proxy.YourIPAddr.IsUnspecified() || proxy.ClassIdentifier() != "PXEClient" ||
		proxy.BootFileName != "undionly.kpxe" || !proxy.ServerIPAddr.Equal(srvHost.Addr.AsSlice()) {
		t.Errorf("shoal's proxyDHCP offer: %s", proxy.Summary())
	}
	// The client, now with dnsmasq's address, asks shoal on port 4011.
	req := newReq(dhcpv4.MessageTypeRequest, append(pxeMods(iana.INTEL_X86PC, true), dhcpv4.WithClientIP(c.Addr.AsSlice()))...)
	acks := exchange(req, &net.UDPAddr{IP: srvHost.Addr.AsSlice(), Port: 4011})
	wantScript := "http://10.77.0.1:8080/pxe/boot.ipxe?mac=" + strings.ReplaceAll(c.MAC.String(), ":", "-")
	if len(acks) != 1 || acks[0].MessageType() != dhcpv4.MessageTypeAck || acks[0].BootFileName != wantScript {
		t.Errorf("port 4011: %d answers %v, want one ack with %q", len(acks), acks, wantScript)
	}
	// A plain DHCP client: dnsmasq alone answers.
	offers = exchange(newReq(dhcpv4.MessageTypeDiscover), bcast)
	if len(offers) != 1 || offers[0].ServerIdentifier().String() != dhcpHost.Addr.String() {
		t.Errorf("plain client: %d offers %v, want dnsmasq's only", len(offers), offers)
	}
	if !strings.Contains(srv.out.String(), "proxyDHCP: not a PXE client, ignored") {
		t.Errorf("the server does not say it ignored the plain client")
	}
}
