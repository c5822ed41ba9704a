package client

import (
	"strings"
	"testing"
	"time"
)

func TestStatusLine(t *testing.T) {
	tests := []struct {
		st   Status
		want []string
	}{
		{Status{Phase: PhaseReceiving, Session: "lab", ImageBytes: 100e6, BytesWritten: 25e6, Elapsed: 5 * time.Second, Lost: 3},
			[]string{"[lab] receiving  25.0%", "5.0 MB/s", "ETA 15s", "lost+repaired 3"}},
		{Status{Phase: PhaseVerifying, Session: "lab", ImageBytes: 100e6, BytesRead: 50e6}, []string{"verifying  50.0%"}},
		{Status{Phase: PhaseDiscovering, Session: "lab", Message: "no server answers"}, []string{"[lab] discovering: no server answers"}},
	}
	for _, tt := range tests {
		got := tt.st.Line()
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("%+v.Line() = %q, lacks %q", tt.st, got, w)
			}
		}
	}
}
