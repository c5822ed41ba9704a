package sessions

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/shoal-lab/shoal/protocol"
)

// TestForgedAndReplayedPackets attacks a keyed session from a fourth
// namespace: it captures the data stream and sends it back into the group,
// both replayed verbatim and forged (payload changed, checksum fixed), as
// fast as it can. Every client must finish bit-identical, count the
// attacker's packets as dropped, and the attack must not make the server
// repair more.
func TestForgedAndReplayedPackets(t *testing.T) {
	hosts := newLab(t, "srv", "c1", "c2", "c3", "evil")
	dir := t.TempDir()
	key := filepath.Join(dir, "lab.key")
	if err := os.WriteFile(key, []byte(protocol.GenerateKeyText()), 0o600); err != nil {
		t.Fatal(err)
	}
	img, sum := randomImage(t, 48*mib, 12)
	const group, port = "239.77.7.7", 9941

	// The attacker joins the group before the session starts.
	var conn *net.UDPConn
	if err := hosts["evil"].Do(func() error {
		var err error
		conn, err = net.ListenMulticastUDP("udp4", mustIface(t, "eth0"), &net.UDPAddr{IP: net.ParseIP(group), Port: port})
		if err != nil {
			return err
		}
		return ipv4.NewPacketConn(conn).SetMulticastInterface(mustIface(t, "eth0"))
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "target", "--image", img, "--min-clients", "3",
		"--key-file", key, "--group", group, "--port", strconv.Itoa(port), "--max-rate", "150M")
	var clients []*proc
	for _, n := range []string{"c1", "c2", "c3"} {
		clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", "target", "--disk", filepath.Join(dir, n+".img"), "--key-file", key))
	}

	var sent, forged atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		attack(conn, &net.UDPAddr{IP: net.ParseIP(group), Port: port}, stop, &sent, &forged)
	}()
	code := srv.wait(t, 3*time.Minute)
	close(stop)
	wg.Wait()
	t.Logf("attacker sent %d packets (%d forged, the rest replayed)", sent.Load(), forged.Load())
	if code != 0 {
		t.Fatalf("server exit status %d under attack", code)
	}
	if sent.Load() < 1000 || forged.Load() == 0 {
		t.Fatalf("the attack did not happen: %d packets", sent.Load())
	}
	dropped := regexp.MustCompile(`dropped packets: (\d+) forged, (\d+) replayed`)
	for _, c := range clients {
		if code := c.wait(t, 10*time.Second); code != 0 {
			t.Errorf("%s exit status %d", c.name, code)
		}
		if got := hashPrefix(t, filepath.Join(dir, c.name+".img"), 48*mib); got != sum {
			t.Errorf("%s: SHA-256 %x, want %x", c.name, got, sum)
		}
		m := dropped.FindStringSubmatch(c.waitLine(t, `dropped packets:`, time.Second).text)
		f, _ := strconv.Atoi(m[1])
		r, _ := strconv.Atoi(m[2])
		if f == 0 || r == 0 {
			t.Errorf("%s counted %d forged and %d replayed packets; the attacker sent both", c.name, f, r)
		}
		t.Logf("%s dropped %d forged and %d replayed packets", c.name, f, r)
	}
	// Repairs answer real loss only; the attacker's packets cause none by
	// themselves. Under the extra load some real loss is possible, so allow
	// a little, far below what the attack volume would cause if it counted.
	l := srv.waitLine(t, `\((\d+) repairs`, time.Second)
	repairs, _ := strconv.Atoi(regexp.MustCompile(`\((\d+) repairs`).FindStringSubmatch(l.text)[1])
	if dataPackets := int(48 * mib / 1400); repairs > dataPackets/20 {
		t.Errorf("%d repairs for %d data packets under attack: the attack inflated repairs (%s)", repairs, dataPackets, l.text)
	}
	t.Logf("server: %s", l.text)
}

func mustIface(t *testing.T, name string) *net.Interface {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return ifi
}

// attack captures packets from the group and sends them back as fast as it
// can: every other one verbatim (a replay), the rest with a flipped payload
// byte and a fixed CRC (a forgery).
func attack(conn *net.UDPConn, dst *net.UDPAddr, stop <-chan struct{}, sent, forged *atomic.Int64) {
	var captured [][]byte
	buf := make([]byte, 9000)
	r := rand.New(rand.NewPCG(1, 2))
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		if n, _, err := conn.ReadFromUDP(buf); err == nil && len(captured) < 4096 && n > protocol.HeaderSize {
			captured = append(captured, append([]byte(nil), buf[:n]...))
		}
		if len(captured) == 0 {
			continue
		}
		for k := 0; k < 64; k++ {
			pkt := append([]byte(nil), captured[r.IntN(len(captured))]...)
			if k%2 == 1 {
				pkt[protocol.HeaderSize+10+r.IntN(len(pkt)-protocol.HeaderSize-14)] ^= 0x55
				end := len(pkt) - protocol.TrailerSize
				binary.BigEndian.PutUint32(pkt[end:], crc32.Checksum(pkt[:end], castagnoli))
				forged.Add(1)
			}
			if _, err := conn.WriteToUDP(pkt, dst); err == nil {
				sent.Add(1)
			}
		}
	}
}
