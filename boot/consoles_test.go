package boot

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestConsoleDevices(t *testing.T) {
	tests := []struct {
		cmdline string
		want    []string
	}{
		{"quiet", []string{"/dev/console"}},
		{"console=ttyS0,115200n8 console=tty0 shoal.session=a", []string{"/dev/ttyS0", "/dev/tty0"}},
		{"console=ttyS0 console=ttyS0,9600", []string{"/dev/ttyS0"}},
		{"console=netcon0 console=null console=tty1", []string{"/dev/tty1"}},
		{"console=tty../../etc/passwd console=ttyAMA0", []string{"/dev/ttyAMA0"}},
		{`"console=ttyS1,115200" console=`, []string{"/dev/ttyS1"}},
	}
	for _, tt := range tests {
		if got := ConsoleDevices(tt.cmdline); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ConsoleDevices(%q) = %q, want %q", tt.cmdline, got, tt.want)
		}
	}
}

// TestConsolesWriteToAll: every console gets every line, a console that
// cannot be opened is skipped, and none at all is an error.
func TestConsolesWriteToAll(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"ttyS0", "tty0"} {
		if err := os.WriteFile(filepath.Join(root, "dev", n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := OpenConsoles(root, []string{"/dev/ttyS0", "/dev/ttyS9", "/dev/tty0"})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"shoal: one\n", "shoal: poweroff now\n"} {
		if n, err := c.Write([]byte(line)); err != nil || n != len(line) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	c.Drain() // regular files: nothing to wait for, and no failure
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"ttyS0", "tty0"} {
		b, err := os.ReadFile(filepath.Join(root, "dev", n))
		if err != nil || string(b) != "shoal: one\nshoal: poweroff now\n" {
			t.Errorf("%s holds %q (%v)", n, b, err)
		}
	}
	if _, err := OpenConsoles(root, []string{"/dev/ttyS9"}); err == nil {
		t.Error("OpenConsoles with no console that opens: no error")
	}
}
