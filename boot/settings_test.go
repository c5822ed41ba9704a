package boot

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/shoal-lab/shoal/protocol"
)

func TestParseCmdline(t *testing.T) {
	def := DefaultSettings()
	with := func(f func(*Settings)) Settings {
		s := DefaultSettings()
		f(&s)
		return s
	}
	tests := []struct {
		name     string
		cmdline  string
		want     Settings
		warnings []string // substrings, in order
	}{
		{name: "empty", cmdline: "", want: def},
		{name: "no shoal keys", cmdline: "console=ttyS0 quiet root=/dev/sda1", want: def},
		{
			name:    "typical",
			cmdline: "console=ttyS0 shoal.session=lab1 shoal.disk=/dev/vda shoal.after=poweroff shoal.server=10.0.0.1\n",
			want: with(func(s *Settings) {
				s.Session, s.Disk, s.After, s.Server = "lab1", "/dev/vda", AfterPoweroff, netip.MustParseAddr("10.0.0.1")
			}),
		},
		{
			name:    "quoted value with spaces",
			cmdline: `shoal.session="lab 1 room" quiet`,
			want:    with(func(s *Settings) { s.Session = "lab 1 room" }),
		},
		{
			name:    "whole parameter quoted",
			cmdline: `"shoal.session=a b"`,
			want:    with(func(s *Settings) { s.Session = "a b" }),
		},
		{
			name:    "bare device name and auto",
			cmdline: "shoal.disk=nvme0n1",
			want:    with(func(s *Settings) { s.Disk = "/dev/nvme0n1" }),
		},
		{
			name:    "auto in capitals",
			cmdline: "shoal.disk=AUTO",
			want:    with(func(s *Settings) { s.Disk = DiskAuto }),
		},
		{
			name:    "later wins, key case and underscores",
			cmdline: "shoal.session=a SHOAL.Session=b shoal.after=halt",
			want:    with(func(s *Settings) { s.Session, s.After = "b", AfterPoweroff }),
		},
		{
			name:    "booleans and numbers",
			cmdline: "shoal.verify=0 shoal.debug shoal.zero=skip shoal.buffer=128 shoal.iface=eth1",
			want: with(func(s *Settings) {
				s.Verify, s.Debug, s.Zero, s.Buffer, s.Iface = false, true, "skip", 128, "eth1"
			}),
		},
		{
			name:    "session key",
			cmdline: "shoal.key=0123456789abcdef0123456789abcdef shoal.session=secure",
			want: with(func(s *Settings) {
				k, _ := protocol.ParseKey([]byte("0123456789abcdef0123456789abcdef"))
				s.Key, s.Session = &k, "secure"
			}),
		},
		{
			name:     "short key refused",
			cmdline:  "shoal.key=short",
			want:     def,
			warnings: []string{"shoal.key"},
		},
		{
			name:    "static address",
			cmdline: "shoal.ip=10.1.2.3/24 shoal.gateway=10.1.2.254",
			want: with(func(s *Settings) {
				s.Static, s.Gateway = netip.MustParsePrefix("10.1.2.3/24"), netip.MustParseAddr("10.1.2.254")
			}),
		},
		{
			name:     "unknown key warned",
			cmdline:  "shoal.sesion=typo shoal.session=ok",
			want:     with(func(s *Settings) { s.Session = "ok" }),
			warnings: []string{"unknown setting shoal.sesion"},
		},
		{
			name:     "bad values keep defaults",
			cmdline:  "shoal.after=explode shoal.server=host.example shoal.buffer=-1 shoal.disk=../x shoal.ip=1.2.3.4",
			want:     def,
			warnings: []string{"shoal.after", "shoal.server", "shoal.buffer", "shoal.disk", "shoal.ip"},
		},
		{
			name:    "unbalanced quote takes the rest",
			cmdline: `shoal.session="open quote shoal.disk=/dev/sda`,
			want:    with(func(s *Settings) { s.Session = "open quote shoal.disk=/dev/sda" }),
		},
		{
			name:    "not a shoal key that looks close",
			cmdline: "shoalx.session=a shoal=b",
			want:    def,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := ParseCmdline(tt.cmdline)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCmdline(%q) =\n  %+v\nwant\n  %+v", tt.cmdline, got, tt.want)
			}
			if len(warnings) != len(tt.warnings) {
				t.Fatalf("warnings = %q, want %d matching %q", warnings, len(tt.warnings), tt.warnings)
			}
			for i, w := range tt.warnings {
				if !strings.Contains(warnings[i], w) {
					t.Errorf("warning %d = %q, want it to contain %q", i, warnings[i], w)
				}
			}
		})
	}
}

func TestFilePairs(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		want     []Pair
		warnings int
	}{
		{name: "empty", file: ""},
		{
			name: "windows notepad with BOM and CRLF",
			file: "\ufeff# shoal settings\r\nsession = lab1\r\nshoal.disk=auto\r\n\r\nafter = \"poweroff\"\r\n",
			want: []Pair{{"session", "lab1"}, {"disk", "auto"}, {"after", "poweroff"}},
		},
		{
			name:     "junk line warned",
			file:     "session=a\nthis is not a setting\n; comment\n[section]\nBUFFER = 8\n",
			want:     []Pair{{"session", "a"}, {"buffer", "8"}},
			warnings: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings, err := FilePairs(strings.NewReader(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("pairs = %q, want %q", got, tt.want)
			}
			if len(warnings) != tt.warnings {
				t.Errorf("warnings = %q, want %d", warnings, tt.warnings)
			}
		})
	}
}

// TestCmdlineOverridesFile checks the precedence: the settings file first,
// the kernel command line over it.
func TestCmdlineOverridesFile(t *testing.T) {
	file, _, err := FilePairs(strings.NewReader("session=fromfile\ndisk=auto\nafter=shell\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := DefaultSettings()
	s.Apply(file)
	s.Apply(CmdlinePairs("shoal.session=fromcmdline"))
	if s.Session != "fromcmdline" || s.Disk != DiskAuto || s.After != AfterShell {
		t.Errorf("merged settings = %+v", s)
	}
}

func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"", "shoal.session=a", `shoal.session="a b" shoal.disk=auto`, `"`, `shoal.="`, "shoal.ip=1.2.3.4/33",
		"shoal.buffer=99999999999999999999", "shoal.disk=/dev/\x00", "\xff\xfe shoal.after=\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		s, _ := ParseCmdline(cmdline)
		switch s.After {
		case AfterReboot, AfterPoweroff, AfterShell:
		default:
			t.Fatalf("After = %q", s.After)
		}
		if s.Disk != "" && s.Disk != DiskAuto && !strings.HasPrefix(s.Disk, "/dev/") {
			t.Fatalf("Disk = %q", s.Disk)
		}
		if s.Server.IsValid() && !s.Server.Is4() {
			t.Fatalf("Server = %v", s.Server)
		}
		// The file parser takes the same text without panicking.
		if _, _, err := FilePairs(strings.NewReader(cmdline)); err != nil && len(cmdline) < maxSettingsFile {
			t.Fatalf("FilePairs: %v", err)
		}
	})
}
