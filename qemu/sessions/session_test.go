package sessions

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

const mib = 1 << 20

// TestThreeClients images a regular file and two loop devices (one larger
// than the image) from one server.
func TestThreeClients(t *testing.T) {
	hosts := newLab(t, "srv", "c1", "c2", "c3")
	img, sum := randomImage(t, 64*mib, 1)
	file := filepath.Join(t.TempDir(), "c1-disk.img")
	loopExact := loopDevice(t, 64*mib, 0)
	loopBig := loopDevice(t, 80*mib, 0xaa)

	// Flags an operator would set: interface, data port, control port,
	// TTL; one client asks the server directly instead of broadcasting.
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "lab1", "--image", img, "--min-clients", "3",
		"--interface", "eth0", "--port", "9999", "--control-port", "9998", "--ttl", "2")
	srv.waitLine(t, `waiting for clients`, 30*time.Second)
	clients := []*proc{
		start(t, hosts["c1"], "c1", "shoal-client", "--session", "lab1", "--disk", file, "--interface", "eth0"),
		start(t, hosts["c2"], "c2", "shoal-client", "--session", "lab1", "--disk", loopExact, "--server", hosts["srv"].Addr.String()),
		start(t, hosts["c3"], "c3", "shoal-client", "--session", "lab1", "--disk", loopBig),
	}
	if code := srv.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("server exit status %d, want 0", code)
	}
	for _, c := range clients {
		if code := c.wait(t, 30*time.Second); code != 0 {
			t.Errorf("%s exit status %d, want 0", c.name, code)
		}
	}
	for target, name := range map[string]string{file: "c1", loopExact: "c2", loopBig: "c3"} {
		if got := hashPrefix(t, target, 64*mib); got != sum {
			t.Errorf("%s (%s): SHA-256 %x, want %x", name, target, got, sum)
		}
		checkOK(t, srv, hosts[name].Addr.String(), sum)
	}
	srv.waitLine(t, `RESULT: all clients verified`, time.Second)
}

// TestLossyClient loses 5 % of the UDP packets at one client; every disk
// must still be bit-identical, through repairs.
func TestLossyClient(t *testing.T) {
	hosts := newLab(t, "srv", "c1", "c2", "c3")
	if err := hosts["c2"].SetLoss(5); err != nil {
		t.Fatal(err)
	}
	img, sum := randomImage(t, 64*mib, 2)
	dir := t.TempDir()
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "lossy", "--image", img, "--min-clients", "3")
	var clients []*proc
	for _, n := range []string{"c1", "c2", "c3"} {
		clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", "lossy", "--disk", filepath.Join(dir, n+".img")))
	}
	if code := srv.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("server exit status %d, want 0", code)
	}
	for _, c := range clients {
		if code := c.wait(t, 30*time.Second); code != 0 {
			t.Errorf("%s exit status %d", c.name, code)
		}
		if got := hashPrefix(t, filepath.Join(dir, c.name+".img"), 64*mib); got != sum {
			t.Errorf("%s: SHA-256 %x, want %x", c.name, got, sum)
		}
		checkOK(t, srv, hosts[c.name].Addr.String(), sum)
	}
	// The loss must have been real and repaired.
	l := srv.waitLine(t, `\((\d+) repairs`, time.Second)
	repairs, _ := strconv.Atoi(regexp.MustCompile(`\((\d+) repairs`).FindStringSubmatch(l.text)[1])
	if repairs == 0 {
		t.Errorf("no repairs sent although c2 lost 5 %% of its packets: %s", l.text)
	}
	lost := clients[1].waitLine(t, `RESULT: OK`, time.Second)
	t.Logf("lossy client: %s; server: %s", lost.text, l.text)
}

// TestDeadClient stops one client half-way, by killing its process or by
// cutting its link; the server must report it within 10 s of its last
// packet while the other two finish, and exit non-zero.
func TestDeadClient(t *testing.T) {
	for _, how := range []string{"process killed", "link cut"} {
		t.Run(how, func(t *testing.T) {
			hosts := newLab(t, "srv", "c1", "c2", "c3")
			img, sum := randomImage(t, 64*mib, 3)
			dir := t.TempDir()
			// A capped rate makes the session last long enough to stop a
			// client in the middle.
			srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "dead", "--image", img,
				"--min-clients", "3", "--max-rate", "60M")
			var clients []*proc
			for _, n := range []string{"c1", "c2", "c3"} {
				clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", "dead", "--disk", filepath.Join(dir, n+".img")))
			}
			srv.waitLine(t, `sending:`, 30*time.Second)
			clients[1].waitLine(t, `receiving +[1-9]`, 30*time.Second)
			stopped := time.Now()
			switch how {
			case "process killed":
				if err := clients[1].cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			case "link cut":
				if out, err := hosts["c2"].Run(t.Context(), "ip", "link", "set", "eth0", "down"); err != nil {
					t.Fatalf("cut link: %v: %s", err, out)
				}
			}
			addr := regexp.QuoteMeta(hosts["c2"].Addr.String())
			failed := srv.waitLine(t, `client \d+ (FAILED|DROPPED): \S+ `+addr, 30*time.Second)
			if d := failed.at.Sub(stopped); d > 10*time.Second {
				t.Errorf("server reported the dead client %s after it stopped, want ≤ 10 s: %s", d.Round(time.Millisecond), failed.text)
			} else {
				t.Logf("dead client reported %s after it stopped: %s", d.Round(time.Millisecond), failed.text)
			}
			if code := srv.wait(t, 3*time.Minute); code == 0 {
				t.Errorf("server exit status 0 although a client failed")
			}
			for _, i := range []int{0, 2} {
				c := clients[i]
				if code := c.wait(t, 30*time.Second); code != 0 {
					t.Errorf("%s exit status %d", c.name, code)
				}
				if got := hashPrefix(t, filepath.Join(dir, c.name+".img"), 64*mib); got != sum {
					t.Errorf("%s: SHA-256 %x, want %x", c.name, got, sum)
				}
				checkOK(t, srv, hosts[c.name].Addr.String(), sum)
			}
			row := tableRow(t, srv, hosts["c2"].Addr.String())
			if row[2] == "ok" {
				t.Errorf("summary row for the dead client says ok: %q", row)
			}
			srv.waitLine(t, `RESULT: 1 client\(s\) FAILED`, time.Second)
			// The dead client's disk is marked not imaged: its first MiB (boot
			// sector, partition table) is blank, although the image's is not.
			if head := hashPrefix(t, filepath.Join(dir, "c2.img"), mib); head != sha256.Sum256(make([]byte, mib)) {
				t.Errorf("the dead client's disk has a non-blank first MiB: a half-written disk could boot")
			}
		})
	}
}

// TestTwoSessions serves two sessions at once on one bridge, on the same
// group and port: session IDs keep them apart.
func TestTwoSessions(t *testing.T) {
	hosts := newLab(t, "s1", "s2", "a1", "a2", "b1")
	imgA, sumA := randomImage(t, 24*mib, 4)
	imgB, sumB := randomImage(t, 24*mib, 5)
	dir := t.TempDir()
	srvA := start(t, hosts["s1"], "server-alpha", "shoal", "serve", "--session", "alpha", "--image", imgA, "--min-clients", "2", "--group", "239.9.9.9")
	srvB := start(t, hosts["s2"], "server-beta", "shoal", "serve", "--session", "beta", "--image", imgB, "--min-clients", "1", "--group", "239.9.9.9",
		"--mtu", "1400")
	srvA.waitLine(t, `waiting for clients`, 30*time.Second)
	srvB.waitLine(t, `waiting for clients`, 30*time.Second)
	want := map[string][32]byte{"a1": sumA, "a2": sumA, "b1": sumB}
	session := map[string]string{"a1": "alpha", "a2": "alpha", "b1": "beta"}
	var clients []*proc
	for _, n := range []string{"b1", "a1", "a2"} {
		clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", session[n], "--disk", filepath.Join(dir, n+".img")))
	}
	for _, s := range []*proc{srvA, srvB} {
		if code := s.wait(t, 2*time.Minute); code != 0 {
			t.Errorf("%s exit status %d", s.name, code)
		}
	}
	for _, c := range clients {
		if code := c.wait(t, 30*time.Second); code != 0 {
			t.Errorf("%s exit status %d", c.name, code)
		}
		if got := hashPrefix(t, filepath.Join(dir, c.name+".img"), 24*mib); got != want[c.name] {
			t.Errorf("%s got SHA-256 %x, want %x (session %s)", c.name, got, want[c.name], session[c.name])
		}
	}
	checkOK(t, srvA, hosts["a1"].Addr.String(), sumA)
	checkOK(t, srvA, hosts["a2"].Addr.String(), sumA)
	checkOK(t, srvB, hosts["b1"].Addr.String(), sumB)
}

// TestUnknownSession asks for a session nobody serves: the client keeps
// trying and says so plainly, naming the sessions it does hear.
func TestUnknownSession(t *testing.T) {
	hosts := newLab(t, "srv", "c1")
	img, _ := randomImage(t, 4*mib, 6)
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "lab1", "--image", img)
	srv.waitLine(t, `waiting for clients`, 30*time.Second)
	c := start(t, hosts["c1"], "client", "shoal-client", "--session", "lab9", "--disk", filepath.Join(t.TempDir(), "d.img"))
	l := c.waitLine(t, `no server answers session "lab9"`, 15*time.Second)
	want := fmt.Sprintf(`"lab1" at %s`, hosts["srv"].Addr)
	if !regexp.MustCompile(regexp.QuoteMeta(want)).MatchString(l.text) {
		t.Errorf("message does not name the session heard (%s): %s", want, l.text)
	}
	// Still trying, and says so again.
	c.waitLine(t, `no server answers session "lab9" yet \(.*, [1-9]\d*s so far\)`, 15*time.Second)
	if !c.running() {
		t.Fatalf("client gave up; it should keep trying")
	}
}

// TestDiskTooSmall refuses a disk smaller than the image before writing a
// byte, naming both sizes.
func TestDiskTooSmall(t *testing.T) {
	hosts := newLab(t, "srv", "c1")
	img, _ := randomImage(t, 64*mib, 7)
	dev := loopDevice(t, 32*mib, 0x5a)
	before := hashPrefix(t, dev, 32*mib)
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "small", "--image", img)
	srv.waitLine(t, `waiting for clients`, 30*time.Second)
	c := start(t, hosts["c1"], "client", "shoal-client", "--session", "small", "--disk", dev)
	if code := c.wait(t, 30*time.Second); code == 0 {
		t.Fatalf("client exit status 0 for a disk too small")
	}
	msg := c.waitLine(t, `RESULT: FAILED`, time.Second).text
	for _, want := range []string{dev, "32.0 MiB (33554432 bytes)", "64.0 MiB (67108864 bytes)"} {
		if !regexp.MustCompile(regexp.QuoteMeta(want)).MatchString(msg) {
			t.Errorf("refusal %q does not say %q", msg, want)
		}
	}
	if after := hashPrefix(t, dev, 32*mib); after != before {
		t.Errorf("the refused disk was changed")
	}
}
