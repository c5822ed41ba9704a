package e2e

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
	"github.com/shoal-lab/shoal/qemu/vm"
)

// The PXE tests boot VMs with -boot n through QEMU's iPXE NIC ROM and the
// whole chain that `shoal serve --pxe` serves: DHCP → TFTP undionly.kpxe
// (chainloaded with --pxe-chainload: QEMU's ROM already is iPXE) → DHCP
// again as the chainloaded iPXE → HTTP script → HTTP kernel + initramfs →
// the client joins the session, images its blank disk and powers off.

// pxeVMs is how many VMs the multi-VM scenarios boot: SHOAL_PXE_VMS, at
// least 3 (the default).
func pxeVMs(t *testing.T) int {
	n := 3
	if s := os.Getenv("SHOAL_PXE_VMS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 3 {
			t.Fatalf("SHOAL_PXE_VMS=%q: want a number of at least 3", s)
		}
		n = v
	}
	return n
}

// pxeImage is the image a scenario serves.
type pxeImage struct {
	path string   // what shoal serve gets
	size int64    // the raw image's size
	sum  [32]byte // the raw image's SHA-256
	desc string
}

// randomPXEImage is a raw image of random data with a zero run.
func randomPXEImage(t *testing.T, dir string, size int) pxeImage {
	path := filepath.Join(dir, "random.img")
	return pxeImage{path: path, size: int64(size), sum: makeImage(t, path, size), desc: fmt.Sprintf("random %d MiB raw", size>>20)}
}

// realisticPXEImage is scripts/mkimage.sh's GPT disk (ESP + ext4 with real
// files), packed with `shoal image pack`.
func realisticPXEImage(t *testing.T, dir, shoal string, sizeMiB int) pxeImage {
	raw := filepath.Join(dir, "realistic.img")
	packed := filepath.Join(dir, "realistic.shoal")
	for _, c := range [][]string{
		{filepath.Join(repoRoot(t), "scripts", "mkimage.sh"), raw, strconv.Itoa(sizeMiB)},
		{shoal, "image", "pack", raw, packed},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		} else {
			t.Logf("%s", strings.TrimSpace(string(out)))
		}
	}
	return pxeImage{path: packed, size: int64(sizeMiB) << 20, sum: fileSHA256(t, raw), desc: fmt.Sprintf("realistic %d MiB GPT+ext4, packed", sizeMiB)}
}

// pxeScenario is one run of the PXE chain with VMs.
type pxeScenario struct {
	vms   int
	image pxeImage
	// proxy serves proxyDHCP beside dnsmasq instead of shoal's own DHCP.
	proxy bool
	// lossyVM (1-based) gets lossPercent random loss of the session's data
	// at its tap; 0: none.
	lossyVM, lossPercent int
	// killVM (1-based) is killed once it has received half the image.
	killVM int
	// firmware of the VMs (BIOS by default).
	firmware vm.Firmware
	// extra server flags.
	extra []string
}

// pxeResult is what a scenario measured.
type pxeResult struct {
	server  *serveProc
	vms     []*vm.VM
	disks   []string
	elapsed time.Duration // first power-on → last disk verified (the server's "verified" events)
	dnsmasq *syncBuffer
	lossTap string
	l       *lab.Lab
	exitErr error
}

// The session's data port (shoal's default), where loss is applied.
const pxeDataPort = 9941

// runPXEScenario builds the lab, starts the server and the VMs, and waits
// for the server to finish.
func runPXEScenario(t *testing.T, sc pxeScenario) *pxeResult {
	t.Helper()
	art := bootArtifacts(t)
	accel := testAccel(t, art.kernel)
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	l, srvHost := newLab(t)
	res := &pxeResult{l: l}
	startIPv6Router(ctx, t, l)

	args := []string{"--session", "pxe", "--image", sc.image.path, "--interface", srvHost.Iface, "--port", strconv.Itoa(pxeDataPort),
		"--pxe", "--pxe-chainload", "--pxe-kernel", art.kernel, "--pxe-initrd", art.initrd, "--pxe-disk", "auto", "--pxe-after", "poweroff",
		"--min-clients", strconv.Itoa(sc.vms), "--wait-after-join", "90s", "--log-level", cmp.Or(os.Getenv("SHOAL_PXE_LOG_LEVEL"), "info")}
	if sc.proxy {
		dh, err := l.AddHost("dhcp")
		if err != nil {
			t.Fatal(err)
		}
		res.dnsmasq = startDnsmasq(ctx, t, dh)
		args = append(args, "--proxy-dhcp")
	} else {
		args = append(args, "--dhcp", dhcpRange)
	}
	res.server = startShoal(ctx, t, srvHost, art.shoal, append(args, sc.extra...)...)
	if err := res.server.waitOutput(ctx, regexp.MustCompile(`PXE boot chain ready`)); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	for i := 1; i <= sc.vms; i++ {
		disk := filepath.Join(dir, fmt.Sprintf("disk%d.raw", i))
		v, err := vm.Start(ctx, vm.Config{
			Name: fmt.Sprintf("pxe%d", i), Dir: dir, Lab: l, Accel: accel, Memory: 512, BootNet: true, Firmware: sc.firmware,
			// Exactly the image's size: on a larger disk the client moves a
			// GPT image's backup header to the disk's end (not bit-identical).
			Disks: []vm.Disk{{Path: disk, Size: sc.image.size}},
			// SeaBIOS sends the screen to the serial console: the iPXE ROM's
			// and the chainloaded iPXE's messages land in the serial log.
			Extra:  []string{"-machine", "graphics=off"},
			Logger: testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		res.vms = append(res.vms, v)
		res.disks = append(res.disks, disk)
		if i == sc.lossyVM {
			res.lossTap = v.Tap
			if err := tapLoss(ctx, l, v.Tap, sc.lossPercent); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The time to the last "client N verified" event of the server.
	want := sc.vms
	if sc.killVM > 0 {
		want--
	}
	verified := regexp.MustCompile(`client \d+ verified`)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			if len(verified.FindAllString(res.server.out.String(), -1)) >= want {
				res.elapsed = time.Since(start)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-res.server.done:
				if len(verified.FindAllString(res.server.out.String(), -1)) >= want {
					res.elapsed = time.Since(start)
				}
				return
			case <-tick.C:
			}
		}
	}()

	if sc.killVM > 0 {
		v := res.vms[sc.killVM-1]
		half := regexp.MustCompile(`receiving +([5-9]\d|100)\.\d%`)
		if _, err := v.WaitFor(ctx, half); err != nil {
			t.Fatalf("%s never got half-way: %v", v.Name, err)
		}
		t.Logf("%s received half the image after %s: killing it", v.Name, time.Since(start).Round(100*time.Millisecond))
		v.Close()
	}
	for i, v := range res.vms {
		if i+1 == sc.killVM {
			continue
		}
		if err := v.Wait(ctx); err != nil {
			t.Errorf("%s: %v", v.Name, err)
		}
	}
	res.exitErr = res.server.wait(ctx)
	wg.Wait()
	if res.elapsed > 0 {
		t.Logf("PXE, %d VMs, %s: first power-on → last disk verified: %s", sc.vms, sc.image.desc, res.elapsed.Round(100*time.Millisecond))
	}
	return res
}

// tapLoss drops percent of the session's UDP data on its way to a VM,
// with nftables on the bridge port (the tap) in the switch namespace.
func tapLoss(ctx context.Context, l *lab.Lab, tap string, percent int) error {
	rules := fmt.Sprintf(`table bridge shoal_pxe_loss {
	chain forward {
		type filter hook forward priority 0; policy accept;
		oifname %q udp dport %d numgen random mod 100 < %d counter drop
	}
}
`, tap, pxeDataPort, percent)
	cmd := l.SwitchCommand(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, out)
	}
	return nil
}

// tapDrops reads how many packets the loss rule dropped.
func tapDrops(ctx context.Context, t *testing.T, l *lab.Lab) int {
	t.Helper()
	out, err := l.SwitchCommand(ctx, "nft", "list", "table", "bridge", "shoal_pxe_loss").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	m := regexp.MustCompile(`counter packets (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in:\n%s", out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// chainStep is one step of the boot chain as the serial console shows it.
type chainStep struct{ what, re string }

// biosChain is the chain of a BIOS VM, in order: QEMU's iPXE ROM
// chainloads undionly.kpxe, which drives the NIC through the ROM's UNDI.
var biosChain = []chainStep{
	{"the ROM's DHCP gives the iPXE binary under the MAC", `Filename: [0-9a-f]{2}(-[0-9a-f]{2}){5}/undionly\.kpxe`},
	{"TFTP fetch of undionly.kpxe", `tftp://10\.77\.0\.1/[0-9a-f-]{17}/undionly\.kpxe\.\.\. ok`},
	{"undionly.kpxe runs as a PXE NBP", `undionly\.kpxe : \d+ bytes \[PXE-NBP\]`},
	{"it takes over the ROM's UNDI", `PXE->EB: !PXE at`},
	{"the chainloaded iPXE drives the NIC through UNDI", `using undionly on`},
}

// uefiChain is the chain of a UEFI VM up to the script: QEMU's EFI iPXE
// ROM chainloads ipxe.efi.
var uefiChain = []chainStep{
	{"the ROM's DHCP gives the EFI iPXE binary under the MAC", `Filename: [0-9a-f]{2}(-[0-9a-f]{2}){5}/ipxe\.efi`},
	{"TFTP fetch of ipxe.efi", `tftp://10\.77\.0\.1/[0-9a-f-]{17}/ipxe\.efi\.\.\. ok`},
	{"ipxe.efi runs as an EFI image", `ipxe\.efi : \d+ bytes \[EFI\]`},
}

// scriptChain is the rest, the same for both: the script over HTTP, the
// kernel and the initramfs, and the client at work.
var scriptChain = []chainStep{
	{"the chainloaded iPXE's DHCP gives the script URL", `Filename: http://10\.77\.0\.1:8080/pxe/boot\.ipxe\?mac=`},
	{"the script", `boot\.ipxe : \d+ bytes \[script\]`},
	{"the script runs", `shoal: booting the imaging client for session pxe from 10\.77\.0\.1`},
	{"kernel over HTTP", `http://10\.77\.0\.1:8080/pxe/vmlinuz\.\.\. [0-9%\x08 ]*ok`},
	{"initramfs over HTTP", `http://10\.77\.0\.1:8080/pxe/initrd\.cpio\.gz\.\.\. [0-9%\x08 ]*ok`},
	{"Linux runs with the shoal command line", `Command line: .*shoal\.session=pxe shoal\.server=10\.77\.0\.1 shoal\.disk=auto shoal\.after=poweroff`},
	{"the client images the disk", `shoal\.disk=auto chose /dev/vda`},
	{"and says so", `SHOAL: DONE`},
}

// checkChain asserts the chain's steps appear in order on v's console.
func checkChain(t *testing.T, v *vm.VM, fw vm.Firmware) {
	t.Helper()
	steps := biosChain
	if fw == vm.UEFI {
		steps = uefiChain
	}
	console := v.Console()
	pos := 0
	for _, step := range append(append([]chainStep{}, steps...), scriptChain...) {
		loc := regexp.MustCompile(step.re).FindStringIndex(console[pos:])
		if loc == nil {
			t.Errorf("%s: serial log lacks, after offset %d, %s (%s)", v.Name, pos, step.what, step.re)
			continue
		}
		pos += loc[1]
	}
}

// checkDisks asserts every disk but the skipped one holds the image.
func checkDisks(t *testing.T, res *pxeResult, img pxeImage, skip int) {
	t.Helper()
	for i, d := range res.disks {
		if i+1 == skip {
			continue
		}
		if got := prefixSHA256(t, d, img.size); got != img.sum {
			t.Errorf("%s: disk SHA-256 %x, image %x", res.vms[i].Name, got, img.sum)
		}
	}
}

// serverRow returns the summary table's row for a VM's MAC.
func serverRow(out string, v *vm.VM) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, v.MAC.String()) && regexp.MustCompile(`^\d+ `).MatchString(line) {
			return line
		}
	}
	return ""
}

func dumpConsoles(t *testing.T, res *pxeResult) {
	if !t.Failed() {
		return
	}
	for _, v := range res.vms {
		t.Logf("%s serial console (%s):\n%s", v.Name, v.LogPath, v.Console())
	}
}

// TestPXEChain boots N VMs (3; SHOAL_PXE_VMS) through the whole chain with
// shoal's DHCP server and --pxe-chainload, serving the realistic packed
// image, with 5 % random loss of the session's data at the second VM's
// tap: every serial log shows the chainload and the HTTP boot, every disk
// is bit-identical, the lossy VM needed repairs, and the server says all
// verified and exits 0.
func TestPXEChain(t *testing.T) {
	requireVM(t, vm.BIOS)
	n := pxeVMs(t)
	art := bootArtifacts(t)
	img := realisticPXEImage(t, t.TempDir(), art.shoal, 64)
	res := runPXEScenario(t, pxeScenario{vms: n, image: img, lossyVM: 2, lossPercent: 5})
	defer dumpConsoles(t, res)
	if res.exitErr != nil {
		t.Errorf("shoal serve: %v (want exit status 0)", res.exitErr)
	}
	for _, v := range res.vms {
		checkChain(t, v, vm.BIOS)
		if row := serverRow(res.server.out.String(), v); !strings.Contains(row, " ok ") || !strings.Contains(row, fmt.Sprintf("%x", img.sum)) {
			t.Errorf("%s: server row %q, want ok with the image's SHA-256", v.Name, row)
		}
	}
	checkDisks(t, res, img, 0)
	out := res.server.out.String()
	if !strings.Contains(out, fmt.Sprintf("%d of %d clients verified", n, n)) || !strings.Contains(out, "RESULT: all clients verified") {
		t.Errorf("the server's summary does not say all %d verified", n)
	}
	drops := tapDrops(t.Context(), t, res.l)
	m := regexp.MustCompile(`\((\d+) repairs`).FindStringSubmatch(out)
	if drops == 0 || m == nil || m[1] == "0" {
		t.Errorf("loss at %s: %d packets dropped, server summary repairs %v: want both > 0", res.lossTap, drops, m)
	} else {
		t.Logf("loss at %s (%s): %d data packets dropped, all repaired (%s repair packets in all)", res.vms[1].Name, res.lossTap, drops, m[1])
	}
}

// TestPXEKilledVM boots N VMs through the chain and kills one when it has
// received half the image: the server drops and reports it, the others
// verify bit-identical disks, and the exit status is 1.
func TestPXEKilledVM(t *testing.T) {
	requireVM(t, vm.BIOS)
	n := pxeVMs(t)
	img := randomPXEImage(t, t.TempDir(), 48<<20)
	kill := n
	res := runPXEScenario(t, pxeScenario{vms: n, image: img, killVM: kill})
	defer dumpConsoles(t, res)
	if res.exitErr == nil {
		t.Errorf("shoal serve exited 0 with a killed client")
	} else if ee, ok := res.exitErr.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("shoal serve: %v, want exit status 1", res.exitErr)
	}
	out := res.server.out.String()
	killed := res.vms[kill-1]
	if row := serverRow(out, killed); row == "" || strings.Contains(row, " ok ") {
		t.Errorf("killed %s (%s): server row %q, want it reported as not ok", killed.Name, killed.MAC, row)
	} else {
		t.Logf("the server reports the killed VM: %s", row)
	}
	for i, v := range res.vms {
		if i+1 == kill {
			continue
		}
		checkChain(t, v, vm.BIOS)
		if row := serverRow(out, v); !strings.Contains(row, " ok ") {
			t.Errorf("%s: server row %q, want ok", v.Name, row)
		}
	}
	if !strings.Contains(out, fmt.Sprintf("%d of %d clients verified", n-1, n)) || !strings.Contains(out, "RESULT: 1 client(s) FAILED") {
		t.Errorf("the summary does not say %d of %d verified and one failed", n-1, n)
	}
	checkDisks(t, res, img, kill)
}

// TestPXEProxyDHCP boots a VM beside a plain DHCP server (dnsmasq, DHCP
// only) with `shoal serve --pxe --proxy-dhcp`: dnsmasq leases the
// addresses (to the iPXE ROM, the chainloaded iPXE and the Linux client),
// shoal supplies only the boot information, and the VM is imaged.
func TestPXEProxyDHCP(t *testing.T) {
	requireVM(t, vm.BIOS)
	img := randomPXEImage(t, t.TempDir(), 8<<20)
	res := runPXEScenario(t, pxeScenario{vms: 1, image: img, proxy: true})
	defer dumpConsoles(t, res)
	if res.exitErr != nil {
		t.Errorf("shoal serve: %v", res.exitErr)
	}
	v := res.vms[0]
	checkChain(t, v, vm.BIOS)
	checkDisks(t, res, img, 0)
	// iPXE got its address from dnsmasq, and Linux too.
	if !regexp.MustCompile(`net0: 10\.77\.0\.1[0-5]\d/255\.255\.255\.0`).MatchString(v.Console()) {
		t.Errorf("iPXE did not configure an address of dnsmasq's range")
	}
	if !regexp.MustCompile(`network up: eth0 10\.77\.0\.1[0-5]\d/24`).MatchString(v.Console()) {
		t.Errorf("the client did not get an address of dnsmasq's range")
	}
	acks := regexp.MustCompile(`DHCPACK\(eth0\) 10\.77\.0\.1\d\d `+regexp.QuoteMeta(v.MAC.String())).FindAllString(res.dnsmasq.String(), -1)
	if len(acks) < 3 {
		t.Errorf("dnsmasq acked %s %d times, want 3 or more (ROM, chainloaded iPXE, Linux)", v.MAC, len(acks))
	}
	out := res.server.out.String()
	if !strings.Contains(out, "PXE: proxyDHCP boot file") || strings.Contains(out, "DHCP lease") {
		t.Errorf("shoal did not serve as proxyDHCP only")
	}
	if !strings.Contains(out, "RESULT: all clients verified") {
		t.Errorf("the server does not say the client verified")
	}
}

// TestPXEUEFI boots a UEFI VM (OVMF, QEMU's EFI iPXE ROM, architecture 7)
// through the chain: ipxe.efi over TFTP, the script, and the kernel's EFI
// stub with the initramfs named on its command line.
func TestPXEUEFI(t *testing.T) {
	requireVM(t, vm.UEFI)
	img := randomPXEImage(t, t.TempDir(), 8<<20)
	res := runPXEScenario(t, pxeScenario{vms: 1, image: img, firmware: vm.UEFI})
	defer dumpConsoles(t, res)
	if res.exitErr != nil {
		t.Errorf("shoal serve: %v", res.exitErr)
	}
	checkChain(t, res.vms[0], vm.UEFI)
	checkDisks(t, res, img, 0)
	if !strings.Contains(res.server.out.String(), "firmware=\"UEFI x64\"") {
		t.Errorf("the server did not see a UEFI x64 client")
	}
}
