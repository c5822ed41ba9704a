package server

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestSummary(t *testing.T) {
	good := ClientInfo{ID: 1, MAC: "02:00:00:00:00:01", Addr: netip.MustParseAddr("10.0.0.1"), State: ClientDone, OK: true, Verified: true,
		Bytes: 4096, SHA256: [32]byte{0xab}, Elapsed: 1500 * time.Millisecond, BadChunk: -1}
	bad := ClientInfo{ID: 2, MAC: "02:00:00:00:00:02", Addr: netip.MustParseAddr("10.0.0.2"), State: ClientDropped,
		Error: "no feedback for 8s", BadChunk: -1}
	tests := []struct {
		name    string
		clients []ClientInfo
		ok      bool
		want    []string
	}{
		{"all good", []ClientInfo{good}, true, []string{"ok", "ab00", "RESULT: all clients verified"}},
		{"one dropped", []ClientInfo{good, bad}, false, []string{"dropped", "no feedback for 8s", "RESULT: 1 client(s) FAILED: 2 (10.0.0.2)"}},
		{"nobody", nil, false, []string{"RESULT: no client took part"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Summary{Session: "x", Image: "img", ImageBytes: 4096, Clients: tt.clients}
			if s.OK() != tt.ok {
				t.Errorf("OK() = %v, want %v", s.OK(), tt.ok)
			}
			var b bytes.Buffer
			s.WriteTable(&b)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("table lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}
