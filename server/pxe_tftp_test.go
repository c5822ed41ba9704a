package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// TestTFTPServer fetches the iPXE binaries with pin/tftp's client over
// loopback: whole files, per-MAC names reported as fetched, anything
// else refused.
func TestTFTPServer(t *testing.T) {
	dir := t.TempDir()
	bios := make([]byte, 74213) // undionly.kpxe's size: many blocks and a short last one
	rand.Read(bios)
	os.WriteFile(filepath.Join(dir, IPXEBIOS), bios, 0o644)
	os.WriteFile(filepath.Join(dir, IPXEEFI), []byte("efi"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("no"), 0o644)

	var mu sync.Mutex
	var fetched []string
	conn := listenLoopback(t)
	srv := newTFTPServer(conn, dir, []string{IPXEBIOS, IPXEEFI, IPXESNP}, func(mac net.HardwareAddr) {
		mu.Lock()
		defer mu.Unlock()
		fetched = append(fetched, mac.String())
	}, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		srv.Close()
		srv.Close()
	}()

	c, err := tftp.NewClient(conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetBlockSize(1408)
	tests := []struct {
		name string
		want []byte // nil: refused
	}{
		{"undionly.kpxe", bios},
		{"/undionly.kpxe", bios},
		{"ipxe.efi", []byte("efi")},
		{"52-54-00-12-34-56/undionly.kpxe", bios},
		{"snponly.efi", nil}, // allowed but not installed
		{"secret", nil},
		{"../secret", nil},
		{"52-54-00-12-34-56/../secret", nil},
		{"not-a-mac/undionly.kpxe", nil},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, "/", "|"), func(t *testing.T) {
			var buf bytes.Buffer
			wt, err := c.Receive(tt.name, "octet")
			if err == nil {
				_, err = wt.WriteTo(&buf)
			}
			switch {
			case tt.want == nil && err == nil:
				t.Errorf("served %d bytes, want a refusal", buf.Len())
			case tt.want != nil && err != nil:
				t.Errorf("Receive: %v", err)
			case tt.want != nil && !bytes.Equal(buf.Bytes(), tt.want):
				t.Errorf("got %d bytes, not the file's %d", buf.Len(), len(tt.want))
			}
		})
	}
	// The server tells of a fetch once it has the last ACK, which can be
	// after the client has returned: wait for it a little.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(fetched)
		mu.Unlock()
		if n > 0 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(fetched) != 1 || fetched[0] != "52:54:00:12:34:56" {
		t.Errorf("fetched by MAC: %v, want just 52:54:00:12:34:56", fetched)
	}
}
