package sessions

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/protocol"
)

// TestKeyedSession runs an authenticated, encrypted session: clients with
// the key are imaged; a client without it and one with another key are
// turned away with a message that says why, and write nothing.
func TestKeyedSession(t *testing.T) {
	hosts := newLab(t, "srv", "good", "nokey", "wrongkey")
	dir := t.TempDir()
	key := filepath.Join(dir, "lab.key")
	other := filepath.Join(dir, "other.key")
	for _, k := range []string{key, other} {
		if err := os.WriteFile(k, []byte(protocol.GenerateKeyText()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	img, sum := randomImage(t, 16*mib, 11)
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "secure", "--image", img, "--min-clients", "1",
		"--key-file", key, "--encrypt")
	srv.waitLine(t, `waiting for clients`, 30*time.Second)

	noKey := start(t, hosts["nokey"], "nokey", "shoal-client", "--session", "secure", "--disk", filepath.Join(dir, "nokey.img"))
	wrongKey := start(t, hosts["wrongkey"], "wrongkey", "shoal-client", "--session", "secure", "--disk", filepath.Join(dir, "wrongkey.img"),
		"--key-file", other)
	noKey.waitLine(t, `serves session "secure" but refuses this client: the session needs a key`, 15*time.Second)
	wrongKey.waitLine(t, `refuses this client: the client's key is not the server's key`, 15*time.Second)

	good := start(t, hosts["good"], "good", "shoal-client", "--session", "secure", "--disk", filepath.Join(dir, "good.img"),
		"--key-file", key)
	if code := srv.wait(t, time.Minute); code != 0 {
		t.Fatalf("server exit status %d", code)
	}
	if code := good.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("keyed client exit status %d", code)
	}
	if got := hashPrefix(t, filepath.Join(dir, "good.img"), 16*mib); got != sum {
		t.Errorf("keyed client: SHA-256 %x, want %x", got, sum)
	}
	checkOK(t, srv, hosts["good"].Addr.String(), sum)
	for _, p := range []*proc{noKey, wrongKey} {
		if !p.running() {
			t.Errorf("%s gave up; it should keep asking (the operator may fix the key)", p.name)
		}
		if _, err := os.Stat(filepath.Join(dir, p.name+".img")); err == nil {
			if fi, _ := os.Stat(filepath.Join(dir, p.name+".img")); fi.Size() != 0 {
				t.Errorf("%s wrote %d bytes without the key", p.name, fi.Size())
			}
		}
	}
}
