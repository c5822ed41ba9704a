package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
	"github.com/shoal-lab/shoal/server"
)

// httpClientIn returns an HTTP client whose connections are opened inside a
// lab host's namespace.
func httpClientIn(h *lab.Host) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := h.Do(func() error {
				var err error
				conn, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
		DisableKeepAlives: true,
	}}
}

// TestStatusAPIAndMetrics reads /api/status and /metrics during and after
// a three-client session and checks them against the session.
func TestStatusAPIAndMetrics(t *testing.T) {
	hosts := newLab(t, "srv", "c1", "c2", "c3", "admin")
	img, sum := randomImage(t, 24*mib, 19)
	dir := t.TempDir()
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "api", "--image", img, "--min-clients", "3",
		"--max-rate", "40M", "--http", ":8088", "--restart")
	base := "http://" + hosts["srv"].Addr.String() + ":8088"
	hc := httpClientIn(hosts["admin"])
	get := func(path string) string {
		t.Helper()
		var lastErr error
		for range 50 {
			resp, err := hc.Get(base + path)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return string(b)
				}
				lastErr = fmt.Errorf("%s: %s", resp.Status, b)
			} else {
				lastErr = err
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("GET %s: %v", path, lastErr)
		return ""
	}
	status := func() server.StatusJSON {
		t.Helper()
		var st server.StatusJSON
		if err := json.Unmarshal([]byte(get("/api/status")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	metric := func(body, name string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("metric %s missing from:\n%s", name, body)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}

	if st := status(); st.State != server.StateWaiting || st.Session != "api" || st.Round != 1 || len(st.Clients) != 0 {
		t.Fatalf("status before any client: %+v", st)
	}
	for _, n := range []string{"c1", "c2", "c3"} {
		start(t, hosts[n], n, "shoal-client", "--session", "api", "--disk", filepath.Join(dir, n+".img"))
	}
	// During the session: three receiving clients, and metrics that agree.
	var during server.StatusJSON
	deadline := time.Now().Add(30 * time.Second)
	for {
		during = status()
		moving := 0
		for _, c := range during.Clients {
			if c.State == "receiving" && c.BytesWritten > 0 && c.BytesWritten < 24*mib {
				moving++
			}
		}
		if during.State == server.StateSending && moving == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw three clients receiving: %+v", during)
		}
		time.Sleep(100 * time.Millisecond)
	}
	m := get("/metrics")
	if v := metric(m, `shoal_clients{state="receiving"}`); v != 3 {
		t.Errorf(`shoal_clients{state="receiving"} = %v during the session, want 3`, v)
	}
	if v := metric(m, "shoal_payload_bytes_sent_total"); v < float64(during.PayloadSent) || v > 24*mib*1.5 {
		t.Errorf("shoal_payload_bytes_sent_total = %v during the session; status said %d", v, during.PayloadSent)
	}
	if v := metric(m, "shoal_session_duration_seconds"); v <= 0 {
		t.Errorf("shoal_session_duration_seconds = %v during the session", v)
	}

	// After: round 2 waits, round 1's results and totals are kept.
	srv.waitLine(t, `round 2: `, 60*time.Second)
	after := status()
	if after.Round != 2 || after.State != server.StateWaiting || after.LastRound == nil {
		t.Fatalf("status after the first round: %+v", after)
	}
	last := after.LastRound
	if last.State != server.StateFinished || len(last.Clients) != 3 {
		t.Fatalf("last round: %+v", last)
	}
	for _, c := range last.Clients {
		if c.Result != "ok" || c.SHA256 != fmt.Sprintf("%x", sum) || c.Progress != 1 {
			t.Errorf("last round client %+v", c)
		}
	}
	m = get("/metrics")
	sent := regexp.MustCompile(`sent ([\d.]+) MiB of chunk data in (\d+) packets \((\d+) repairs`).FindStringSubmatch(
		srv.waitLine(t, `sent [\d.]+ MiB of chunk data`, time.Second).text)
	packets, _ := strconv.Atoi(sent[2])
	repairs, _ := strconv.Atoi(sent[3])
	checks := []struct {
		name string
		want float64
	}{
		{`shoal_client_results_total{result="ok"}`, 3},
		{`shoal_client_results_total{result="failed"}`, 0},
		{"shoal_sessions_finished_total", 1},
		{"shoal_payload_bytes_sent_total", float64(last.PayloadSent)},
		{`shoal_packets_sent_total{kind="data"}`, float64(packets - repairs)},
		{`shoal_packets_sent_total{kind="repair"}`, float64(repairs)},
		{`shoal_clients{state="done"}`, 0}, // the new round has no clients yet
	}
	for _, c := range checks {
		if v := metric(m, c.name); v != c.want {
			t.Errorf("%s = %v after the session, want %v", c.name, v, c.want)
		}
	}
	if last.PayloadSent < 24*mib {
		t.Errorf("status says %d payload bytes sent for a 24 MiB image", last.PayloadSent)
	}
	// POST /api/start with no client: accepted, and the server says it
	// needs a client first.
	resp, err := hc.Post(base+"/api/start", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("POST /api/start: %s", resp.Status)
	}
	srv.waitLine(t, `send now ignored: no client has joined yet`, 5*time.Second)
}
