package sessions

import (
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
)

// TestStartCriteria checks Ghost's start criteria one by one: each starts a
// session on its own, and none starts it early.
func TestStartCriteria(t *testing.T) {
	var startAt time.Time
	var apiHost *lab.Host // where the HTTP request comes from
	var srvAddr string
	tests := []struct {
		name string
		// args are extra server flags; trigger does what starts the session
		// after the first client joined, and returns the earliest moment
		// the start may happen.
		args    func() []string
		clients int
		trigger func(t *testing.T, srv *proc, joined time.Time) time.Time
	}{
		{
			name: "POST /api/start", clients: 1,
			args: func() []string { return []string{"--http", ":8089"} },
			trigger: func(t *testing.T, srv *proc, joined time.Time) time.Time {
				time.Sleep(time.Second)
				at := time.Now()
				resp, err := httpClientIn(apiHost).Post("http://"+srvAddr+":8089/api/start", "application/json", nil)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					t.Fatalf("POST /api/start: %s", resp.Status)
				}
				return at
			},
		},
		{
			name: "min clients", clients: 2,
			args:    func() []string { return []string{"--min-clients", "2"} },
			trigger: func(t *testing.T, srv *proc, joined time.Time) time.Time { return joined },
		},
		{
			name: "wait after join restarts at every join", clients: 2,
			args:    func() []string { return []string{"--wait-after-join", "3s"} },
			trigger: func(t *testing.T, srv *proc, joined time.Time) time.Time { return joined.Add(3 * time.Second) },
		},
		{
			name: "start at a clock time", clients: 1,
			args: func() []string {
				startAt = time.Now().Add(4 * time.Second).Truncate(time.Second)
				return []string{"--start-at", startAt.Format("15:04:05")}
			},
			trigger: func(t *testing.T, srv *proc, joined time.Time) time.Time { return startAt },
		},
		{
			name: "enter typed on the terminal", clients: 1,
			args: func() []string { return nil },
			trigger: func(t *testing.T, srv *proc, joined time.Time) time.Time {
				time.Sleep(time.Second)
				at := time.Now()
				if _, err := srv.stdin.Write([]byte("\n")); err != nil {
					t.Fatal(err)
				}
				return at
			},
		},
		{
			name: "SIGUSR1 from a script", clients: 1,
			args: func() []string { return nil },
			trigger: func(t *testing.T, srv *proc, joined time.Time) time.Time {
				time.Sleep(time.Second)
				at := time.Now()
				if err := srv.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
					t.Fatal(err)
				}
				return at
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts := newLab(t, "srv", "c1", "c2")
			apiHost, srvAddr = hosts["c2"], hosts["srv"].Addr.String()
			img, sum := randomImage(t, 4*mib, 8)
			dir := t.TempDir()
			args := append([]string{"serve", "--session", "go", "--image", img}, tt.args()...)
			srv := start(t, hosts["srv"], "server", "shoal", args...)
			srv.waitLine(t, `waiting for clients`, 30*time.Second)
			names := []string{"c1", "c2"}[:tt.clients]
			var lastJoin time.Time
			for i, n := range names {
				if i > 0 {
					// A second join resets --wait-after-join's timer.
					time.Sleep(2 * time.Second)
				}
				start(t, hosts[n], n, "shoal-client", "--session", "go", "--disk", filepath.Join(dir, n+".img"))
				lastJoin = srv.waitLine(t, `client \d+ joined: \S+ `+hosts[n].Addr.String(), 30*time.Second).at
			}
			earliest := tt.trigger(t, srv, lastJoin)
			started := srv.waitLine(t, `sending: `, 30*time.Second)
			if started.at.Before(earliest.Add(-100 * time.Millisecond)) {
				t.Errorf("started at %s, before the criterion allowed (%s)", started.at.Format("15:04:05.000"), earliest.Format("15:04:05.000"))
			}
			if code := srv.wait(t, time.Minute); code != 0 {
				t.Fatalf("server exit status %d", code)
			}
			for _, n := range names {
				if got := hashPrefix(t, filepath.Join(dir, n+".img"), 4*mib); got != sum {
					t.Errorf("%s: SHA-256 %x, want %x", n, got, sum)
				}
			}
			t.Logf("%s: %s", tt.name, started.text)
		})
	}
}
