package server

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// The iPXE binaries handed out over TFTP, from Debian's ipxe package.
const (
	// IPXEBIOS chainloads iPXE through a BIOS PXE ROM's UNDI driver.
	IPXEBIOS = "undionly.kpxe"
	// IPXEEFI is iPXE for x86-64 UEFI with its own NIC drivers.
	IPXEEFI = "ipxe.efi"
	// IPXESNP is iPXE for x86-64 UEFI that drives the NIC through the
	// firmware's SNP protocol: the choice for NICs iPXE has no driver for.
	IPXESNP = "snponly.efi"
)

// DefaultIPXEDir is where Debian's ipxe package installs the binaries.
const DefaultIPXEDir = "/usr/lib/ipxe"

// optionIPXEEncap is option 175, iPXE's encapsulated options: a request
// that carries it comes from iPXE.
const optionIPXEEncap = dhcpv4.GenericOptionCode(175)

// pxeFirmware is the kind of boot firmware a PXE client runs.
type pxeFirmware string

const (
	fwBIOS  pxeFirmware = "BIOS"        // x86 BIOS PXE (architecture 0)
	fwEFI64 pxeFirmware = "UEFI x64"    // x86-64 UEFI (architecture 7 or 9)
	fwOther pxeFirmware = "unsupported" // anything else: no boot file
)

// pxeRequest is what a DHCP request says about a network-booting client.
type pxeRequest struct {
	MAC  net.HardwareAddr
	PXE  bool // vendor class "PXEClient…" (option 60)
	IPXE bool // user class "iPXE" (option 77) or option 175
	// Arch is the client architecture (option 93); 0 (BIOS) when absent.
	Arch     iana.Arch
	Firmware pxeFirmware
}

// parsePXERequest reads the PXE options of a DHCP request.
func parsePXERequest(req *dhcpv4.DHCPv4) pxeRequest {
	r := pxeRequest{
		MAC: req.ClientHWAddr,
		PXE: strings.HasPrefix(req.ClassIdentifier(), "PXEClient"),
	}
	for _, uc := range req.UserClass() {
		if uc == "iPXE" {
			r.IPXE = true
		}
	}
	if req.Options.Has(optionIPXEEncap) {
		r.IPXE = true
	}
	if archs := req.ClientArch(); len(archs) > 0 {
		r.Arch = archs[0]
	}
	switch r.Arch {
	case iana.INTEL_X86PC:
		r.Firmware = fwBIOS
	case iana.EFI_X86_64, iana.EFI_BC:
		r.Firmware = fwEFI64
	default:
		r.Firmware = fwOther
	}
	return r
}

// pxeAnswer is the boot information for one client.
type pxeAnswer struct {
	// File is the boot file: a TFTP file name (an iPXE binary) or the
	// HTTP URL of the iPXE script.
	File string
	// Binary is the iPXE binary's name when File is one.
	Binary string
	// Why says, for the log, which rule chose File.
	Why string
}

// Script tells whether the answer is the iPXE script.
func (a pxeAnswer) Script() bool { return a.Binary == "" }

// pxeBooter decides the boot file for each PXE request. With chainload,
// a client that already runs iPXE (QEMU's NIC ROMs) first gets the iPXE
// binary over TFTP as a plain PXE ROM would, under a per-MAC file name;
// once it fetched it, its next request gets the script, and fetching the
// script starts the cycle over for the next power-on.
type pxeBooter struct {
	self      netip.Addr
	httpPort  int
	efi       string // IPXEEFI or IPXESNP
	chainload bool

	mu      sync.Mutex
	fetched map[string]bool // MACs that fetched the iPXE binary (chainload)
}

func newPXEBooter(self netip.Addr, httpPort int, efi string, chainload bool) *pxeBooter {
	return &pxeBooter{self: self, httpPort: httpPort, efi: efi, chainload: chainload, fetched: map[string]bool{}}
}

// decide returns the boot file for r; ok is false for a client that gets
// no boot information: not a PXE or iPXE client, or an architecture the
// iPXE binaries do not run on.
func (b *pxeBooter) decide(r pxeRequest) (a pxeAnswer, ok bool) {
	if !r.PXE && !r.IPXE {
		return a, false
	}
	var bin string
	switch r.Firmware {
	case fwBIOS:
		bin = IPXEBIOS
	case fwEFI64:
		bin = b.efi
	default:
		return pxeAnswer{Why: fmt.Sprintf("architecture %d (%s) has no iPXE binary here", uint16(r.Arch), r.Arch)}, false
	}
	if !r.IPXE {
		return pxeAnswer{File: bin, Binary: bin, Why: string(r.Firmware) + " PXE ROM: iPXE over TFTP"}, true
	}
	if b.chainload && !b.hasFetched(r.MAC) {
		return pxeAnswer{File: chainFile(r.MAC, bin), Binary: bin, Why: "iPXE, first request: chainload the iPXE binary over TFTP (--pxe-chainload)"}, true
	}
	return pxeAnswer{File: b.scriptURL(r.MAC), Why: "iPXE: the boot script over HTTP"}, true
}

// scriptBase is the iPXE script's URL without the client's MAC.
func (b *pxeBooter) scriptBase() string {
	return fmt.Sprintf("http://%s/pxe/boot.ipxe", netip.AddrPortFrom(b.self, uint16(b.httpPort)))
}

// scriptURL is where a client fetches its iPXE script.
func (b *pxeBooter) scriptURL(mac net.HardwareAddr) string {
	return b.scriptBase() + "?mac=" + macDashes(mac)
}

func (b *pxeBooter) hasFetched(mac net.HardwareAddr) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fetched[mac.String()]
}

// binaryFetched records that mac fetched the iPXE binary over TFTP.
func (b *pxeBooter) binaryFetched(mac net.HardwareAddr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fetched[mac.String()] = true
}

// scriptFetched records that mac fetched its script: its next power-on
// starts from the iPXE binary again.
func (b *pxeBooter) scriptFetched(mac net.HardwareAddr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.fetched, mac.String())
}

// chainFile is the TFTP name of an iPXE binary for one MAC, so that the
// TFTP server knows who fetched it: "52-54-00-12-34-56/undionly.kpxe".
// Dashes, not colons: iPXE would read "52:" as a URI scheme.
func chainFile(mac net.HardwareAddr, bin string) string {
	return macDashes(mac) + "/" + bin
}

// macDashes writes a MAC as 52-54-00-12-34-56.
func macDashes(mac net.HardwareAddr) string {
	return strings.ReplaceAll(mac.String(), ":", "-")
}

// parseMACDashes reads a 6-byte MAC written by macDashes (or with colons).
func parseMACDashes(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("not a MAC address: %q", s)
	}
	return mac, nil
}
