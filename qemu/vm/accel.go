package vm

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Accel is QEMU's accelerator.
type Accel string

// Accelerators.
const (
	KVM Accel = "kvm"
	TCG Accel = "tcg"
)

// ProbeTimeout bounds the KVM probe.
const ProbeTimeout = 3 * time.Second

// ProbeKVM tells whether KVM can run a Linux guest here: /dev/kvm existing
// is not enough (on some hosts a guest hangs in the kernel's early boot),
// so it boots kernel under KVM with no initramfs and waits, at most
// ProbeTimeout, for the kernel's first message on the serial console.
// kernel empty means the newest /boot/vmlinuz-*.
func ProbeKVM(ctx context.Context, kernel string) error {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return fmt.Errorf("no KVM: %w", err)
	}
	if kernel == "" {
		kernel = hostKernel()
	}
	if kernel == "" {
		return fmt.Errorf("no kernel to probe KVM with")
	}
	if _, err := exec.LookPath(QEMU); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, QEMU, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "128",
		"-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot", "-serial", "stdio",
		"-kernel", kernel, "-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1")
	cmd.WaitDelay = time.Second
	out := &consoleBuf{file: discard{}, changed: make(chan struct{})}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start KVM probe: %w", err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	for {
		text, changed, _ := out.snapshot()
		if strings.Contains(text, "Linux version") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("a KVM guest did not start its kernel within %s (KVM hangs on this host)", ProbeTimeout)
		case <-changed:
		}
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// DetectAccel returns KVM if ProbeKVM succeeds with kernel, else TCG, and
// logs why.
func DetectAccel(ctx context.Context, kernel string, log *slog.Logger) Accel {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ProbeKVM(ctx, kernel); err != nil {
		log.Info("vm: using TCG", "reason", err)
		return TCG
	}
	log.Info("vm: using KVM")
	return KVM
}

// hostKernel returns the newest /boot/vmlinuz-*, or "".
func hostKernel() string {
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(ks) == 0 {
		return ""
	}
	sort.Strings(ks)
	return ks[len(ks)-1]
}
