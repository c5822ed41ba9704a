// Package e2e holds shoal's end-to-end tests of the boot image: QEMU VMs on
// a private lab bridge booting the client initramfs (directly or from the
// USB image) against a real `shoal serve --dhcp`.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/internal/filehash"
	"github.com/shoal-lab/shoal/qemu/lab"
	"github.com/shoal-lab/shoal/qemu/vm"
)

// requireVM skips the test when VM tests are turned off (SHOAL_SKIP_VM=1)
// or cannot run here, unless SHOAL_REQUIRE_LAB=1 (make test, CI), where a
// missing lab or QEMU fails it.
func requireVM(t *testing.T, fw vm.Firmware) {
	t.Helper()
	if os.Getenv("SHOAL_SKIP_VM") == "1" {
		t.Skip("SHOAL_SKIP_VM=1: skipping VM tests")
	}
	err := lab.Available()
	if err == nil {
		err = vm.Available(fw)
	}
	if err != nil {
		if os.Getenv("SHOAL_REQUIRE_LAB") == "1" {
			t.Fatalf("SHOAL_REQUIRE_LAB=1 but: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// repoRoot is the module's root directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// artifacts are the boot images and the server binary, built once per test
// binary.
type artifacts struct {
	kernel, initrd, usb, shoal string
}

var (
	buildOnce sync.Once
	built     artifacts
	buildErr  error
	accelOnce sync.Once
	accel     vm.Accel
)

// bootArtifacts builds (make kernel initramfs usb: a no-op when they are
// up to date) and returns the boot images and a shoal server binary.
func bootArtifacts(t *testing.T) artifacts {
	t.Helper()
	buildOnce.Do(func() {
		root := repoRoot(t)
		start := time.Now()
		cmd := exec.Command("make", "-C", root, "--no-print-directory", "kernel", "initramfs", "usb")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("make kernel initramfs usb: %w\n%s", err, out)
			return
		}
		t.Logf("boot images ready in %s:\n%s", time.Since(start).Round(100*time.Millisecond), out)
		bin := filepath.Join(os.TempDir(), fmt.Sprintf("shoal-e2e-%d", os.Getpid()))
		gobuild := exec.Command("go", "build", "-o", bin, "./cmds/shoal")
		gobuild.Dir = root
		if out, err := gobuild.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmds/shoal: %w\n%s", err, out)
			return
		}
		b := filepath.Join(root, "build")
		built = artifacts{
			kernel: filepath.Join(b, "vmlinuz"),
			initrd: filepath.Join(b, "shoal-initramfs.cpio.gz"),
			usb:    filepath.Join(b, "shoal-usb.img"),
			shoal:  bin,
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// testAccel probes KVM once per test binary.
func testAccel(t *testing.T, kernel string) vm.Accel {
	accelOnce.Do(func() { accel = vm.DetectAccel(context.Background(), kernel, testLogger(t)) })
	return accel
}

// labSubnet is the lab's subnet; the server is host 1 in it.
var labSubnet = netip.MustParsePrefix("10.77.0.0/24")

const dhcpRange = "10.77.0.100-10.77.0.150"

// makeImage writes a raw disk image: random data with a run of zeros in
// the middle, and returns its SHA-256.
func makeImage(t *testing.T, path string, size int) [32]byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	clear(b[size/2 : size/2+size/4])
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// prefixSHA256 hashes the first n bytes of a file.
func prefixSHA256(t *testing.T, path string, n int64) [32]byte {
	t.Helper()
	sum, err := filehash.SHA256(path, n)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func fileSHA256(t *testing.T, path string) [32]byte {
	t.Helper()
	return prefixSHA256(t, path, -1)
}

// serveProc is a running `shoal serve` in a lab host.
type serveProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// startServer runs shoal serve in host h with DHCP on its eth0.
func startServer(ctx context.Context, t *testing.T, h *lab.Host, bin, session, image string, extra ...string) *serveProc {
	t.Helper()
	return startShoal(ctx, t, h, bin, append([]string{"--session", session, "--image", image, "--interface", h.Iface,
		"--dhcp", dhcpRange, "--min-clients", "1"}, extra...)...)
}

// wait waits for the server to exit and returns its error.
func (s *serveProc) wait(ctx context.Context) error {
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		return fmt.Errorf("shoal serve still running: %w", ctx.Err())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
