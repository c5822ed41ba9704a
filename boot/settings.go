package boot

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/shoal-lab/shoal/protocol"
)

// After is what the client does once the session is over.
type After string

// What to do after the session.
const (
	AfterReboot   After = "reboot"   // reboot into the new system (default)
	AfterPoweroff After = "poweroff" // power the machine off
	AfterShell    After = "shell"    // return to u-root's shell
)

// DiskAuto asks for an unattended choice of the target disk.
const DiskAuto = "auto"

// Settings is the client's boot configuration: the shoal.* keys of the
// kernel command line, merged over the settings file of a USB stick. The
// zero value of each field means the documented default.
type Settings struct {
	// Session is the session to join (shoal.session). Empty: ask at the
	// console.
	Session string
	// Disk is the target (shoal.disk): a device such as /dev/sda (or sda),
	// DiskAuto for an unattended choice, or empty to list the disks and ask.
	Disk string
	// Server is asked directly instead of by broadcast (shoal.server).
	Server netip.Addr
	// Iface is the network interface to use (shoal.iface); empty: the first
	// one with a link.
	Iface string
	// Static, if valid, is the address to use instead of DHCP (shoal.ip,
	// e.g. 10.0.0.5/24); Gateway is its default router (shoal.gateway).
	Static  netip.Prefix
	Gateway netip.Addr
	// After is what to do at the end (shoal.after; AfterReboot).
	After After
	// Verify is false only if shoal.verify=0 asks to skip the read-back.
	Verify bool
	// Zero says how all-zero chunks are handled (shoal.zero): "" or
	// "write" zeroes them on the disk, "skip" leaves them (a blank disk).
	Zero string
	// Buffer is the receive window in chunks (shoal.buffer; the client's
	// default).
	Buffer int
	// Debug turns on debug logging (shoal.debug).
	Debug bool
	// Key is the session key's text (shoal.key), the content of the
	// server's --key-file; nil for an unkeyed session.
	Key *protocol.Key
	// SettingsFile is the name of the settings file looked for on FAT
	// partitions (shoal.settings; DefaultSettingsFile); "off" disables it.
	SettingsFile string
}

// DefaultSettingsFile is the settings file's name on a USB stick.
const DefaultSettingsFile = "shoal.txt"

// DefaultSettings returns the settings used when nothing is configured.
func DefaultSettings() Settings {
	return Settings{After: AfterReboot, Verify: true, SettingsFile: DefaultSettingsFile}
}

// Pair is one key=value setting, with the key normalized: lower case,
// without the "shoal." prefix, '_' written as '-'.
type Pair struct {
	Key, Value string
}

// settingKeys lists every known key, for the warnings about unknown ones.
var settingKeys = map[string]string{
	"session":  "session name to join",
	"disk":     "target disk: /dev/sdX, auto, or empty to ask",
	"server":   "server IPv4 address to ask directly",
	"iface":    "network interface",
	"ip":       "static address with prefix instead of DHCP, e.g. 10.0.0.5/24",
	"gateway":  "default router with shoal.ip",
	"after":    "reboot, poweroff or shell",
	"verify":   "read the disk back and check it (1) or not (0)",
	"zero":     "all-zero chunks: write or skip",
	"buffer":   "receive window in chunks",
	"debug":    "log debug detail (1)",
	"settings": "settings file name on the USB stick, or off",
	"key":      "the session key's text (the content of the server's --key-file)",
}

// apply sets one key. It returns an error for a bad value or an unknown
// key; s is unchanged then.
func (s *Settings) apply(p Pair) error {
	v := p.Value
	switch p.Key {
	case "session":
		if len(v) > 255 {
			return fmt.Errorf("shoal.session: longer than 255 bytes")
		}
		s.Session = v
	case "disk":
		switch {
		case v == "" || strings.EqualFold(v, DiskAuto):
			s.Disk = strings.ToLower(v)
		case strings.HasPrefix(v, "/dev/"):
			s.Disk = v
		case !strings.ContainsAny(v, "/ ") && v != "." && v != "..":
			s.Disk = "/dev/" + v
		default:
			return fmt.Errorf("shoal.disk=%q: want a device such as /dev/sda, or auto", v)
		}
	case "server":
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return fmt.Errorf("shoal.server=%q: want an IPv4 address", v)
		}
		s.Server = a
	case "iface":
		if len(v) > 15 || strings.ContainsAny(v, "/ ") {
			return fmt.Errorf("shoal.iface=%q: not an interface name", v)
		}
		s.Iface = v
	case "ip":
		if v == "" || v == "dhcp" {
			s.Static = netip.Prefix{}
			return nil
		}
		pr, err := netip.ParsePrefix(v)
		if err != nil || !pr.Addr().Is4() || pr.Bits() < 1 || pr.Bits() > 31 {
			return fmt.Errorf("shoal.ip=%q: want an IPv4 address with prefix length, e.g. 10.0.0.5/24, or dhcp", v)
		}
		s.Static = pr
	case "gateway":
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return fmt.Errorf("shoal.gateway=%q: want an IPv4 address", v)
		}
		s.Gateway = a
	case "after":
		switch a := After(strings.ToLower(v)); a {
		case AfterReboot, AfterPoweroff, AfterShell:
			s.After = a
		case "halt", "off":
			s.After = AfterPoweroff
		default:
			return fmt.Errorf("shoal.after=%q: want reboot, poweroff or shell", v)
		}
	case "verify", "debug":
		b, err := parseBool(v)
		if err != nil {
			return fmt.Errorf("shoal.%s=%q: want 1 or 0", p.Key, v)
		}
		if p.Key == "verify" {
			s.Verify = b
		} else {
			s.Debug = b
		}
	case "key":
		k, err := protocol.ParseKey([]byte(v))
		if err != nil {
			return fmt.Errorf("shoal.key: %w", err)
		}
		s.Key = &k
	case "zero":
		switch z := strings.ToLower(v); z {
		case "write", "skip":
			s.Zero = z
		default:
			return fmt.Errorf("shoal.zero=%q: want write or skip", v)
		}
	case "buffer":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1<<16 {
			return fmt.Errorf("shoal.buffer=%q: want a chunk count from 1 to 65536", v)
		}
		s.Buffer = n
	case "settings":
		if strings.ContainsAny(v, "/\\") || v == "" || v == "." || v == ".." {
			return fmt.Errorf("shoal.settings=%q: want a file name or off", v)
		}
		s.SettingsFile = v
	default:
		return fmt.Errorf("unknown setting shoal.%s (known: %s)", p.Key, strings.Join(knownKeys(), ", "))
	}
	return nil
}

func knownKeys() []string {
	keys := make([]string, 0, len(settingKeys))
	for k := range settingKeys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "", "1", "y", "yes", "true", "on":
		return true, nil
	case "0", "n", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: %q", v)
}

// Apply sets the pairs in order (a later pair wins) and returns a warning
// for each pair it could not use.
func (s *Settings) Apply(pairs []Pair) (warnings []string) {
	for _, p := range pairs {
		if err := s.apply(p); err != nil {
			warnings = append(warnings, err.Error())
		}
	}
	return warnings
}

// CmdlinePairs returns the shoal.* parameters of a kernel command line, in
// order, with the kernel's quoting rules: parameters are separated by
// white space, and double quotes group white space into a value
// (shoal.session="lab 1") and are removed. Other parameters are ignored.
func CmdlinePairs(cmdline string) []Pair {
	var pairs []Pair
	for _, tok := range splitCmdline(cmdline) {
		key, value, _ := strings.Cut(tok, "=")
		if k, ok := settingKey(key, true); ok {
			pairs = append(pairs, Pair{Key: k, Value: value})
		}
	}
	return pairs
}

// splitCmdline splits a command line into parameters the way the kernel
// does, removing the double quotes.
func splitCmdline(s string) []string {
	var (
		out   []string
		cur   strings.Builder
		quote bool
		have  bool
	)
	for _, r := range s {
		switch {
		case r == '"':
			quote = !quote
			have = true
		case !quote && unicode.IsSpace(r):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// settingKey normalizes a key. With needPrefix, only "shoal."-prefixed keys
// are settings; otherwise the prefix is optional (the settings file).
func settingKey(key string, needPrefix bool) (string, bool) {
	k := strings.ToLower(strings.TrimSpace(key))
	if rest, ok := strings.CutPrefix(k, "shoal."); ok {
		k = rest
	} else if needPrefix {
		return "", false
	}
	k = strings.ReplaceAll(k, "_", "-")
	return k, k != ""
}

// maxSettingsFile bounds what is read of a settings file.
const maxSettingsFile = 64 << 10

// FilePairs reads a settings file: one "key = value" per line, keys with
// or without the "shoal." prefix, '#' or ';' starting a comment line,
// values optionally in double quotes. It accepts what editors on any system
// write: a UTF-8 byte-order mark, CRLF line ends. Lines it cannot read are
// returned as warnings.
func FilePairs(r io.Reader) (pairs []Pair, warnings []string, err error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxSettingsFile))
	sc.Buffer(make([]byte, 4096), maxSettingsFile)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		k, kok := settingKey(key, false)
		if !ok || !kok {
			warnings = append(warnings, fmt.Sprintf("settings line %d: %q is not key = value", n, line))
			continue
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		pairs = append(pairs, Pair{Key: k, Value: value})
	}
	if err := sc.Err(); err != nil {
		return pairs, warnings, fmt.Errorf("read settings: %w", err)
	}
	return pairs, warnings, nil
}

// ParseCmdline returns the settings of a kernel command line over the
// defaults, and a warning for each shoal.* parameter it could not use.
func ParseCmdline(cmdline string) (Settings, []string) {
	s := DefaultSettings()
	w := s.Apply(CmdlinePairs(cmdline))
	return s, w
}
