package sessions

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLiveView runs shoal serve in a terminal (tmux) during a three-client
// session and reads the screen: all three clients with their states, and
// the final result.
func TestLiveView(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("SHOAL_REQUIRE_LAB") == "1" {
			t.Fatal("tmux is required (scripts/deps.sh installs it)")
		}
		t.Skip("tmux not installed")
	}
	hosts := newLab(t, "srv", "c1", "c2", "c3")
	img, sum := randomImage(t, 48*mib, 16)
	dir := t.TempDir()
	name := fmt.Sprintf("shoal-tui-%d", os.Getpid())
	cmd := fmt.Sprintf("ip netns exec %s %s serve --session tui --image %s --min-clients 3 --max-rate 60M; sleep 600",
		hosts["srv"].NS, filepath.Join(binDir, "shoal"), img)
	if out, err := exec.Command("tmux", "new-session", "-d", "-s", name, "-x", "200", "-y", "50", cmd).CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", name).Run() })
	screen := func() string {
		out, _ := exec.Command("tmux", "capture-pane", "-p", "-t", name).Output()
		return string(out)
	}
	waitScreen := func(what string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if s := screen(); ok(s) {
				return s
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("the screen never showed %s; last screen:\n%s", what, screen())
		return ""
	}
	waitScreen("the waiting state", func(s string) bool { return strings.Contains(s, "state WAITING") })
	var clients []*proc
	for _, n := range []string{"c1", "c2", "c3"} {
		clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", "tui", "--disk", filepath.Join(dir, n+".img")))
	}
	row := func(s, host, state string) bool {
		return regexp.MustCompile(regexp.QuoteMeta(hosts[host].Addr.String()) + `\s+\S*\s+` + state).MatchString(s)
	}
	during := waitScreen("three receiving clients with progress bars", func(s string) bool {
		return strings.Contains(s, "state SENDING") && row(s, "c1", "receiving") && row(s, "c2", "receiving") && row(s, "c3", "receiving") &&
			strings.Contains(s, "[#")
	})
	t.Logf("screen during the session:\n%s", during)
	end := waitScreen("the final result", func(s string) bool { return strings.Contains(s, "RESULT: all clients verified") })
	for _, n := range []string{"c1", "c2", "c3"} {
		if !regexp.MustCompile(regexp.QuoteMeta(hosts[n].Addr.String()) + `\s+ok\s+\d+\s+` + fmt.Sprintf("%x", sum)).MatchString(end) {
			t.Errorf("final screen has no ok row for %s:\n%s", n, end)
		}
	}
	for _, c := range clients {
		if code := c.wait(t, 10*time.Second); code != 0 {
			t.Errorf("%s exit status %d", c.name, code)
		}
	}
}

// TestRestartAndClientLog serves two sessions in a row (--restart) to two
// waves of clients; the client log has both waves.
func TestRestartAndClientLog(t *testing.T) {
	hosts := newLab(t, "srv", "a1", "a2", "b1", "b2")
	img, sum := randomImage(t, 8*mib, 17)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "clients.jsonl")
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "wave", "--image", img, "--min-clients", "2",
		"--restart", "--log-clients", logPath)
	for wave, names := range [][]string{{"a1", "a2"}, {"b1", "b2"}} {
		var ps []*proc
		for _, n := range names {
			ps = append(ps, start(t, hosts[n], n, "shoal-client", "--session", "wave", "--disk", filepath.Join(dir, n+".img")))
		}
		for _, p := range ps {
			if code := p.wait(t, time.Minute); code != 0 {
				t.Fatalf("wave %d: %s exit status %d", wave+1, p.name, code)
			}
			if got := hashPrefix(t, filepath.Join(dir, p.name+".img"), 8*mib); got != sum {
				t.Errorf("%s: SHA-256 %x, want %x", p.name, got, sum)
			}
		}
		srv.waitLine(t, fmt.Sprintf(`round %d: `, wave+1), 10*time.Second)
	}
	srv.waitLine(t, `round 3: `, 10*time.Second) // waiting for a third wave
	if err := srv.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := srv.wait(t, 20*time.Second); code != 0 {
		t.Errorf("server stopped while waiting after two good rounds: exit status %d, want 0", code)
	}
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rounds := map[int][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Round  int    `json:"round"`
			IP     string `json:"ip"`
			Result string `json:"result"`
			SHA256 string `json:"sha256"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("client log line %q: %v", sc.Text(), err)
		}
		if rec.Result != "ok" || rec.SHA256 != fmt.Sprintf("%x", sum) {
			t.Errorf("client log: %s", sc.Text())
		}
		rounds[rec.Round] = append(rounds[rec.Round], rec.IP)
	}
	for round, names := range map[int][]string{1: {"a1", "a2"}, 2: {"b1", "b2"}} {
		for _, n := range names {
			if !strings.Contains(strings.Join(rounds[round], " "), hosts[n].Addr.String()) {
				t.Errorf("client log round %d lacks %s (%s): %v", round, n, hosts[n].Addr, rounds)
			}
		}
	}
}
