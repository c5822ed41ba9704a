// Package cli holds the small pieces shoal's commands share: parsing rates
// and times from flags, and telling whether output goes to a terminal.
package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ParseRate parses a rate in bits per second: "0" (no cap), "250M",
// "1.5G", "800Mbit", "100k".
func ParseRate(s string) (int64, error) {
	v := strings.TrimSpace(strings.ToLower(s))
	v = strings.TrimSuffix(v, "bps")
	v = strings.TrimSuffix(v, "bit")
	v = strings.TrimSuffix(v, "b")
	mult := 1.0
	switch {
	case strings.HasSuffix(v, "k"):
		mult, v = 1e3, strings.TrimSuffix(v, "k")
	case strings.HasSuffix(v, "m"):
		mult, v = 1e6, strings.TrimSuffix(v, "m")
	case strings.HasSuffix(v, "g"):
		mult, v = 1e9, strings.TrimSuffix(v, "g")
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("rate %q: want bits per second like 500M or 1G", s)
	}
	return int64(f * mult), nil
}

// FormatRate formats bits per second for people.
func FormatRate(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", bps/1e6)
	default:
		return fmt.Sprintf("%.0f kbit/s", bps/1e3)
	}
}

// NextClock returns the next time after now whose clock reads hh:mm or
// hh:mm:ss (local time).
func NextClock(clock string, now time.Time) (time.Time, error) {
	t, err := time.ParseInLocation("15:04", clock, now.Location())
	if err != nil {
		t, err = time.ParseInLocation("15:04:05", clock, now.Location())
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("start time %q: want HH:MM or HH:MM:SS (24-hour clock)", clock)
	}
	at := time.Date(now.Year(), now.Month(), now.Day(), t.Hour(), t.Minute(), t.Second(), 0, now.Location())
	if !at.After(now) {
		at = at.AddDate(0, 0, 1)
	}
	return at, nil
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
