package client

import (
	"fmt"
	"time"

	"github.com/shoal-lab/shoal/imaging"
)

// Line formats the status as one line for a console (serial or VGA):
// phase, percent, bytes, rate, ETA, and repairs.
func (st Status) Line() string {
	switch st.Phase {
	case PhaseReceiving:
		pct, rate, eta := 0.0, "", ""
		if st.ImageBytes > 0 {
			pct = 100 * float64(st.BytesWritten) / float64(st.ImageBytes)
		}
		if s := st.Elapsed.Seconds(); s > 0 && st.BytesWritten > 0 {
			bps := float64(st.BytesWritten) / s
			rate = fmt.Sprintf("%.1f MB/s", bps/1e6)
			left := time.Duration(float64(st.ImageBytes-st.BytesWritten) / bps * float64(time.Second))
			eta = "ETA " + left.Round(time.Second).String()
		}
		return fmt.Sprintf("[%s] receiving %5.1f%%  %s of %s  %s  %s  lost+repaired %d", st.Session, pct,
			imaging.HumanBytes(st.BytesWritten), imaging.HumanBytes(st.ImageBytes), rate, eta, st.Lost)
	case PhaseVerifying:
		pct := 0.0
		if st.ImageBytes > 0 {
			pct = 100 * float64(st.BytesRead) / float64(st.ImageBytes)
		}
		return fmt.Sprintf("[%s] verifying %5.1f%%: read back %s of %s", st.Session, pct, imaging.HumanBytes(st.BytesRead), imaging.HumanBytes(st.ImageBytes))
	}
	if st.Message != "" {
		return fmt.Sprintf("[%s] %s: %s", st.Session, st.Phase, st.Message)
	}
	return fmt.Sprintf("[%s] %s", st.Session, st.Phase)
}
