package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
	"github.com/shoal-lab/shoal/qemu/vm"
)

// imageSize is the test image: small enough for TCG, several chunks.
const imageSize = 24 << 20

// diskSize is the VMs' blank target disk.
const diskSize = 64 << 20

// newLab makes a lab with the server host.
func newLab(t *testing.T) (*lab.Lab, *lab.Host) {
	t.Helper()
	l, err := lab.New(t.Context(), lab.Config{Subnet: labSubnet, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h, err := l.AddHost("srv")
	if err != nil {
		t.Fatal(err)
	}
	return l, h
}

// TestDirectBoot boots the kernel and initramfs directly (-kernel/-initrd)
// on a lab bridge, once with a virtio NIC and once with an e1000 (whose
// driver only coldplug can find): the client loads its drivers, gets a
// lease from shoal serve --dhcp, joins the session, images its virtio disk
// and powers off; the disk then holds the image and the server's table
// says the client verified it.
func TestDirectBoot(t *testing.T) {
	requireVM(t, vm.BIOS)
	art := bootArtifacts(t)
	for _, nic := range []struct{ model, driver string }{
		{"virtio-net-pci", "virtio_net"},
		{"e1000", "e1000"},
	} {
		t.Run(nic.model, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			dir := t.TempDir()
			image := filepath.Join(dir, "test.img")
			sum := makeImage(t, image, imageSize)
			l, srvHost := newLab(t)
			srv := startServer(ctx, t, srvHost, art.shoal, "e2e", image)

			disk := filepath.Join(dir, "disk.raw")
			start := time.Now()
			v, err := vm.Start(ctx, vm.Config{
				Name: "client", Dir: dir, Lab: l, NIC: nic.model, Accel: testAccel(t, art.kernel), Memory: 768,
				Kernel: art.kernel, Initrd: art.initrd,
				Append: "console=ttyS0 shoal.session=e2e shoal.disk=/dev/vda shoal.after=poweroff",
				Disks:  []vm.Disk{{Path: disk, Size: diskSize}},
				Logger: testLogger(t),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if _, err := v.WaitFor(ctx, regexp.MustCompile(`network up: eth0 10\.77\.0\.1\d\d/24`)); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: booted and got a DHCP lease in %s", nic.model, time.Since(start).Round(100*time.Millisecond))
			if err := v.Wait(ctx); err != nil {
				t.Fatalf("VM: %v", err)
			}
			t.Logf("%s: imaged and powered off after %s", nic.model, time.Since(start).Round(100*time.Millisecond))
			if err := srv.wait(ctx); err != nil {
				t.Errorf("shoal serve: %v", err)
			}

			console := v.Console()
			for _, want := range []*regexp.Regexp{
				regexp.MustCompile(`loaded \d+ drivers .*\b` + nic.driver + `\b`),
				regexp.MustCompile(`\[e2e\] receiving +\d+\.\d%`), // the client's progress display
				regexp.MustCompile(`SHOAL: DONE`),
				regexp.MustCompile(`poweroff now`),
			} {
				if !want.MatchString(console) {
					t.Errorf("serial console lacks %q", want)
				}
			}
			if got := prefixSHA256(t, disk, imageSize); got != sum {
				t.Errorf("disk SHA-256 %x, image %x", got, sum)
			}
			out := srv.out.String()
			if !strings.Contains(out, fmt.Sprintf("%x", sum)) || !regexp.MustCompile(`client 1 verified`).MatchString(out) {
				t.Errorf("the server does not report the client verified with SHA-256 %x", sum)
			}
			if t.Failed() {
				t.Logf("serial console:\n%s", console)
			}
		})
	}
}

// TestWrongSession boots a client asking for a session nobody serves: the
// console must say so, name the session that is served, and keep trying.
// With no shoal.disk it first lists the disks and asks, on the serial
// console: the answer to "Proceed?" defaults to No.
func TestWrongSession(t *testing.T) {
	requireVM(t, vm.BIOS)
	art := bootArtifacts(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	image := filepath.Join(dir, "test.img")
	makeImage(t, image, 1<<20)
	l, srvHost := newLab(t)
	startServer(ctx, t, srvHost, art.shoal, "right-name", image)

	v, err := vm.Start(ctx, vm.Config{
		Name: "client", Dir: dir, Lab: l, Accel: testAccel(t, art.kernel), Memory: 768,
		Kernel: art.kernel, Initrd: art.initrd,
		Append: "console=ttyS0 shoal.session=wrong-name shoal.after=poweroff",
		Disks:  []vm.Disk{{Path: filepath.Join(dir, "disk.raw"), Size: diskSize}},
		Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ask := regexp.MustCompile(`(?s)1\) +/dev/vda +64\.0 MiB.*Write session "wrong-name" to which disk\? \[1-1`)
	if _, err := v.WaitFor(ctx, ask); err != nil {
		t.Fatal(err)
	}
	v.Type("1\n")
	if _, err := v.WaitFor(ctx, regexp.MustCompile(`ALL DATA on /dev/vda .* Proceed\? \[y/N\]`)); err != nil {
		t.Fatal(err)
	}
	v.Type("\n") // the default: No
	if _, err := v.WaitFor(ctx, regexp.MustCompile(`(?s)Not writing /dev/vda\..*to which disk\?`)); err != nil {
		t.Fatal(err)
	}
	v.Type("1\n")
	if _, err := v.WaitFor(ctx, regexp.MustCompile(`(?s)Not writing.*Proceed\? \[y/N\]`)); err != nil {
		t.Fatal(err)
	}
	v.Type("y\n")
	// Two complaints in a row: it retries, and it names what it heard.
	re := regexp.MustCompile(`(?s)no server answers session "wrong-name".*no server answers session "wrong-name" yet \(.*\); still trying; servers heard serve other sessions: "right-name"`)
	if _, err := v.WaitFor(ctx, re); err != nil {
		t.Fatal(err)
	}
}

// TestUSBBoot boots build/shoal-usb.img as a USB stick under SeaBIOS and
// under OVMF, with a blank virtio disk: the client reads the settings file
// a person would edit on the stick (written here with mtools), images the
// blank disk, and leaves the stick unchanged.
func TestUSBBoot(t *testing.T) {
	for _, fw := range []vm.Firmware{vm.BIOS, vm.UEFI} {
		t.Run(string(fw), func(t *testing.T) {
			requireVM(t, fw)
			art := bootArtifacts(t)
			if _, err := exec.LookPath("mcopy"); err != nil {
				t.Fatalf("mcopy (mtools) is needed to edit the stick: %v", err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
			defer cancel()
			dir := t.TempDir()
			image := filepath.Join(dir, "test.img")
			sum := makeImage(t, image, imageSize)
			l, srvHost := newLab(t)
			srv := startServer(ctx, t, srvHost, art.shoal, "usb-e2e", image)

			// The stick: a copy of the USB image with its settings edited
			// as a person would (CRLF, as Notepad writes).
			stick := filepath.Join(dir, "stick.img")
			b, err := os.ReadFile(art.usb)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(stick, b, 0o644); err != nil {
				t.Fatal(err)
			}
			settings := filepath.Join(dir, "shoal.txt")
			os.WriteFile(settings, []byte("# edited for the test\r\nsession = usb-e2e\r\ndisk = auto\r\nafter = poweroff\r\n"), 0o644)
			cmd := exec.Command("mcopy", "-o", "-i", stick+"@@1M", settings, "::/shoal.txt")
			cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("mcopy: %v\n%s", err, out)
			}
			stickSum := fileSHA256(t, stick)

			disk := filepath.Join(dir, "disk.raw")
			start := time.Now()
			v, err := vm.Start(ctx, vm.Config{
				Name: "usb" + string(fw), Dir: dir, Lab: l, Accel: testAccel(t, art.kernel), Memory: 768, Firmware: fw,
				Disks: []vm.Disk{
					{Path: stick, Interface: vm.USB, Boot: true},
					{Path: disk, Size: diskSize, Interface: vm.Virtio},
				},
				Logger: testLogger(t),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if _, err := v.WaitFor(ctx, regexp.MustCompile(`settings from shoal\.txt on /dev/sda1`)); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: booted from the stick and read its settings in %s", fw, time.Since(start).Round(100*time.Millisecond))
			if err := v.Wait(ctx); err != nil {
				t.Fatalf("VM: %v", err)
			}
			t.Logf("%s: imaged and powered off after %s", fw, time.Since(start).Round(100*time.Millisecond))
			if err := srv.wait(ctx); err != nil {
				t.Errorf("shoal serve: %v", err)
			}
			console := v.Console()
			for _, want := range []string{"shoal.disk=auto chose /dev/vda", "SHOAL: DONE"} {
				if !strings.Contains(console, want) {
					t.Errorf("serial console lacks %q", want)
				}
			}
			if got := prefixSHA256(t, disk, imageSize); got != sum {
				t.Errorf("disk SHA-256 %x, image %x", got, sum)
			}
			if got := fileSHA256(t, stick); got != stickSum {
				t.Errorf("the stick changed: SHA-256 %x, was %x", got, stickSum)
			}
			if t.Failed() {
				t.Logf("serial console:\n%s", console)
			}
		})
	}
}
