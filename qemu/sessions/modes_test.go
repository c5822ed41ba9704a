package sessions

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

// TestTransferModes sends to three clients by directed broadcast and by one
// unicast stream per client.
func TestTransferModes(t *testing.T) {
	for _, mode := range []string{"broadcast", "unicast"} {
		t.Run(mode, func(t *testing.T) {
			hosts := newLab(t, "srv", "c1", "c2", "c3")
			img, sum := randomImage(t, 24*mib, 14)
			dir := t.TempDir()
			srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "m", "--image", img, "--min-clients", "3", "--mode", mode)
			var clients []*proc
			for _, n := range []string{"c1", "c2", "c3"} {
				clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", "m", "--disk", filepath.Join(dir, n+".img")))
			}
			if code := srv.wait(t, 2*time.Minute); code != 0 {
				t.Fatalf("server exit status %d", code)
			}
			for _, c := range clients {
				if code := c.wait(t, 10*time.Second); code != 0 {
					t.Errorf("%s exit status %d", c.name, code)
				}
				if got := hashPrefix(t, filepath.Join(dir, c.name+".img"), 24*mib); got != sum {
					t.Errorf("%s: SHA-256 %x, want %x", c.name, got, sum)
				}
				checkOK(t, srv, hosts[c.name].Addr.String(), sum)
			}
			// Unicast puts one copy per client on the wire.
			l := srv.waitLine(t, `sent [\d.]+ MiB of chunk data`, time.Second)
			t.Logf("%s: %s", mode, l.text)
		})
	}
}

// TestMulticastFallback blocks the multicast group at every client, as an
// IGMP-snooping switch without a querier would: the server notices that
// nobody hears the group, falls back to broadcast, says why, and finishes.
func TestMulticastFallback(t *testing.T) {
	hosts := newLab(t, "srv", "c1", "c2", "c3")
	const group = "239.44.4.4"
	for _, n := range []string{"c1", "c2", "c3"} {
		if err := hosts[n].BlockUDPDest(netip.MustParsePrefix(group + "/32")); err != nil {
			t.Fatal(err)
		}
	}
	img, sum := randomImage(t, 16*mib, 15)
	dir := t.TempDir()
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "fb", "--image", img, "--min-clients", "3", "--group", group)
	var clients []*proc
	for _, n := range []string{"c1", "c2", "c3"} {
		clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", "fb", "--disk", filepath.Join(dir, n+".img")))
	}
	fb := srv.waitLine(t, `FALLBACK: .*IGMP-snooping switch.*falling back to broadcast`, 30*time.Second)
	t.Log(fb.text)
	if code := srv.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("server exit status %d", code)
	}
	for _, c := range clients {
		if code := c.wait(t, 10*time.Second); code != 0 {
			t.Errorf("%s exit status %d", c.name, code)
		}
		if got := hashPrefix(t, filepath.Join(dir, c.name+".img"), 16*mib); got != sum {
			t.Errorf("%s: SHA-256 %x, want %x", c.name, got, sum)
		}
	}
}
