package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClientRefusesBadInput: mistakes on the command line are refused
// before any network or disk work, with exit status 2 and a clear message.
func TestClientRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	shortKey := filepath.Join(dir, "short.key")
	os.WriteFile(shortKey, []byte("short"), 0o600)
	tests := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"no session", []string{"--disk", "/tmp/x"}, "", "--session and --disk are required"},
		{"no disk", []string{"--session", "x"}, "", "--session and --disk are required"},
		{"bad server", []string{"--session", "x", "--disk", "/tmp/x", "--server", "nowhere"}, "", "want an IPv4 address"},
		{"bad zero", []string{"--session", "x", "--disk", "/tmp/x", "--zero", "maybe"}, "", "want write or skip"},
		{"bad verify", []string{"--session", "x", "--disk", "/tmp/x", "--verify", "sometimes"}, "", "want chunks, full or off"},
		{"short key", []string{"--session", "x", "--disk", "/tmp/x", "--key-file", shortKey}, "", "use at least 16"},
		{"missing key", []string{"--session", "x", "--disk", "/tmp/x", "--key-file", filepath.Join(dir, "none")}, "", "no such file"},
		{"bad fault env", []string{"--session", "x", "--disk", "/tmp/x"}, "SHOAL_FAULT_CORRUPT_CHUNK=abc", "want a chunk number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				k, v, _ := strings.Cut(tt.env, "=")
				t.Setenv(k, v)
			}
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errOut)
			if !errors.Is(err, errUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not say %q", msg, tt.want)
			}
		})
	}
}

// TestClientRefusesDirectory: a directory is not a disk.
func TestClientRefusesDirectory(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--session", "x", "--disk", t.TempDir()}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("err = %v, want a refusal of the directory", err)
	}
}
