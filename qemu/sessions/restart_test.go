package sessions

import (
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestServerRestartResume kills the server half-way; the clients must say
// so within 15 s, and when a server comes back with the same session and
// image they rejoin and fetch only what they still miss.
func TestServerRestartResume(t *testing.T) {
	hosts := newLab(t, "srv", "c1", "c2", "c3")
	const size = 32 * mib
	img, sum := randomImage(t, size, 13)
	dir := t.TempDir()
	serve := func(name string) *proc {
		return start(t, hosts["srv"], name, "shoal", "serve", "--session", "phoenix", "--image", img, "--min-clients", "3",
			"--max-rate", "40M", "--control-port", "9333")
	}
	first := serve("server-1")
	var clients []*proc
	for _, n := range []string{"c1", "c2", "c3"} {
		clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", "phoenix", "--disk", filepath.Join(dir, n+".img")))
	}
	first.waitLine(t, `sending: `, 30*time.Second)
	time.Sleep(3500 * time.Millisecond) // about half of the 6.7 s the image takes at 40 Mbit/s
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	first.wait(t, 10*time.Second)
	for _, c := range clients {
		l := c.waitLine(t, `server went away.*waiting for the server to come back`, 20*time.Second)
		if d := l.at.Sub(killed); d > 15*time.Second {
			t.Errorf("%s noticed the dead server after %s, want ≤ 15 s", c.name, d.Round(time.Millisecond))
		}
	}

	second := serve("server-2")
	if code := second.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("restarted server exit status %d", code)
	}
	have := regexp.MustCompile(`msg=resuming chunks_on_disk=(\d+) chunks=(\d+)`)
	minHave := 1 << 30
	for _, c := range clients {
		if code := c.wait(t, 30*time.Second); code != 0 {
			t.Errorf("%s exit status %d", c.name, code)
		}
		if got := hashPrefix(t, filepath.Join(dir, c.name+".img"), size); got != sum {
			t.Errorf("%s: SHA-256 %x, want %x", c.name, got, sum)
		}
		m := have.FindStringSubmatch(c.waitLine(t, `msg=resuming`, time.Second).text)
		n, _ := strconv.Atoi(m[1])
		minHave = min(minHave, n)
		checkOK(t, second, hosts[c.name].Addr.String(), sum)
	}
	if minHave == 0 {
		t.Fatalf("a client resumed with nothing on disk; the kill came too early to test resuming")
	}
	// The second server sends what the clients lacked (the chunks the
	// least advanced client missed), not the whole image.
	sent := regexp.MustCompile(`sent ([\d.]+) MiB of chunk data`).FindStringSubmatch(second.waitLine(t, `sent [\d.]+ MiB of chunk data`, time.Second).text)
	mibSent, _ := strconv.ParseFloat(sent[1], 64)
	missing := float64(32 - minHave)
	t.Logf("clients had at least %d of 32 chunks; the restarted server sent %.1f MiB", minHave, mibSent)
	if mibSent > missing+2 {
		t.Errorf("restarted server sent %.1f MiB, but the clients only missed %.0f MiB", mibSent, missing)
	}
}
