package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRefusesBadPXEFlags: PXE flag mistakes are usage errors (exit
// status 2) that say what to do, found before any socket is opened.
func TestServeRefusesBadPXEFlags(t *testing.T) {
	img := testImage(t)
	missing := filepath.Join(t.TempDir(), "vmlinuz")
	base := []string{"serve", "--session", "x", "--image", img, "--interface", "lo"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"proxy without pxe", []string{"--proxy-dhcp"}, "--proxy-dhcp needs --pxe"},
		{"pxe flag without pxe", []string{"--pxe-disk", "/dev/sda"}, "--pxe-disk needs --pxe"},
		{"dhcp and proxy", []string{"--pxe", "--proxy-dhcp", "--dhcp", "10.0.0.100-10.0.0.200"}, "exclude each other"},
		{"any port", []string{"--pxe", "--http", ":0"}, "--pxe needs a fixed port"},
		{"missing kernel", []string{"--pxe", "--pxe-kernel", missing}, "make kernel"},
		{"bad after", []string{"--pxe", "--pxe-kernel", img, "--pxe-initrd", img, "--pxe-after", "halt"}, "want reboot, poweroff or shell"},
		{"bad efi", []string{"--pxe", "--pxe-kernel", img, "--pxe-initrd", img, "--pxe-efi", "grub.efi"}, "want ipxe.efi or snponly.efi"},
		{"unsafe args", []string{"--pxe", "--pxe-kernel", img, "--pxe-initrd", img, "--pxe-args", "a=${x}"}, "kernel parameter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := runShoal(append(append([]string{}, base...), tt.args...)...)
			if !errors.Is(err, errUsage) {
				t.Fatalf("err = %v, want a usage error (exit status 2)", err)
			}
			if msg := err.Error() + stderr; !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not say %q", msg, tt.want)
			}
		})
	}
}

func TestFixedPort(t *testing.T) {
	tests := []struct {
		addr string
		port int
	}{{":8080", 8080}, {"10.0.0.1:80", 80}, {":0", 0}, {"8080", 0}, {":http", 0}}
	for _, tt := range tests {
		p, err := fixedPort(tt.addr)
		if p != tt.port || (err == nil) != (tt.port != 0) {
			t.Errorf("fixedPort(%q) = %d, %v; want %d", tt.addr, p, err, tt.port)
		}
	}
}
