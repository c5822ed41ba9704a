package lab

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseNSName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want owner
		ok   bool
	}{
		{"switch", "shl1234-2n9c-7-sw", owner{pid: 1234, start: 123456}, true},
		{"host with dash", "shl99-0-1-big-host", owner{pid: 99, start: 0}, true},
		{"round trip", nsName(owner{pid: 4194304, start: 1<<40 + 5}, 18, "a"), owner{pid: 4194304, start: 1<<40 + 5}, true},
		{"other prefix", "docker-1234-0-1-sw", owner{}, false},
		{"no start", "shl1234-7-sw", owner{}, false},
		{"pid not a number", "shlabc-0-1-sw", owner{}, false},
		{"pid with sign", "shl+12-0-1-sw", owner{}, false},
		{"pid zero", "shl0-0-1-sw", owner{}, false},
		{"bad start", "shl12-!!-1-sw", owner{}, false},
		{"bad seq", "shl12-0-x-sw", owner{}, false},
		{"empty role", "shl12-0-1-", owner{}, false},
		{"bare prefix", "shl", owner{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseNSName(tt.in)
			if ok != tt.ok || got != tt.want {
				t.Errorf("parseNSName(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestSelfOwnerAlive(t *testing.T) {
	o, err := selfOwner()
	if err != nil {
		t.Fatal(err)
	}
	if !o.alive() {
		t.Errorf("own owner %v is not alive", o)
	}
	if other := (owner{pid: o.pid, start: o.start + 1}); other.alive() {
		t.Errorf("owner %v with a wrong start time is alive", other)
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"server-1", true},
		{"client_10", true},
		{"abcdefghijkl", true},
		{"abcdefghijklm", false},
		{"", false},
		{"-a", false},
		{"a b", false},
		{"a/b", false},
		{"é", false},
	}
	for _, tt := range tests {
		if err := checkName(tt.name); (err == nil) != tt.ok {
			t.Errorf("checkName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestIfname(t *testing.T) {
	tests := []struct {
		kind string
		seq  int
		name string
		want string
	}{
		{"shv", 1, "a", "shv1-a"},
		{"sht", 12, "abcdefghijkl", "sht12-abcdefghi"},
		{"shv", 123456, "abcdefghijkl", "shv123456-abcde"},
	}
	for _, tt := range tests {
		got := ifname(tt.kind, tt.seq, tt.name)
		if got != tt.want || len(got) > maxIfname {
			t.Errorf("ifname(%q, %d, %q) = %q, want %q", tt.kind, tt.seq, tt.name, got, tt.want)
		}
	}
}

func TestNthAddr(t *testing.T) {
	tests := []struct {
		prefix string
		n      int
		want   string // "" means none
	}{
		{"10.77.0.0/24", 1, "10.77.0.1"},
		{"10.77.0.0/24", 254, "10.77.0.254"},
		{"10.77.0.0/24", 255, ""},
		{"10.77.0.0/24", 0, ""},
		{"10.77.0.0/16", 256, "10.77.1.0"},
		{"10.77.0.0/30", 2, "10.77.0.2"},
		{"10.77.0.0/30", 3, ""},
	}
	for _, tt := range tests {
		got, ok := nthAddr(netip.MustParsePrefix(tt.prefix), tt.n)
		if (tt.want == "") == ok || (ok && got.String() != tt.want) {
			t.Errorf("nthAddr(%s, %d) = %v, %v; want %q", tt.prefix, tt.n, got, ok, tt.want)
		}
	}
}

func TestFilterScript(t *testing.T) {
	tests := []struct {
		name   string
		loss   int
		blocks []netip.Prefix
		want   []string // lines that must appear
		table  bool     // whether a table is (re)created
	}{
		{"nothing", 0, nil, nil, false},
		{"loss", 30, nil, []string{"meta l4proto udp numgen random mod 100 < 30 drop"}, true},
		{"all lost", 100, nil, []string{"\t\tmeta l4proto udp drop\n"}, true},
		{"blocks and loss", 5, []netip.Prefix{netip.MustParsePrefix("239.1.2.3/32"), netip.MustParsePrefix("ff15::/16")},
			[]string{"meta l4proto udp ip daddr 239.1.2.3/32 drop", "meta l4proto udp ip6 daddr ff15::/16 drop", "< 5 drop"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := filterScript(tt.loss, tt.blocks)
			if !strings.HasPrefix(s, "add table inet shoal_lab\ndelete table inet shoal_lab\n") {
				t.Errorf("script does not start by deleting the table:\n%s", s)
			}
			if got := strings.Contains(s, "hook input"); got != tt.table {
				t.Errorf("script makes a table: %v, want %v:\n%s", got, tt.table, s)
			}
			for _, w := range tt.want {
				if !strings.Contains(s, w) {
					t.Errorf("script lacks %q:\n%s", w, s)
				}
			}
		})
	}
}

func TestTBFParams(t *testing.T) {
	tests := []struct {
		bps                  int64
		rate, burst, latency string
	}{
		{1_000_000, "1000000bit", "32768", "100ms"},
		{20_000_000, "20000000bit", "80000", "100ms"},
		{1_000_000_000, "1000000000bit", "4000000", "100ms"},
	}
	for _, tt := range tests {
		rate, burst, latency := tbfParams(tt.bps)
		if rate != tt.rate || burst != tt.burst || latency != tt.latency {
			t.Errorf("tbfParams(%d) = %s %s %s, want %s %s %s", tt.bps, rate, burst, latency, tt.rate, tt.burst, tt.latency)
		}
	}
}
