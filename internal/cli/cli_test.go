package cli

import (
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"0", 0, false},
		{"250M", 250e6, false},
		{"1.5G", 1.5e9, false},
		{"800Mbit", 800e6, false},
		{"100k", 100e3, false},
		{"12345", 12345, false},
		{"fast", 0, true},
		{"-5M", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if (err != nil) != tt.bad || got != tt.want {
				t.Fatalf("ParseRate(%q) = %d, %v; want %d, bad=%v", tt.in, got, err, tt.want, tt.bad)
			}
		})
	}
}

func TestNextClock(t *testing.T) {
	now := time.Date(2026, 11, 25, 14, 30, 0, 0, time.Local)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"15:00", time.Date(2026, 11, 25, 15, 0, 0, 0, time.Local)},
		{"14:30", time.Date(2026, 11, 26, 14, 30, 0, 0, time.Local)},
		{"08:05", time.Date(2026, 11, 26, 8, 5, 0, 0, time.Local)},
		{"14:30:07", time.Date(2026, 11, 25, 14, 30, 7, 0, time.Local)},
	}
	for _, tt := range tests {
		got, err := NextClock(tt.in, now)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("NextClock(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := NextClock("25:99", now); err == nil {
		t.Error("NextClock accepted 25:99")
	}
}
