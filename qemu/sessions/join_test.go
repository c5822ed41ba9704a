package sessions

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/protocol"
	"github.com/shoal-lab/shoal/server"
)

// TestJoinRefusals speaks the control protocol by hand to a server running
// in a lab namespace and checks what it refuses, and why.
func TestJoinRefusals(t *testing.T) {
	hosts := newLab(t, "srv", "c1")
	img, _ := randomImage(t, 8*mib, 9)
	src, err := imaging.Open(t.Context(), img, imaging.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	srv, err := server.New(server.Config{Session: "lab1", Source: src, ControlPort: 9777})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- hosts["srv"].Do(func() error {
			_, err := srv.Run(ctx)
			return err
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("server: %v", err)
		}
	}()

	tests := []struct {
		name     string
		join     protocol.Join
		wantCode uint8
		wantText []string
	}{
		{"wrong session", protocol.Join{Name: "lab2", BufferChunks: 8}, protocol.RefuseName, []string{`"lab1"`, `"lab2"`}},
		{"disk too small", protocol.Join{Name: "lab1", Disk: "/dev/sdz", DiskSize: 4 * mib, BufferChunks: 8}, protocol.RefuseDiskTooSmall,
			[]string{"/dev/sdz", "4.0 MiB (4194304 bytes)", "8.0 MiB (8388608 bytes)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conn net.Conn
			err := hosts["c1"].Do(func() error {
				var err error
				conn, err = net.DialTimeout("tcp4", hosts["srv"].Addr.String()+":9777", 5*time.Second)
				return err
			})
			// The server may still be opening its sockets.
			for i := 0; err != nil && i < 50; i++ {
				time.Sleep(100 * time.Millisecond)
				err = hosts["c1"].Do(func() error {
					var err error
					conn, err = net.DialTimeout("tcp4", hosts["srv"].Addr.String()+":9777", 5*time.Second)
					return err
				})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(conn)
			if _, m, err := protocol.ReadMessage(r, 1<<20, nil); err != nil {
				t.Fatal(err)
			} else if _, ok := m.(*protocol.Challenge); !ok {
				t.Fatalf("server opened with %s, want a challenge", m.Type())
			}
			if err := protocol.WriteMessage(conn, 0, nil, &tt.join); err != nil {
				t.Fatal(err)
			}
			_, m, err := protocol.ReadMessage(r, 1<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			ref, ok := m.(*protocol.Refuse)
			if !ok {
				t.Fatalf("got %s, want a refusal", m.Type())
			}
			if ref.Code != tt.wantCode {
				t.Errorf("refusal code %d, want %d (%s)", ref.Code, tt.wantCode, ref.Reason)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(ref.Reason, w) {
					t.Errorf("reason %q does not say %s", ref.Reason, w)
				}
			}
		})
	}
	if st := srv.Status(); len(st.Clients) != 0 {
		t.Errorf("refused joins were added as clients: %+v", st.Clients)
	}
}

// TestLateJoin refuses a client that arrives after sending began; it waits
// for the next round and says why.
func TestLateJoin(t *testing.T) {
	hosts := newLab(t, "srv", "c1", "c2")
	img, sum := randomImage(t, 32*mib, 10)
	dir := t.TempDir()
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "late", "--image", img, "--min-clients", "1", "--max-rate", "40M")
	start(t, hosts["c1"], "c1", "shoal-client", "--session", "late", "--disk", filepath.Join(dir, "c1.img"))
	srv.waitLine(t, `sending: `, 30*time.Second)
	late := start(t, hosts["c2"], "c2", "shoal-client", "--session", "late", "--disk", filepath.Join(dir, "c2.img"))
	late.waitLine(t, `already sending; waiting for its next round`, 15*time.Second)
	if code := srv.wait(t, time.Minute); code != 0 {
		t.Fatalf("server exit status %d", code)
	}
	if got := hashPrefix(t, filepath.Join(dir, "c1.img"), 32*mib); got != sum {
		t.Errorf("c1: SHA-256 %x, want %x", got, sum)
	}
	if !late.running() {
		t.Errorf("the late client gave up instead of waiting for the next round")
	}
	if strings.Contains(srv.output(), hosts["c2"].Addr.String()) {
		t.Errorf("the late client appears in the server's output:\n%s", srv.output())
	}
}
