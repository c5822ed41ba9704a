// Package vm runs QEMU virtual machines for shoal's end-to-end tests: x86-64
// guests with KVM when a probe shows it works and TCG otherwise, a tap on a
// lab bridge (qemu/lab), blank sparse raw disks, a selectable NIC model,
// BIOS (SeaBIOS) or UEFI (OVMF) firmware, direct kernel boot or network
// boot, and the serial console captured to a log file with a way to wait
// for a regular expression on it.
package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
)

// QEMU is the emulator binary.
const QEMU = "qemu-system-x86_64"

// Firmware selects the machine's firmware.
type Firmware string

// Firmwares.
const (
	BIOS Firmware = "bios" // SeaBIOS, QEMU's default
	UEFI Firmware = "uefi" // OVMF (Debian package ovmf)
)

// DiskInterface is how a disk is attached.
type DiskInterface string

// Disk interfaces.
const (
	Virtio DiskInterface = "virtio" // virtio-blk-pci: /dev/vdX in the guest
	IDE    DiskInterface = "ide"    // PIIX IDE: /dev/sdX through ata_piix
	USB    DiskInterface = "usb"    // usb-storage on an xHCI controller: a USB stick
	NVMe   DiskInterface = "nvme"   // an NVMe controller: /dev/nvme0n1
)

// Disk is one raw disk image.
type Disk struct {
	// Path of the raw image. If it does not exist and Size > 0, a sparse
	// file of Size bytes is created.
	Path string
	Size int64
	// Interface is how it is attached (Virtio).
	Interface DiskInterface
	// ReadOnly attaches it read-only.
	ReadOnly bool
	// Boot makes it the first boot device.
	Boot bool
}

// Config describes a VM. The zero value of each optional field means the
// documented default.
type Config struct {
	// Name names the VM in logs, its tap and its files: 1 to 12 letters,
	// digits, '_' or '-'. Required.
	Name string
	// Dir is where the serial log (<Name>-serial.log) and firmware variable
	// files go. Required.
	Dir string
	// Lab, if set, gets a tap for the VM's NIC and QEMU runs in its switch
	// namespace. Without it the VM has no network.
	Lab *lab.Lab
	// NIC is the QEMU NIC model: "virtio-net-pci" (default), "e1000",
	// "e1000e", "rtl8139", …
	NIC string
	// MAC of the NIC; default 52:54:00 and three bytes from Name.
	MAC net.HardwareAddr
	// Accel is KVM or TCG; empty probes with DetectAccel (seconds: callers
	// starting many VMs should probe once and set it).
	Accel Accel
	// Memory in MiB (512) and CPUs (1).
	Memory int
	CPUs   int
	// Kernel, Initrd and Append boot a kernel directly.
	Kernel, Initrd, Append string
	// BootNet boots from the network (-boot n) when no kernel is given.
	BootNet bool
	// Firmware is BIOS (default) or UEFI.
	Firmware Firmware
	// Disks to attach, in order.
	Disks []Disk
	// Extra arguments for QEMU.
	Extra []string
	// Logger receives the VM's life cycle; nil discards it.
	Logger *slog.Logger
}

// VM is a running QEMU.
type VM struct {
	Name    string
	Tap     string // the lab tap, if any
	MAC     net.HardwareAddr
	Accel   Accel
	LogPath string // the serial console's log file

	log     *slog.Logger
	cmd     *exec.Cmd
	cancel  context.CancelFunc
	console *consoleBuf
	done    chan struct{}
	waitErr error

	closeOnce sync.Once
	stdin     io.WriteCloser
}

// OVMF firmware files of Debian's ovmf package (no Secure Boot, no SMM:
// they run on the default "pc" machine).
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Available returns nil if QEMU (and for UEFI the OVMF firmware) is
// installed.
func Available(fw Firmware) error {
	if _, err := exec.LookPath(QEMU); err != nil {
		return fmt.Errorf("vm: %s not installed (Debian package qemu-system-x86): %w", QEMU, err)
	}
	if fw == UEFI {
		for _, f := range []string{OVMFCode, OVMFVars} {
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("vm: UEFI firmware missing (Debian package ovmf): %w", err)
			}
		}
	}
	return nil
}

// Start starts QEMU. ctx bounds the VM's life: when it ends QEMU is
// killed. Wait for it with Wait, and Close it in any case.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if cfg.Name == "" || cfg.Dir == "" {
		return nil, errors.New("vm: Name and Dir are required")
	}
	if err := Available(cfg.Firmware); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("vm", cfg.Name)
	if cfg.Accel == "" {
		cfg.Accel = DetectAccel(ctx, cfg.Kernel, log)
	}
	v := &VM{Name: cfg.Name, Accel: cfg.Accel, MAC: cfg.MAC, log: log, done: make(chan struct{})}
	if v.MAC == nil {
		h := fnv.New32a()
		h.Write([]byte(cfg.Name))
		s := h.Sum32()
		v.MAC = net.HardwareAddr{0x52, 0x54, 0x00, byte(s >> 16), byte(s >> 8), byte(s)}
	}
	for _, d := range cfg.Disks {
		if err := prepareDisk(d); err != nil {
			return nil, err
		}
	}
	if cfg.Lab != nil {
		tap, err := cfg.Lab.AddTap(cfg.Name)
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", cfg.Name, err)
		}
		v.Tap = tap
	}
	args, err := v.args(cfg)
	if err != nil {
		return nil, err
	}
	v.LogPath = filepath.Join(cfg.Dir, cfg.Name+"-serial.log")
	logFile, err := os.Create(v.LogPath)
	if err != nil {
		return nil, fmt.Errorf("vm %s: serial log: %w", cfg.Name, err)
	}
	v.console = newConsoleBuf(logFile)

	runCtx, cancel := context.WithCancel(ctx)
	v.cancel = cancel
	if cfg.Lab != nil {
		v.cmd = cfg.Lab.SwitchCommand(runCtx, QEMU, args...)
	} else {
		v.cmd = exec.CommandContext(runCtx, QEMU, args...)
		v.cmd.Cancel = func() error { return v.cmd.Process.Signal(syscall.SIGKILL) }
		v.cmd.WaitDelay = 5 * time.Second
	}
	v.cmd.Stdout = v.console
	v.cmd.Stderr = v.console // QEMU's own warnings, interleaved: they explain failures
	if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		cancel()
		logFile.Close()
		return nil, fmt.Errorf("vm %s: %w", cfg.Name, err)
	}
	log.Info("vm: starting", "accel", cfg.Accel, "nic", cfg.nic(), "tap", v.Tap, "mac", v.MAC.String(), "firmware", cfg.firmware(), "serial", v.LogPath)
	log.Debug("vm: command", "args", strings.Join(args, " "))
	if err := v.cmd.Start(); err != nil {
		cancel()
		logFile.Close()
		return nil, fmt.Errorf("vm %s: start %s: %w", cfg.Name, QEMU, err)
	}
	go func() {
		v.waitErr = v.cmd.Wait()
		v.console.close()
		logFile.Close()
		log.Info("vm: exited", "err", v.waitErr)
		close(v.done)
	}()
	return v, nil
}

func (c *Config) nic() string {
	if c.NIC == "" {
		return "virtio-net-pci"
	}
	return c.NIC
}

func (c *Config) firmware() Firmware {
	if c.Firmware == "" {
		return BIOS
	}
	return c.Firmware
}

// args builds QEMU's command line.
func (v *VM) args(cfg Config) ([]string, error) {
	mem, cpus := cfg.Memory, cfg.CPUs
	if mem == 0 {
		mem = 512
	}
	if cpus == 0 {
		cpus = 1
	}
	a := []string{
		"-name", cfg.Name, "-machine", "pc", "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
		"-serial", "stdio",
	}
	switch cfg.Accel {
	case KVM:
		a = append(a, "-accel", "kvm", "-cpu", "host")
	default:
		// -cpu max gives the guest RDRAND, so its random pool is ready at
		// once (see notes/boot.md on DHCP and entropy).
		a = append(a, "-accel", "tcg", "-cpu", "max")
	}
	if cfg.firmware() == UEFI {
		vars := filepath.Join(cfg.Dir, cfg.Name+"-OVMF_VARS.fd")
		if err := copyFile(OVMFVars, vars); err != nil {
			return nil, fmt.Errorf("vm %s: UEFI variables: %w", cfg.Name, err)
		}
		a = append(a, "-drive", "if=pflash,format=raw,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,file="+vars)
	}
	if cfg.Lab != nil {
		a = append(a, "-netdev", "tap,id=net0,ifname="+v.Tap+",script=no,downscript=no",
			"-device", cfg.nic()+",netdev=net0,mac="+v.MAC.String())
	}
	usb := false
	for i, d := range cfg.Disks {
		id := fmt.Sprintf("disk%d", i)
		drive := "file=" + d.Path + ",format=raw,if=none,id=" + id
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		boot := ""
		if d.Boot {
			boot = ",bootindex=0"
		}
		var dev string
		switch d.Interface {
		case "", Virtio:
			dev = "virtio-blk-pci,drive=" + id + boot
		case IDE:
			dev = fmt.Sprintf("ide-hd,drive=%s,bus=ide.%d%s", id, i%2, boot)
		case NVMe:
			dev = fmt.Sprintf("nvme,drive=%s,serial=%s-%d%s", id, cfg.Name, i, boot)
		case USB:
			if !usb {
				a = append(a, "-device", "qemu-xhci,id=xhci")
				usb = true
			}
			dev = "usb-storage,bus=xhci.0,removable=on,drive=" + id + boot
		default:
			return nil, fmt.Errorf("vm %s: unknown disk interface %q", cfg.Name, d.Interface)
		}
		a = append(a, "-drive", drive, "-device", dev)
	}
	if cfg.Kernel != "" {
		a = append(a, "-kernel", cfg.Kernel)
		if cfg.Initrd != "" {
			a = append(a, "-initrd", cfg.Initrd)
		}
		if cfg.Append != "" {
			a = append(a, "-append", cfg.Append)
		}
	} else if cfg.BootNet {
		a = append(a, "-boot", "n")
	}
	return append(a, cfg.Extra...), nil
}

func prepareDisk(d Disk) error {
	if d.Path == "" {
		return errors.New("vm: disk without a path")
	}
	if _, err := os.Stat(d.Path); err == nil || d.Size <= 0 {
		return err
	}
	f, err := os.OpenFile(d.Path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("vm: create disk: %w", err)
	}
	if err := f.Truncate(d.Size); err != nil {
		f.Close()
		return fmt.Errorf("vm: size disk %s: %w", d.Path, err)
	}
	return f.Close()
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// Console returns the serial output so far.
func (v *VM) Console() string { return v.console.String() }

// Type sends text to the serial console, as if typed.
func (v *VM) Type(s string) error {
	_, err := io.WriteString(v.stdin, s)
	return err
}

// WaitFor waits until the serial output matches re and returns the match
// and its submatches. It fails when ctx ends or QEMU exits first; the
// error then quotes the end of the console.
func (v *VM) WaitFor(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	for {
		text, changed, closed := v.console.snapshot()
		if m := re.FindStringSubmatch(text); m != nil {
			return m, nil
		}
		if closed {
			return nil, fmt.Errorf("vm %s exited before %q appeared on its console:\n%s", v.Name, re, tail(text, 3000))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("vm %s: waiting for %q: %w; console ends with:\n%s", v.Name, re, ctx.Err(), tail(text, 3000))
		case <-changed:
		}
	}
}

// Wait waits for QEMU to exit (a guest that powers off or reboots ends it)
// and returns its exit error. When ctx ends first, QEMU is killed and the
// error says so.
func (v *VM) Wait(ctx context.Context) error {
	select {
	case <-v.done:
		return v.waitErr
	case <-ctx.Done():
		v.cancel()
		<-v.done
		return fmt.Errorf("vm %s still running: %w; console ends with:\n%s", v.Name, ctx.Err(), tail(v.Console(), 3000))
	}
}

// Exited is closed when QEMU has exited.
func (v *VM) Exited() <-chan struct{} { return v.done }

// Close kills QEMU if it still runs and waits for it. It is idempotent.
func (v *VM) Close() error {
	v.closeOnce.Do(func() {
		v.cancel()
		<-v.done
	})
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// consoleBuf keeps the serial output in memory and in the log file, and
// wakes WaitFor callers on every write.
type consoleBuf struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	file    io.Writer
	changed chan struct{}
	closed  bool
}

func newConsoleBuf(file io.Writer) *consoleBuf {
	return &consoleBuf{file: file, changed: make(chan struct{})}
}

func (c *consoleBuf) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(b)
	c.file.Write(b)
	if !c.closed {
		close(c.changed)
		c.changed = make(chan struct{})
	}
	return len(b), nil
}

func (c *consoleBuf) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.changed)
	}
}

func (c *consoleBuf) snapshot() (text string, changed <-chan struct{}, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String(), c.changed, c.closed
}

func (c *consoleBuf) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}
