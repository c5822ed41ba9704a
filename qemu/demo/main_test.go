package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args []string
		ok   bool
		vms  int
	}{
		{nil, true, 3},
		{[]string{"-vms", "5", "-size", "128"}, true, 5},
		{[]string{"-vms", "0"}, false, 0},
		{[]string{"-size", "32"}, false, 0},
		{[]string{"-colour"}, false, 0},
	}
	for _, tt := range tests {
		c, err := parseFlags(tt.args)
		if (err == nil) != tt.ok || (tt.ok && c.vms != tt.vms) {
			t.Errorf("parseFlags(%q) = %+v, %v", tt.args, c, err)
		}
	}
}

// TestLastVerified reads shoal serve's --log-clients lines.
func TestLastVerified(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.jsonl")
	os.WriteFile(path, []byte(`{"time":"2026-01-02T10:00:05Z","mac":"52:54:00:00:00:01","result":"ok"}
{"time":"2026-01-02T10:00:09Z","mac":"52:54:00:00:00:02","result":"dropped"}
not json
{"time":"2026-01-02T10:00:07Z","mac":"52:54:00:00:00:03","result":"ok"}
`), 0o644)
	last, n := lastVerified(path)
	if want := time.Date(2026, 1, 2, 10, 0, 7, 0, time.UTC); n != 2 || !last.Equal(want) {
		t.Errorf("lastVerified = %v, %d; want %v, 2", last, n, want)
	}
	if _, n := lastVerified(filepath.Join(t.TempDir(), "none")); n != 0 {
		t.Errorf("a missing log gave %d", n)
	}
}
