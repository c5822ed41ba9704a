package sessions

import (
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestSlowLinkToOneClient caps one client's link at 40 Mbit/s while the
// server has no rate cap: the server must notice the heavy loss there and
// slow down, instead of drowning the link in repairs.
func TestSlowLinkToOneClient(t *testing.T) {
	hosts := newLab(t, "srv", "fast", "slow")
	if err := hosts["slow"].SetIngressRate(40e6); err != nil {
		t.Fatal(err)
	}
	const size = 24 * mib
	img, sum := randomImage(t, size, 20)
	dir := t.TempDir()
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "slow", "--image", img, "--min-clients", "2", "--log-level", "debug")
	var clients []*proc
	for _, n := range []string{"fast", "slow"} {
		clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", "slow", "--disk", filepath.Join(dir, n+".img")))
	}
	if code := srv.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("server exit status %d", code)
	}
	for _, c := range clients {
		if code := c.wait(t, 10*time.Second); code != 0 {
			t.Errorf("%s exit status %d", c.name, code)
		}
		if got := hashPrefix(t, filepath.Join(dir, c.name+".img"), size); got != sum {
			t.Errorf("%s: SHA-256 %x, want %x", c.name, got, sum)
		}
	}
	l := srv.waitLine(t, `sent [\d.]+ MiB of chunk data in \d+ packets \(\d+ repairs`, time.Second)
	m := regexp.MustCompile(`in (\d+) packets \((\d+) repairs`).FindStringSubmatch(l.text)
	packets, _ := strconv.Atoi(m[1])
	repairs, _ := strconv.Atoi(m[2])
	t.Logf("%s", l.text)
	// Without a rate control the slow link would lose most of every burst
	// and the server would resend the image several times over (measured:
	// 107111 repairs for 17592 data packets); with it, about once for a
	// small image, most of it while the first burst finds the limit.
	if data := packets - repairs; repairs > data*3/2 {
		t.Errorf("%d repairs for %d data packets: the server did not slow down for the slow link", repairs, data)
	}
}
