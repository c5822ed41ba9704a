package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRefusesBadInput checks that every kind of operator mistake is
// refused before anything is served, with exit status 2 (errUsage) and a
// message that says what to do.
func TestServeRefusesBadInput(t *testing.T) {
	img := testImage(t)
	shortKey := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(shortKey, []byte("tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no session", []string{"serve", "--image", img}, "--session and --image are required"},
		{"no image", []string{"serve", "--session", "x"}, "--session and --image are required"},
		{"unknown flag", []string{"serve", "--session", "x", "--image", img, "--colour", "blue"}, "flag provided but not defined"},
		{"bad rate", []string{"serve", "--session", "x", "--image", img, "--max-rate", "fast"}, "want bits per second"},
		{"unicast group", []string{"serve", "--session", "x", "--image", img, "--group", "10.0.0.1"}, "want IPv4 multicast addresses"},
		{"backwards group range", []string{"serve", "--session", "x", "--image", img, "--group", "239.1.1.9-239.1.1.1"}, "ends before it starts"},
		{"bad start time", []string{"serve", "--session", "x", "--image", img, "--start-at", "25:99"}, "want HH:MM"},
		{"bad mode", []string{"serve", "--session", "x", "--image", img, "--mode", "carrier-pigeon"}, "want multicast, broadcast or unicast"},
		{"bad slow policy", []string{"serve", "--session", "x", "--image", img, "--slow", "maybe"}, `want "wait" or "drop"`},
		{"tiny MTU", []string{"serve", "--session", "x", "--image", img, "--mtu", "100"}, "MTU 100 outside"},
		{"encrypt without key", []string{"serve", "--session", "x", "--image", img, "--encrypt"}, "--encrypt needs --key-file"},
		{"short key", []string{"serve", "--session", "x", "--image", img, "--key-file", shortKey}, "use at least 16"},
		{"missing key file", []string{"serve", "--session", "x", "--image", img, "--key-file", "/nonexistent/k"}, "no such file"},
		{"once and restart", []string{"serve", "--session", "x", "--image", img, "--once", "--restart"}, "exclude each other"},
		{"bad log format", []string{"serve", "--session", "x", "--image", img, "--log-format", "xml"}, "want text or json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := runShoal(tt.args...)
			if !errors.Is(err, errUsage) {
				t.Fatalf("err = %v, want a usage error (exit status 2)", err)
			}
			if msg := err.Error() + stderr; !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not say %q", msg, tt.want)
			}
		})
	}
}

// TestServeRefusesMissingImage: a wrong image path is an error (not a
// usage error) that names the path.
func TestServeRefusesMissingImage(t *testing.T) {
	_, _, err := runShoal("serve", "--session", "x", "--image", "/nonexistent/win11.img")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/win11.img") {
		t.Fatalf("err = %v, want one naming the missing image", err)
	}
}
